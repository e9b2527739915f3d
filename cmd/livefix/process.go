package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/livefix/livefix/internal/cli"
	"github.com/livefix/livefix/internal/proc"
	"github.com/livefix/livefix/ulp"
)

const processUsage = `usage: livefix process COMMAND [ARGS]

commands:
  patch (--pid PID | --all [--include-init]) PATCH.lfp [--timeout D] [--json]
        apply a userspace live patch to one process, or to every process
        that maps the patch's target (matched by GNU build-id); a patch of
        a higher level for the same target replaces the applied one.
        --all is idempotent (a process that already has the patch counts
        as done) and leaves pid 1 alone unless --include-init
  unpatch (--pid PID | --all) [NAME] [--timeout D] [--json]
        remove the patch NAME (without NAME: every livefix patch) from one
        process or from every patched process
  list [--json]
        patched processes and their patches; every command first checks
        the records against the processes' memory and repairs what an
        interrupted livefix left (reported as notes)
  watch [--scan D] [--include-init] [--timeout D] [--json] PATCH.lfp...
        apply the patches to every process that maps their targets, now
        and whenever one starts (exec) or maps a target later (dlopen),
        until interrupted

options common to all commands:
  --state-dir DIR   where applied patches are recorded (default
                    $LIVEFIX_STATE_DIR, else /run/livefix)
`

func runProcess(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, processUsage)
		return exitBadInput
	}
	switch sub, rest := args[0], args[1:]; sub {
	case "patch", "unpatch":
		// The command runs at the priority it was started with: what it
		// does outside the stops takes no more CPU from the target than
		// any other process would. Inside the stops the tracer thread
		// runs under SCHED_FIFO (internal/proc).
		shortCommand()
		return processChange(sub, rest, stdout, stderr)
	case "list":
		return processList(rest, stdout, stderr)
	case "watch":
		return processWatch(rest, stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, processUsage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "livefix process: unknown command %q\n\n%s", sub, processUsage)
		return exitBadInput
	}
}

func processFlagSet(name, synopsis string, stderr io.Writer) (*flag.FlagSet, *string) {
	fs := cli.NewFlagSet("process "+name, "usage: livefix process "+synopsis, stderr)
	def := os.Getenv("LIVEFIX_STATE_DIR")
	if def == "" {
		def = ulp.DefaultStateDir
	}
	return fs, fs.String("state-dir", def, "directory recording applied patches")
}

// processResult is one line of output per process.
type processResult struct {
	Pid      int     `json:"pid"`
	Patch    string  `json:"patch,omitempty"`
	Replaced string  `json:"replaced,omitempty"`
	PauseMS  float64 `json:"pause_ms,omitempty"`   // the longest single stop
	TotalMS  float64 `json:"stopped_ms,omitempty"` // all stops added up
	Stops    int     `json:"stops,omitempty"`
	// OneMS: one thread alone stopped, the others running (mapping the
	// new code before the commit, unmapping old code after it).
	OneMS    float64 `json:"one_thread_ms,omitempty"`
	Attempts int     `json:"attempts,omitempty"`
	Error    string  `json:"error,omitempty"`
	// Skipped says why --all left a process as it was without failing
	// (it already has the patch; it is init).
	Skipped string `json:"skipped,omitempty"`
}

