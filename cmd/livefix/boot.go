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
	"path/filepath"
	"syscall"
	"time"

	"github.com/livefix/livefix/hostconfig"
	"github.com/livefix/livefix/internal/cli"
	"github.com/livefix/livefix/kernelpatch"
)

const bootUsage = `usage: livefix boot [--retry] [--json] [--timeout D] [--state-dir DIR] [--config FILE] [--lock-timeout D]

Re-applies the kernel live patch level recorded for the running kernel
(its vmlinux build-id), from the copies kept in the state directory. Run
early at boot by livefix.service. Applies nothing when livefix=off is on
the kernel command line or the configuration says enabled = false, or
when the record belongs to another kernel (the record is kept).

Crash-loop guard: a boot-time load is marked in progress (durably)
before the kernel is touched; a boot that finds the mark still set loads
nothing and records "level N skipped: the previous boot did not finish
loading it" until --retry or livefix kernel load.

exit status: 0 applied or nothing to apply, 4 applying failed or was
skipped, 6 an off switch is set, 1 other error, 2 bad usage.
`

// configFlag adds --config.
func configFlag(fs *flag.FlagSet) *string {
	return fs.String("config", "", "configuration file (default $"+hostconfig.EnvPath+" or "+hostconfig.DefaultPath+")")
}

// offSwitch returns the off switch in effect, reading the kernel command
// line and the configuration file.
func offSwitch(sys *kernelpatch.System, configPath string) (string, error) {
	cfg, err := hostconfig.Load(hostconfig.Path(configPath))
	if err != nil {
		return "", err
	}
	cmdline, _ := os.ReadFile(filepath.Join(sys.Proc, "cmdline"))
	return hostconfig.OffReason(string(cmdline), cfg), nil
}

func runBoot(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("boot", "boot [--retry] [--json]", stderr)
	fs.Usage = func() { fmt.Fprint(stderr, bootUsage) }
	retry := fs.Bool("retry", false, "load even if the crash-loop guard skipped the level, and clear the guard")
	asJSON := fs.Bool("json", false, "print the result as JSON (progress goes to stderr)")
	timeout := fs.Duration("timeout", 60*time.Second, "give up on the patching transition after this long, and undo it")
	config := configFlag(fs)
	sf := addStateFlags(fs)
	if _, code, ok := cli.ParseArgs(fs, "livefix", args, 0); !ok {
		return code
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	m := sf.manager()
	off, err := offSwitch(m.Sys, *config)
	if err != nil {
		fmt.Fprintf(stderr, "livefix boot: %v; nothing applied\n", err)
		return exitFailure
	}
	progress := stdout
	if *asJSON {
		progress = stderr
	}
	res, err := m.Boot(ctx, kernelpatch.BootOptions{Options: kernelpatch.Options{Timeout: *timeout, Progress: progress}, Retry: *retry, Off: off})
	if res.Repaired != "" {
		fmt.Fprintf(stderr, "livefix: %s\n", res.Repaired)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(res)
	} else {
		fmt.Fprintf(stdout, "livefix boot: %s\n", res.Message)
	}
	switch {
	case res.Outcome == kernelpatch.BootOff:
		return kernelpatch.StatusOff
	case errors.Is(err, kernelpatch.ErrSkipped), res.Outcome == kernelpatch.BootFailed && res.Name != "":
		return kernelpatch.StatusFailed
	case err != nil:
		if !*asJSON && res.Message == "" {
			fmt.Fprintf(stderr, "livefix %v\n", err)
		}
		return exitFailure
	}
	return exitOK
}
