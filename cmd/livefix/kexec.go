package main

import (
	"context"
	"fmt"
	"io"

	"github.com/livefix/livefix/hoststate"
	"github.com/livefix/livefix/internal/cli"
	"github.com/livefix/livefix/kexec"
)

// newKexecSystem is the kexec interface the command uses; tests replace it.
var newKexecSystem = kexec.Host

func kernelKexec(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("kernel kexec", "kernel kexec [--release R] [--append ARGS] [--load-only]", stderr)
	release := fs.String("release", "", "kernel release to boot (default: the newest /boot/vmlinuz-*)")
	appendArgs := fs.String("append", "", "words to add to the current kernel command line")
	loadOnly := fs.Bool("load-only", false, "load the kernel but do not jump into it (then: systemctl kexec)")
	sf := addStateFlags(fs)
	if _, code, ok := cli.ParseArgs(fs, "livefix", args, 0); !ok {
		return code
	}
	ks := newKexecSystem()
	img, err := ks.Find(*release, *appendArgs)
	if err != nil {
		fmt.Fprintf(stderr, "livefix kernel %v\n", err)
		return exitFailure
	}
	// Serialise with every other command that changes the kernel.
	lk, err := hoststate.Open(hoststate.Root(*sf.dir)).Lock(ctx, *sf.lockTimeout)
	if err != nil {
		fmt.Fprintf(stderr, "livefix kernel kexec: %v\n", err)
		return exitFailure
	}
	defer lk.Unlock()
	fmt.Fprintf(stdout, "loading %s (%s, %s) with command line: %s\n", img.Release, img.Kernel, img.Initrd, img.Cmdline)
	if err := ks.LoadImage(img); err != nil {
		fmt.Fprintf(stderr, "livefix kernel %v\n", err)
		return exitFailure
	}
	if *loadOnly {
		fmt.Fprintf(stdout, "loaded %s; `systemctl kexec` (or livefix kernel kexec) jumps into it\n", img.Release)
		return exitOK
	}
	fmt.Fprintf(stdout, "syncing and jumping into %s\n", img.Release)
	if err := ks.Jump(); err != nil {
		fmt.Fprintf(stderr, "livefix kernel %v\n", err)
		return exitFailure
	}
	return exitOK
}
