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

	"github.com/livefix/livefix/internal/cli"
	"github.com/livefix/livefix/ulp"
	"github.com/livefix/livefix/ulp/build"
)

const userUsage = `usage: livefix-build user --src DIR --patch FILE --build 'CMD'
                          (--target-binary FILE [--debug-file FILE] | --target PATH)
                          [-o OUT.lfp] [--name NAME] [--level N] [--keep DIR] [--json] [-v]

Builds a userspace live patch. Copies DIR twice (without its built files),
applies FILE (patch -p1) to the second copy and runs CMD in both copies
with a compiler wrapper (cc, gcc, c++, g++ first in PATH and in $CC/$CXX)
that records every compiler invocation; then compiles each source file
the build compiled on its own, with the build's own options plus
-ffunction-sections -fdata-sections, diffs the objects that changed and
writes the patch.

--target-binary FILE is the production executable or shared library the
patch is for (stripped or not): the patch is keyed to its GNU build-id,
its symbols come from its .symtab, else from its debug file (--debug-file,
else /usr/lib/debug/.build-id/NN/REST.debug or its .gnu_debuglink), else
from .dynsym. Every function the patch replaces or calls must have, in
FILE, the code compiled from the unpatched source: otherwise the patch is
refused, naming the function (the source or the flags do not match).
--target PATH (relative to DIR) instead patches the binary CMD builds from
the unpatched tree (kept with --keep DIR as DIR/orig/PATH).

exit status: 0 patch written, 3 something cannot be live patched,
4 no change to the target's code, 2 bad input, 1 build failure.`

func runUser(args []string, stdout, stderr io.Writer) int {
	fs := cli.NewFlagSet("user", userUsage, stderr)
	var c build.Config
	fs.StringVar(&c.Src, "src", "", "source tree (not modified)")
	fs.StringVar(&c.Patch, "patch", "", "unified diff to apply with patch -p1")
	fs.StringVar(&c.Build, "build", "", "shell command that builds the tree, e.g. 'make -j2'")
	fs.StringVar(&c.Target, "target", "", "built executable or shared library, relative to the tree")
	fs.StringVar(&c.TargetBinary, "target-binary", "", "the production executable or shared library the patch is for")
	fs.StringVar(&c.DebugFile, "debug-file", "", "separate debug file of --target-binary")
	fs.StringVar(&c.Name, "name", "", "patch name (default: the patch file's base name)")
	fs.IntVar(&c.Level, "level", 1, "patch level; a higher level replaces an applied patch for the same target")
	fs.StringVar(&c.WorkDir, "keep", "", "keep both build trees in this directory (orig/, patched/)")
	out := fs.String("o", "", "output file (default NAME.lfp)")
	asJSON := fs.Bool("json", false, "print the per-object change sets as JSON")
	verbose := fs.Bool("v", false, "show the build output")
	pos, err := cli.Parse(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		return exitBadInput
	}
	if len(pos) != 0 || c.Src == "" || c.Patch == "" || c.Build == "" || (c.Target == "") == (c.TargetBinary == "") {
		fmt.Fprintln(stderr, "livefix-build user: --src, --patch, --build and one of --target-binary or --target are required and there are no positional arguments (see --help)")
		return exitBadInput
	}
	if c.DebugFile != "" && c.TargetBinary == "" {
		fmt.Fprintln(stderr, "livefix-build user: --debug-file goes with --target-binary")
		return exitBadInput
	}
	if c.Level < 1 {
		fmt.Fprintln(stderr, "livefix-build user: --level must be at least 1")
		return exitBadInput
	}
	var logBuf strings.Builder
	c.Log = &logBuf
	if *verbose {
		c.Log = stderr
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := build.Build(ctx, c)
	if res != nil {
		if *asJSON {
			json.NewEncoder(stdout).Encode(res.Diffs)
		} else {
			for _, d := range res.Diffs {
				if !d.InTarget {
					fmt.Fprintf(stdout, "%s: not part of %s, skipped\n", d.Object, res.Patch.Target.Path)
					continue
				}
				fmt.Fprintf(stdout, "%s: changed %s", d.Object, strings.Join(d.ChangeSet.Changed, ", "))
				if len(d.ChangeSet.New) > 0 {
					fmt.Fprintf(stdout, "; new %s", strings.Join(d.ChangeSet.New, ", "))
				}
				if len(d.ChangeSet.NewData) > 0 {
					fmt.Fprintf(stdout, "; new data %s", strings.Join(d.ChangeSet.NewData, ", "))
				}
				fmt.Fprintln(stdout)
			}
		}
	}
	if err != nil {
		var re *build.RefusedError
		switch {
		case errors.As(err, &re):
			for _, r := range re.Refused {
				fmt.Fprintf(stderr, "refused: %s\n", r)
			}
			return exitRefused
		case errors.Is(err, build.ErrNoChange):
			fmt.Fprintf(stderr, "livefix-build user: %v\n", err)
			return exitNoChange
		}
		if !*verbose && logBuf.Len() > 0 {
			lines := strings.Split(strings.TrimRight(logBuf.String(), "\n"), "\n")
			if len(lines) > 20 {
				lines = lines[len(lines)-20:]
			}
			fmt.Fprintf(stderr, "build output (last lines):\n%s\n", strings.Join(lines, "\n"))
		}
		fmt.Fprintf(stderr, "livefix-build user: %v\n", err)
		return exitFailure
	}
	if *out == "" {
		*out = res.Patch.Name + ".lfp"
	}
	if err := ulp.WriteFile(*out, res.Patch); err != nil {
		fmt.Fprintf(stderr, "livefix-build user: %v\n", err)
		return exitFailure
	}
	fmt.Fprintf(stdout, "wrote %s: patch %s level %d for %s (build-id %s, symbols from %s)\n", *out, res.Patch.Name, res.Patch.Level, res.Patch.Target.Path, res.Patch.Target.BuildID, res.SymbolSource)
	return exitOK
}
