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
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/livefix/livefix/internal/cli"
	"github.com/livefix/livefix/internal/kbuild"
	"github.com/livefix/livefix/klp"
	"github.com/livefix/livefix/objdiff"
)

const kernelUsage = `usage: livefix-build kernel --patch FILE [--patch FILE...] --name NAME
       [--base-patch FILE ...] [--kernel RELEASE] [--source TARBALL|DIR] [--config FILE] [--vmlinux FILE] [--level N]
       [--module-object MODNAME=path/in/tree.c ...] [-o DIR] [--keep-tmp] [-v] [--json]
       [--cve CVE-YYYY-NNNN ...] [--summary TEXT] [--explain] [--max-header-units N]

Builds a kernel livepatch module from source patches (unified diffs that
apply with patch -p1 to the kernel source): prepares the kernel tree once
(cached), compiles only the touched .c files before and after, diffs them,
generates and links the module, and writes DIR/NAME.ko and DIR/NAME.json.
Defaults target the newest installed Debian kernel.

A changed header is followed to every translation unit of the kernel's
configuration that reads it (kbuild's dependency records, cached per tree);
all of them are compiled before and after and diffed. A header read by more
than --max-header-units units (default 100) is refused with their count.

--base-patch FILE (repeatable, applied in order before the --patch files)
names changes the running kernel has that the source package lacks, e.g.
a vendor's own patches: they are applied to both the pristine and the
patched side, so they are not part of the live patch, and reverted
afterwards.

--explain prints, for each touched file, what the diff engine decided per
symbol: changed (and why: code bytes, a relocation target, a string),
escalated to its callers (no ftrace entry), new, copied (special statics,
dynamic debug descriptors, changed read-only data), ignored as line-only,
and each refusal with the symbol and the way out. It is printed even when
the build is refused.

exit status: 0 built, 1 failure, 2 bad input, 3 a change cannot be live
patched, 4 the patches change no function.`

