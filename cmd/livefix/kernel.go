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

	"github.com/livefix/livefix/internal/cli"
	"github.com/livefix/livefix/kernelpatch"
)

const kernelUsage = `usage: livefix kernel COMMAND [ARGS]

commands:
  load FILE.ko [--timeout D] [--json]
        load a live patch module and wait until every task runs the patched
        code; checks FILE.json (release, build-id) first; on timeout the
        transition is reversed and the module removed
  list [--json]
        live patches in the kernel: name, enabled, transition, level, functions
  disable NAME [--timeout D] [--json]
        disable a live patch and wait until every task runs the original code
  unload NAME [--timeout D] [--json]
        disable a live patch if needed, then remove its module
  version [--json]
        effective kernel version: the release plus the highest enabled level
        (--json adds the running vmlinux build-id)
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
	case "list":
		return kernelList(rest, stdout, stderr)
	case "version":
		return kernelVersion(rest, stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, kernelUsage)
		return exitOK
	}
	fmt.Fprintf(stderr, "livefix kernel: unknown command %q\n\n%s", sub, kernelUsage)
	return exitBadInput
}

// parseArgs parses flags placed before, between or after the positional
// arguments and checks their number.
func parseArgs(fs *flag.FlagSet, args []string, npos int) ([]string, int, bool) {
	pos, err := cli.Parse(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return nil, exitOK, false
	}
	if err != nil {
		return nil, exitBadInput, false
	}
	if len(pos) != npos {
		fmt.Fprintf(fs.Output(), "livefix %s: want %d argument(s), got %d (see --help)\n", fs.Name(), npos, len(pos))
		return nil, exitBadInput, false
	}
	return pos, exitOK, true
}

func newFlags(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	return cli.NewFlagSet(name, "usage: livefix "+synopsis, stderr)
}

// kernelChange runs load, disable and unload.
func kernelChange(ctx context.Context, sub string, args []string, stdout, stderr io.Writer) int {
	what := "NAME"
	if sub == "load" {
		what = "FILE.ko"
	}
	fs := newFlags("kernel "+sub, "kernel "+sub+" "+what+" [--timeout D] [--json]", stderr)
	timeout := fs.Duration("timeout", 60*time.Second, "give up on a patching transition after this long, and undo it")
	asJSON := fs.Bool("json", false, "print the result as JSON (progress goes to stderr)")
	pos, code, ok := parseArgs(fs, args, 1)
	if !ok {
		return code
	}
	progress := stdout
	if *asJSON {
		progress = stderr
	}
	sys := newKernelSystem()
	opts := kernelpatch.Options{Timeout: *timeout, Progress: progress}
	var res *kernelpatch.Result
	var err error
	switch sub {
	case "load":
		res, err = sys.Load(ctx, pos[0], opts)
	case "disable":
		res, err = sys.Disable(ctx, pos[0], opts)
	case "unload":
		res, err = sys.Unload(ctx, pos[0], opts)
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
			if errors.As(err, &mm) {
				return exitRefused
			}
		}
		return exitFailure
	}
	if !*asJSON {
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
	return exitOK
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond)) }

func kernelList(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("kernel list", "kernel list [--json]", stderr)
	asJSON := fs.Bool("json", false, "print the patches as JSON")
	if _, code, ok := parseArgs(fs, args, 0); !ok {
		return code
	}
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

func kernelVersion(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("kernel version", "kernel version [--json]", stderr)
	asJSON := fs.Bool("json", false, "print release, level and version as JSON")
	if _, code, ok := parseArgs(fs, args, 0); !ok {
		return code
	}
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
