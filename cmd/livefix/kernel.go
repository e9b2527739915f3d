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
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/livefix/livefix/hoststate"
	"github.com/livefix/livefix/internal/cli"
	"github.com/livefix/livefix/kernelpatch"
)

const kernelUsage = `usage: livefix kernel COMMAND [ARGS]

commands:
  load FILE.ko [--timeout D] [--json] [--no-persist] [--downgrade]
        load a live patch module and wait until every task runs the patched
        code; checks FILE.json (release, build-id) first; on timeout the
        transition is reversed and the module removed; once applied the
        level is recorded in the state directory and re-applied at boot
        (not with --no-persist); a level not higher than the recorded one
        is refused unless --downgrade
  list [--json]
        live patches in the kernel: name, enabled, transition, level, functions
  disable NAME [--timeout D] [--json]
        disable a live patch and wait until every task runs the original
        code; a recorded level is removed from the record
  unload NAME|--all [--timeout D] [--json]
        disable a live patch if needed, then remove its module and its
        record; --all removes every patch livefix applied
  version [--json]
        effective kernel version: the release plus the highest enabled level
        (--json adds the running vmlinux build-id)
  kexec [--release R] [--append ARGS] [--load-only]
        load the newest installed kernel (or R) with its initrd and the
        current command line (plus ARGS) through kexec_file_load, then sync
        and jump into it; a refusal (lockdown, signature policy) says why
        and leaves nothing loaded

every command takes --state-dir DIR (default $LIVEFIX_STATE_DIR or
/var/lib/livefix); commands that change something take --lock-timeout D
(default 60s) and first repair what an interrupted command left.
`

// newKernelSystem is the kernel the commands work on; tests replace it.
var newKernelSystem = kernelpatch.Host

func runKernel(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, kernelUsage)
		return exitBadInput
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	sub, rest := args[0], args[1:]
	switch sub {
	case "load", "disable", "unload":
		return kernelChange(ctx, sub, rest, stdout, stderr)
	case "kexec":
		return kernelKexec(ctx, rest, stdout, stderr)
	case "list":
		return kernelList(ctx, rest, stdout, stderr)
	case "version":
		return kernelVersion(ctx, rest, stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, kernelUsage)
		return exitOK
	}
	fmt.Fprintf(stderr, "livefix kernel: unknown command %q\n\n%s", sub, kernelUsage)
	return exitBadInput
}

func newFlags(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	return cli.NewFlagSet(name, "usage: livefix "+synopsis, stderr)
}

// stateFlags are the flags of every command that reads or changes the
// persistent state.
type stateFlags struct {
	dir         *string
	lockTimeout *time.Duration
}

func addStateFlags(fs *flag.FlagSet) stateFlags {
	return stateFlags{
		dir:         fs.String("state-dir", "", "state directory (default $"+hoststate.EnvRoot+" or "+hoststate.DefaultRoot+")"),
		lockTimeout: fs.Duration("lock-timeout", kernelpatch.DefaultLockTimeout, "wait this long for another livefix command to finish"),
	}
}

func (f stateFlags) manager() *kernelpatch.Manager {
	m := kernelpatch.NewManager(newKernelSystem(), hoststate.Root(*f.dir))
	m.LockTimeout = *f.lockTimeout
	if m.LockTimeout <= 0 {
		m.LockTimeout = time.Nanosecond // --lock-timeout 0: do not wait
	}
	return m
}

// reconcileReadOnly repairs what an interrupted command left, when the
// lock is free, for the commands that only read.
func reconcileReadOnly(ctx context.Context, m *kernelpatch.Manager, stderr io.Writer) {
	repaired, _, err := m.Reconcile(ctx, false, kernelpatch.Options{Progress: stderr})
	if repaired != "" {
		fmt.Fprintf(stderr, "livefix: %s\n", repaired)
	}
	if err != nil {
		fmt.Fprintf(stderr, "livefix: note: could not reconcile the record with the kernel: %v\n", err)
	}
}

