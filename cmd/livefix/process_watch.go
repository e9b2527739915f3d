package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/livefix/livefix/internal/cli"
	"github.com/livefix/livefix/ulp"
)

const watchSynopsis = "watch [--scan D] [--include-init] [--timeout D] [--json] PATCH.lfp..."

// watchEvent is one line of `watch --json`.
type watchEvent struct {
	// Watching is set once, when the first scan is done and exec events
	// are being received: the number of patches watched.
	Watching int    `json:"watching,omitempty"`
	Pid      int    `json:"pid,omitempty"`
	Patch    string `json:"patch,omitempty"`
	// PauseMS is the longest stop of the process.
	PauseMS float64 `json:"pause_ms,omitempty"`
	// SinceExecMS is the time from the kernel's exec event (its own
	// timestamp, from the process-event connector) to the commit of the
	// patch: the jumps written. 0 if a scan found the process first.
	SinceExecMS float64 `json:"since_exec_ms,omitempty"`
	// CommitMono is when the jumps were written, CLOCK_MONOTONIC ns.
	CommitMono int64  `json:"commit_mono_ns,omitempty"`
	Error      string `json:"error,omitempty"`
}

// processWatch applies the given patches to every process that maps
// their targets, now and whenever one starts (exec) or maps a target
// later (dlopen), until interrupted.
func processWatch(args []string, stdout, stderr io.Writer) int {
	fs, stateDir := processFlagSet("watch", watchSynopsis, stderr)
	scan := fs.Duration("scan", 100*time.Millisecond, "period of the scan for targets mapped late (dlopen) or missed events")
	timeout := fs.Duration("timeout", 5*time.Second, "how long each apply waits for the process to leave the code being replaced")
	includeInit := fs.Bool("include-init", false, "patch pid 1 too")
	asJSON := fs.Bool("json", false, "print one JSON object per event")
	pos, err := cli.Parse(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		return exitBadInput
	}
	if len(pos) == 0 {
		fmt.Fprintln(stderr, "livefix process watch: give at least one PATCH.lfp (see --help)")
		return exitBadInput
	}
	var patches []*ulp.Patch
	for _, f := range pos {
		p, err := ulp.ReadFile(f)
		if err != nil {
			fmt.Fprintf(stderr, "livefix process watch: %v\n", err)
			return exitBadInput
		}
		patches = append(patches, p)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var mu sync.Mutex
	wo := ulp.WatchOptions{
		Options: ulp.Options{StateDir: *stateDir, Timeout: *timeout, IncludeInit: *includeInit,
			Notify: func(pid int, note string) {
				mu.Lock()
				defer mu.Unlock()
				fmt.Fprintf(stderr, "livefix process watch: pid %d: %s\n", pid, note)
			}},
		Scan: *scan,
		Report: func(pid int, p *ulp.Patch, r *ulp.Result, err error, since time.Duration) {
			mu.Lock()
			defer mu.Unlock()
			if *asJSON {
				ev := watchEvent{Pid: pid, Patch: p.Name, SinceExecMS: float64(since) / float64(time.Millisecond)}
				if r != nil {
					ev.PauseMS, ev.CommitMono = float64(r.Pause)/float64(time.Millisecond), r.CommitMono
				}
				if err != nil {
					ev.Error = err.Error()
				}
				json.NewEncoder(stdout).Encode(ev)
				return
			}
			if err != nil {
				fmt.Fprintf(stderr, "livefix process watch: pid %d: %s: %v\n", pid, p.Name, err)
				return
			}
			fmt.Fprintf(stdout, "pid %d: patched with %s, longest stop %.3f ms", pid, r.Patch, float64(r.Pause)/float64(time.Millisecond))
			if since > 0 {
				fmt.Fprintf(stdout, ", %.1f ms after its exec", float64(since)/float64(time.Millisecond))
			}
			fmt.Fprintln(stdout)
		},
		Ready: func() {
			mu.Lock()
			defer mu.Unlock()
			if *asJSON {
				json.NewEncoder(stdout).Encode(watchEvent{Watching: len(patches)})
				return
			}
			fmt.Fprintf(stdout, "watching for processes mapping the targets of %d patch(es)\n", len(patches))
		},
	}
	if err := ulp.Watch(ctx, patches, wo); err != nil {
		fmt.Fprintf(stderr, "livefix process watch: %v\n", err)
		return exitFailure
	}
	return exitOK
}
