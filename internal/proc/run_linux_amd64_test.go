package proc

import (
	"errors"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// TestRunStacks: Run executes a whole stop (stop, read every stack,
// resume) on the tracer thread with nested method calls; Stacks and
// StopStacks agree with StackWords; the PROCMAP_QUERY path and the maps
// fallback find the same stack ends, also for a zombie main thread.
func TestRunStacks(t *testing.T) {
	bin := buildTarget(t)
	for _, mode := range []string{"", "mainexit"} {
		t.Run("mode="+mode, func(t *testing.T) {
			args := []string{"3"}
			if mode != "" {
				args = append(args, mode)
			}
			tg := startTarget(t, bin, args...)
			if mode == "mainexit" {
				waitState(t, tg.pid, 'Z', 1) // the main thread is a zombie
			}
			p := attach(t, tg.pid)
			if err := p.Resume(); err != nil {
				t.Fatal(err)
			}
			if _, err := p.Stacks(8); !errors.Is(err, ErrRunning) {
				t.Fatalf("Stacks while running: %v, want ErrRunning", err)
			}
			var stacks []ThreadStack
			var query, fallback []uint64
			err := p.Run(func() error {
				var err error
				if stacks, err = p.StopStacks(1 << 18); err != nil {
					return err
				}
				if !p.Stopped() {
					return errors.New("not stopped after StopStacks")
				}
				for _, st := range stacks {
					// Nested requests run inline: this would deadlock
					// if they went through the request channel.
					w, err := p.StackWords(st.Tid, 1<<18)
					if err != nil {
						return err
					}
					if !slices.Equal(w, st.Words) {
						t.Errorf("thread %d: Stacks and StackWords differ (%d vs %d words)", st.Tid, len(st.Words), len(w))
					}
					regs, err := p.Regs(st.Tid)
					if err != nil {
						return err
					}
					if regs.Rip != st.Rip {
						t.Errorf("thread %d: rip %#x, Regs says %#x", st.Tid, st.Rip, regs.Rip)
					}
					end, err := p.mappingEnd(regs.Rsp)
					if err != nil {
						return err
					}
					query = append(query, end)
				}
				saved := p.noQuery
				p.noQuery = true
				for _, st := range stacks {
					regs, err := p.Regs(st.Tid)
					if err != nil {
						return err
					}
					end, err := p.mappingEnd(regs.Rsp)
					if err != nil {
						return err
					}
					fallback = append(fallback, end)
				}
				p.noQuery = saved
				if end, err := p.mappingEnd(0x1000); err != nil || end != 0 {
					t.Errorf("unmapped address: end %#x, %v", end, err)
				}
				return p.Resume()
			})
			if err != nil {
				t.Fatal(err)
			}
			if want := len(p.Threads()); len(stacks) != want || want < 3 {
				t.Fatalf("%d stacks for %d threads", len(stacks), want)
			}
			for i, st := range stacks {
				if len(st.Words) == 0 || query[i] == 0 || query[i] != fallback[i] {
					t.Errorf("thread %d: %d words, stack end %#x by query, %#x by maps", st.Tid, len(st.Words), query[i], fallback[i])
				}
			}
			if err := p.Run(func() error { return p.Stop() }); err != nil {
				t.Fatal(err)
			}
			if !p.Stopped() {
				t.Fatal("Run(Stop) left the process running")
			}
			if _, err := p.Syscall(unix.SYS_GETPID); err != nil {
				t.Fatalf("after Run: %v", err)
			}
			mustDetach(t, p)
			if err := p.Run(func() error { return nil }); !errors.Is(err, ErrDetached) {
				t.Fatalf("Run after Detach: %v, want ErrDetached", err)
			}
			if got := tg.ask("ping"); got != "pong" {
				t.Fatalf("target answers %q", got)
			}
		})
	}
}