func processChange(sub string, args []string, stdout, stderr io.Writer) int {
	synopsis := "patch (--pid PID | --all) PATCH.lfp [--timeout D] [--json]"
	if sub == "unpatch" {
		synopsis = "unpatch (--pid PID | --all) [NAME] [--timeout D] [--json]"
	}
	fs, stateDir := processFlagSet(sub, synopsis, stderr)
	pid := fs.Int("pid", 0, "the process to change")
	all := fs.Bool("all", false, "every process that maps the target (patch) or has a livefix patch (unpatch)")
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for the process to leave the code being replaced")
	asJSON := fs.Bool("json", false, "print one JSON object per process")
	includeInit := fs.Bool("include-init", false, "with --all, patch pid 1 too")
	pos, err := cli.Parse(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		return exitBadInput
	}
	if (*pid != 0) == *all {
		fmt.Fprintf(stderr, "livefix process %s: give exactly one of --pid PID and --all\n", sub)
		return exitBadInput
	}
	if *pid < 0 {
		fmt.Fprintf(stderr, "livefix process %s: bad pid %d\n", sub, *pid)
		return exitBadInput
	}
	if *pid != 0 {
		// Keep off the CPUs the target's threads are running on, so
		// that this command (its tracer thread real-time) never
		// preempts them.
		ulp.AvoidCPUsOf(*pid)
	}
	opts := ulp.Options{StateDir: *stateDir, Timeout: *timeout, IncludeInit: *includeInit,
		Notify: func(pid int, note string) { fmt.Fprintf(stderr, "livefix process %s: pid %d: %s\n", sub, pid, note) }}
	var results []processResult
	var failures int
	var firstErr error
	record := func(r *ulp.Result, pid int, err error) {
		pr := processResult{Pid: pid}
		if r != nil {
			pr.Patch, pr.Replaced, pr.Attempts = r.Patch, r.Replaced, r.Attempts
			pr.PauseMS = float64(r.Pause) / float64(time.Millisecond)
			pr.TotalMS = float64(r.Stopped) / float64(time.Millisecond)
			pr.Stops = r.Stops
			pr.OneMS = float64(r.OneThread) / float64(time.Millisecond)
		}
		if err != nil {
			pr.Error = err.Error()
			failures++
			if firstErr == nil {
				firstErr = err
			}
		}
		results = append(results, pr)
	}
	switch sub {
	case "patch":
		if len(pos) != 1 {
			fmt.Fprintln(stderr, "livefix process patch: need exactly one PATCH.lfp (see --help)")
			return exitBadInput
		}
		p, err := ulp.ReadFile(pos[0])
		if err != nil {
			fmt.Fprintf(stderr, "livefix process patch: %v\n", err)
			return exitBadInput
		}
		if *all {
			pids, res, errs, err := ulp.ApplyAll(p, opts)
			if err != nil {
				fmt.Fprintf(stderr, "livefix process patch: %v\n", err)
				return exitFailure
			}
			if len(pids) == 0 {
				fmt.Fprintf(stderr, "livefix process patch: no process maps %s (build-id %s)\n", p.Target.Path, p.Target.BuildID)
				return exitFailure
			}
			for i := range pids {
				if errors.Is(errs[i], ulp.ErrAlreadyApplied) || errors.Is(errs[i], ulp.ErrInit) {
					why := "already has " + p.Name
					if errors.Is(errs[i], ulp.ErrInit) {
						why = "init (use --include-init)"
					}
					results = append(results, processResult{Pid: pids[i], Patch: p.Name, Skipped: why})
					continue
				}
				record(res[i], pids[i], errs[i])
			}
		} else {
			r, err := ulp.Apply(*pid, p, opts)
			record(r, *pid, err)
		}
	case "unpatch":
		if len(pos) > 1 {
			fmt.Fprintln(stderr, "livefix process unpatch: at most one NAME (see --help)")
			return exitBadInput
		}
		name := ""
		if len(pos) == 1 {
			name = pos[0]
		}
		if *all {
			res, errs, err := ulp.UnpatchAll(name, opts)
			if err != nil {
				fmt.Fprintf(stderr, "livefix process unpatch: %v\n", err)
				return exitFailure
			}
			for _, r := range res {
				record(r, r.Pid, nil)
			}
			for _, e := range errs {
				record(nil, 0, e)
			}
		} else {
			res, err := ulp.Unpatch(*pid, name, opts)
			for _, r := range res {
				record(r, *pid, nil)
			}
			if err != nil {
				record(nil, *pid, err)
			}
		}
	}
	printResults(stdout, stderr, sub, results, *asJSON)
	switch {
	case failures == 0:
		return exitOK
	case len(results) == 1 && (errors.Is(firstErr, proc.ErrNoProcess) || errors.Is(firstErr, proc.ErrNotMapped) || errors.Is(firstErr, ulp.ErrNotApplied)):
		return exitBadInput
	case len(results) == 1 && (errors.Is(firstErr, ulp.ErrBusy) || errors.Is(firstErr, ulp.ErrLevel) || errors.Is(firstErr, ulp.ErrAlreadyApplied)):
		return exitRefused
	}
	return exitFailure
}

