package proc

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// Nudge lets only the threads tids of the stopped process run for about
// d, then stops them again, while every other thread stays stopped (the
// pause goes on). Live patching uses it to let a thread leave a function
// that is about to be replaced without restarting the whole process.
// Threads created meanwhile are seized and stopped too. On failure the
// process is detached.
func (p *Process) Nudge(tids []int, d time.Duration) error {
	return p.do(func() error {
		if p.running {
			return fmt.Errorf("nudge pid %d: %w", p.pid, ErrRunning)
		}
		var ran []*thread
		for _, tid := range tids {
			t := p.threads[tid]
			if t == nil || !t.stopped {
				continue
			}
			if err := p.restart(t, false); err != nil {
				p.release()
				return fmt.Errorf("nudge: %w", err)
			}
			ran = append(ran, t)
		}
		p.mapsCache = nil
		if d > 0 {
			ts := unix.NsecToTimespec(d.Nanoseconds())
			unix.Nanosleep(&ts, nil)
		}
		for _, t := range ran {
			if err := ptrace(unix.PTRACE_INTERRUPT, t.tid, 0, 0); err != nil {
				delete(p.threads, t.tid) // exited meanwhile
			}
		}
		if err := p.settle(); err != nil {
			p.release()
			return fmt.Errorf("nudge: %w", err)
		}
		return nil
	})
}