// cveRE is the CVE id syntax (CVE-YEAR-SEQUENCE, four or more digits).
var cveRE = regexp.MustCompile(`^CVE-[0-9]{4}-[0-9]{4,}$`)

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func runKernel(args []string, stdout, stderr io.Writer) int {
	fs := cli.NewFlagSet("kernel", kernelUsage, stderr)
	var patches, basePatches, modObjs, cves multiFlag
	fs.Var(&cves, "cve", "CVE id the patch fixes, stored in NAME.json for livefix info (repeatable)")
	summary := fs.String("summary", "", "one line saying what the patch fixes, stored in NAME.json")
	fs.Var(&patches, "patch", "source patch to apply (repeatable, applied in order)")
	fs.Var(&basePatches, "base-patch", "patch the running kernel has that the source lacks, applied to both sides and reverted afterwards (repeatable)")
	fs.Var(&modObjs, "module-object", "MODNAME=path/in/tree.c: the file is part of module MODNAME (overrides the Makefile rule; repeatable)")
	name := fs.String("name", "", "patch and module name (letters, digits, underscores)")
	release := fs.String("kernel", "", "kernel release (default: newest in /boot)")
	source := fs.String("source", "", "kernel source tarball or directory (default /usr/src/linux-source-X.Y.tar.xz)")
	config := fs.String("config", "", "kernel config (default /boot/config-RELEASE)")
	vmlinux := fs.String("vmlinux", "", "vmlinux with the full symbol table, for exact positions of duplicate statics (default /usr/lib/debug/boot/vmlinux-RELEASE from linux-image-RELEASE-dbg, if installed)")
	level := fs.Int("level", 1, "cumulative patch level; a higher level replaces the loaded lower ones")
	outDir := fs.String("o", ".", "output directory")
	keep := fs.Bool("keep-tmp", false, "keep the work directory (objects, generated module) and print its path")
	verbose := fs.Bool("v", false, "show kbuild's commands and output")
	asJSON := fs.Bool("json", false, "print the manifest as JSON on stdout")
	explain := fs.Bool("explain", false, "say, per touched file and symbol, what changed and why, what was escalated, ignored or refused")
	maxHeaderUnits := fs.Int("max-header-units", kbuild.DefaultMaxHeaderUnits, "most translation units a changed header may bring into the build")
	pos, err := cli.Parse(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		return exitBadInput
	}
	bad := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "livefix-build kernel: "+format+"\n", a...)
		return exitBadInput
	}
	switch {
	case len(pos) > 0:
		return bad("unexpected argument %q (patches go after --patch; see --help)", pos[0])
	case len(patches) == 0:
		return bad("need at least one --patch FILE (see --help)")
	case *name == "":
		return bad("need --name NAME: the module and /sys/kernel/livepatch name")
	case *maxHeaderUnits < 1:
		return bad("--max-header-units must be 1 or more, not %d", *maxHeaderUnits)
	case *level < 1:
		return bad("--level must be 1 or more, not %d", *level)
	case strings.ContainsAny(*summary, "\n\r"):
		return bad("--summary must be one line")
	}
	for _, c := range cves {
		if !cveRE.MatchString(c) {
			return bad("--cve %q: want an id like CVE-2024-1234", c)
		}
	}
	override := map[string]string{}
	for _, mo := range modObjs {
		mod, file, ok := strings.Cut(mo, "=")
		if !ok || file == "" || mod == "" {
			return bad("--module-object %q: want MODNAME=path/in/tree.c", mo)
		}
		override[filepath.Clean(file)] = mod
	}
	tgt, err := kbuild.DefaultTarget(*release)
	if *source != "" || *config != "" {
		// An explicit source or config may stand in for a missing default.
		if tgt.Release == "" {
			return bad("%v", err)
		}
		if *source != "" {
			tgt.Source = *source
		}
		if *config != "" {
			tgt.Config = *config
		}
		if _, serr := os.Stat(tgt.Source); serr == nil {
			if _, cerr := os.Stat(tgt.Config); cerr == nil && errors.Is(err, kbuild.ErrNoKernel) {
				err = nil
				for _, p := range []string{tgt.Vmlinuz, filepath.Join(tgt.Headers, "Makefile")} {
					if _, e := os.Stat(p); e != nil {
						err = fmt.Errorf("kernel %s: %s missing; run `make setup`", tgt.Release, p)
					}
				}
			}
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "livefix-build kernel: %v\n", err)
		return exitBadInput
	}
	if *vmlinux != "" {
		tgt.Vmlinux = *vmlinux
	}

	work := ""
	if *keep {
		work, err = os.MkdirTemp("", "livefix-kernel-")
		if err != nil {
			fmt.Fprintf(stderr, "livefix-build kernel: %v\n", err)
			return exitFailure
		}
	}
	var log io.Writer = io.Discard
	if *verbose {
		log = stderr
	}
	progress := stderr
	if !*asJSON {
		progress = stdout
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	steps := 0
	var explainer func(string, *objdiff.Result)
	if *explain {
		explainer = func(source string, res *objdiff.Result) {
			if err := objdiff.WriteExplanation(progress, source, res); err != nil {
				fmt.Fprintf(stderr, "livefix-build kernel: %v\n", err)
			}
		}
	}
	m, err := klp.FromPatches(ctx, klp.Request{
		Name: *name, Level: *level, Target: tgt, Patches: patches, BasePatches: basePatches, ModuleObjects: override,
		OutDir: *outDir, WorkDir: work, Log: log, CVEs: cves, Summary: *summary,
		Explain: explainer, MaxHeaderUnits: *maxHeaderUnits, Progress: progress,
		OnStep: func(s klp.Step) {
			steps++
			detail := ""
			if s.Detail != "" {
				detail = "  " + s.Detail
			}
			fmt.Fprintf(progress, "[%d/6] %-13s %6.1fs%s\n", steps, s.Name, s.Seconds, detail)
		},
	})
	if work != "" {
		fmt.Fprintf(stderr, "livefix-build kernel: work directory kept at %s\n", work)
	}
	if err != nil {
		fmt.Fprintf(stderr, "livefix-build kernel: %v\n", err)
		var refused *objdiff.RefusedError
		switch {
		case errors.As(err, &refused):
			return exitRefused
		case errors.Is(err, objdiff.ErrNoFunctionalChange):
			return exitNoChange
		case errors.Is(err, klp.ErrBadInput):
			return exitBadInput
		}
		return exitFailure
	}
	// KPATCH_FORCE_UNSAFE overrides, loudly, with or without --json.
	for _, w := range m.Warnings {
		fmt.Fprintf(stderr, "livefix-build kernel: WARNING: %s\n", w)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(m); err != nil {
			fmt.Fprintf(stderr, "livefix-build kernel: %v\n", err)
			return exitFailure
		}
		return exitOK
	}
	var funcs []string
	for _, o := range m.Objects {
		for _, f := range o.Functions {
			funcs = append(funcs, o.Name+":"+f.Name)
		}
	}
	fmt.Fprintf(progress, "total %.1fs: %s (level %d, kernel %s, build-id %s) patches %s\n",
		time.Since(start).Seconds(), filepath.Join(*outDir, m.Module), m.Level, m.Kernel, m.BuildID, strings.Join(funcs, ", "))
	return exitOK
}