// kernelChange runs load, disable and unload.
func kernelChange(ctx context.Context, sub string, args []string, stdout, stderr io.Writer) int {
	synopsis := "kernel " + sub + " NAME [--timeout D] [--json]"
	switch sub {
	case "load":
		synopsis = "kernel load FILE.ko [--timeout D] [--json] [--no-persist] [--downgrade]"
	case "unload":
		synopsis = "kernel unload NAME|--all [--timeout D] [--json]"
	}
	fs := newFlags("kernel "+sub, synopsis, stderr)
	timeout := fs.Duration("timeout", 60*time.Second, "give up on a patching transition after this long, and undo it")
	asJSON := fs.Bool("json", false, "print the result as JSON (progress goes to stderr)")
	sf := addStateFlags(fs)
	var noPersist, downgrade, all *bool
	if sub == "load" {
		noPersist = fs.Bool("no-persist", false, "do not record the level (livefix boot will not re-apply it)")
		downgrade = fs.Bool("downgrade", false, "allow a level lower than or equal to the recorded one")
	}
	if sub == "unload" {
		all = fs.Bool("all", false, "unload every live patch livefix applied")
	}
	pos, err := cli.Parse(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		return exitBadInput
	}
	npos := 1
	if all != nil && *all {
		npos = 0
	}
	if len(pos) != npos {
		fmt.Fprintf(stderr, "livefix %s: want %d argument(s), got %d (see --help)\n", fs.Name(), npos, len(pos))
		return exitBadInput
	}
	progress := stdout
	if *asJSON {
		progress = stderr
	}
	m := sf.manager()
	opts := kernelpatch.Options{Timeout: *timeout, Progress: progress}
	if all != nil && *all {
		return kernelUnloadAll(ctx, m, opts, *asJSON, stdout, stderr)
	}
	var res *kernelpatch.Result
	switch sub {
	case "load":
		res, err = m.Apply(ctx, pos[0], kernelpatch.ApplyOptions{Options: opts, NoPersist: *noPersist, Downgrade: *downgrade})
	case "disable":
		res, err = m.Disable(ctx, pos[0], opts)
	case "unload":
		res, err = m.Unload(ctx, pos[0], opts)
	}
	if res != nil && res.Repaired != "" {
		fmt.Fprintf(stderr, "livefix: %s\n", res.Repaired)
	}
	if *asJSON {
		out := struct {
			*kernelpatch.Result
			Error string `json:"error,omitempty"`
		}{Result: res}
		if err != nil {
			out.Error = err.Error()
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(out)
	}
	if err != nil {
		fmt.Fprintf(stderr, "livefix %v\n", err)
		if res != nil && res.Outcome == kernelpatch.Unchanged {
			var mm *kernelpatch.MismatchError
			var dg *kernelpatch.DowngradeError
			if errors.As(err, &mm) || errors.As(err, &dg) {
				return exitRefused
			}
		}
		return exitFailure
	}
	if !*asJSON {
		printResult(stdout, res)
	}
	return exitOK
}

func printResult(stdout io.Writer, res *kernelpatch.Result) {
	for _, n := range res.Notes {
		fmt.Fprintf(stdout, "note: %s\n", n)
	}
	switch res.Outcome {
	case kernelpatch.Applied:
		fmt.Fprintf(stdout, "%s applied (level %d): load %s, transition %s, total %s\n",
			res.Name, res.Level, ms(res.LoadTime), ms(res.TransitionTime), ms(res.Total))
	case kernelpatch.Disabled:
		fmt.Fprintf(stdout, "%s disabled: transition %s, total %s\n", res.Name, ms(res.TransitionTime), ms(res.Total))
	case kernelpatch.Unloaded:
		fmt.Fprintf(stdout, "%s unloaded in %s\n", res.Name, ms(res.Total))
	}
}

func kernelUnloadAll(ctx context.Context, m *kernelpatch.Manager, opts kernelpatch.Options, asJSON bool, stdout, stderr io.Writer) int {
	results, repaired, err := m.UnloadAll(ctx, opts)
	if repaired != "" {
		fmt.Fprintf(stderr, "livefix: %s\n", repaired)
	}
	if asJSON {
		out := struct {
			Results []*kernelpatch.Result `json:"results"`
			Error   string                `json:"error,omitempty"`
		}{Results: results}
		if out.Results == nil {
			out.Results = []*kernelpatch.Result{}
		}
		if err != nil {
			out.Error = err.Error()
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(out)
	} else {
		for _, r := range results {
			printResult(stdout, r)
		}
		if len(results) == 0 && err == nil {
			fmt.Fprintln(stdout, "no livefix live patch is loaded")
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "livefix kernel %v\n", err)
		return exitFailure
	}
	return exitOK
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond)) }

func kernelList(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("kernel list", "kernel list [--json]", stderr)
	asJSON := fs.Bool("json", false, "print the patches as JSON")
	sf := addStateFlags(fs)
	if _, code, ok := cli.ParseArgs(fs, "livefix", args, 0); !ok {
		return code
	}
	reconcileReadOnly(ctx, sf.manager(), stderr)
	patches, err := newKernelSystem().List()
	if err != nil {
		fmt.Fprintf(stderr, "livefix kernel %v\n", err)
		return exitFailure
	}
	if *asJSON {
		if patches == nil {
			patches = []kernelpatch.Patch{}
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(patches)
		return exitOK
	}
	if len(patches) == 0 {
		fmt.Fprintln(stdout, "no live patches loaded")
		return exitOK
	}
	tw := tabwriter.NewWriter(stdout, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tENABLED\tTRANSITION\tLEVEL\tFUNCTIONS")
	for _, p := range patches {
		var funcs []string
		for _, o := range p.Objects {
			for _, f := range o.Functions {
				name := o.Name + ":" + f.Name
				if f.Sympos > 0 {
					name += fmt.Sprintf(",%d", f.Sympos)
				}
				if !o.Patched {
					name += "(not loaded)"
				}
				funcs = append(funcs, name)
			}
		}
		level := "-"
		if p.Livefix {
			level = fmt.Sprint(p.Level)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", p.Name, yesNo(p.Enabled), yesNo(p.Transition), level, strings.Join(funcs, " "))
	}
	tw.Flush()
	return exitOK
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func kernelVersion(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("kernel version", "kernel version [--json]", stderr)
	asJSON := fs.Bool("json", false, "print release, level and version as JSON")
	sf := addStateFlags(fs)
	if _, code, ok := cli.ParseArgs(fs, "livefix", args, 0); !ok {
		return code
	}
	reconcileReadOnly(ctx, sf.manager(), stderr)
	sys := newKernelSystem()
	release, level, err := sys.Version()
	if err != nil {
		fmt.Fprintf(stderr, "livefix %v\n", err)
		return exitFailure
	}
	v := kernelpatch.FormatVersion(release, level)
	if *asJSON {
		out := map[string]any{"release": release, "level": level, "version": v}
		if id, err := sys.KernelBuildID(); err == nil {
			out["build_id"] = id
		}
		_ = json.NewEncoder(stdout).Encode(out)
		return exitOK
	}
	fmt.Fprintln(stdout, v)
	return exitOK
}

// stateDirRoot resolves a --state-dir value.
func stateDirRoot(flagValue string) string { return hoststate.Root(flagValue) }