func printResults(stdout, stderr io.Writer, sub string, results []processResult, asJSON bool) {
	if asJSON {
		enc := json.NewEncoder(stdout)
		for _, r := range results {
			enc.Encode(r)
		}
		return
	}
	verb := map[string]string{"patch": "patched with", "unpatch": "removed"}[sub]
	for _, r := range results {
		if r.Error != "" {
			fmt.Fprintf(stderr, "livefix process %s: %s\n", sub, r.Error)
			continue
		}
		if r.Skipped != "" {
			fmt.Fprintf(stdout, "pid %d: left as it is: %s\n", r.Pid, r.Skipped)
			continue
		}
		extra := ""
		if r.Replaced != "" {
			extra = " (replacing " + r.Replaced + ")"
		}
		fmt.Fprintf(stdout, "pid %d: %s %s%s, longest stop %.3f ms", r.Pid, verb, r.Patch, extra, r.PauseMS)
		if r.Stops > 1 {
			fmt.Fprintf(stdout, " (%d stops, %.3f ms in all)", r.Stops, r.TotalMS)
		}
		if r.Attempts > 1 {
			fmt.Fprintf(stdout, " (%d attempts)", r.Attempts)
		}
		if r.OneMS > 0 {
			fmt.Fprintf(stdout, "; one thread alone %.3f ms", r.OneMS)
		}
		fmt.Fprintln(stdout)
	}
}

func processList(args []string, stdout, stderr io.Writer) int {
	fs, stateDir := processFlagSet("list", "list [--json]", stderr)
	asJSON := fs.Bool("json", false, "print the records as a JSON array")
	pos, err := cli.Parse(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		return exitBadInput
	}
	if len(pos) != 0 {
		fmt.Fprintln(stderr, "livefix process list: takes no arguments")
		return exitBadInput
	}
	recs, err := ulp.List(*stateDir)
	if err != nil {
		fmt.Fprintf(stderr, "livefix process list: %v\n", err)
		return exitFailure
	}
	if *asJSON {
		if recs == nil {
			recs = []*ulp.Record{}
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(recs); err != nil {
			return exitFailure
		}
		return exitOK
	}
	for _, r := range recs {
		for _, n := range r.Notes {
			fmt.Fprintf(stderr, "livefix process list: pid %d: %s\n", r.Pid, n)
		}
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PID\tCOMMAND\tPATCH\tLEVEL\tTARGET\tFUNCTIONS")
	for _, r := range recs {
		for _, a := range r.Patches {
			var names []string
			for _, f := range a.Funcs {
				names = append(names, f.Name)
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s\n", r.Pid, r.Comm, a.Name, a.Level, a.Target, strings.Join(names, ","))
		}
	}
	tw.Flush()
	return exitOK
}

// shortCommand tunes the runtime for a patch command, which lives a few
// milliseconds on a host whose CPUs the target's threads need: the
// garbage collector stays off (a collection would compete with the
// target and, in the stop, with the tracer) up to a memory limit that a
// large --all run may reach. GOGC and GOMEMLIMIT in the environment win.
// (Running Go code on one CPU fewer than the host has, so as never to
// take every CPU from the target, was measured and dropped: on 2 CPUs it
// made the 1-worker patch command 1.5-2x slower and its gap no shorter,
// BENCHMARKS.md.)
func shortCommand() {
	if os.Getenv("GOGC") == "" && os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(512 << 20)
		debug.SetGCPercent(-1)
	}
}
