package kbuild

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ObjectPair is one translation unit compiled before and after a patch.
type ObjectPair struct {
	Source  string // path relative to the tree, e.g. fs/proc/cmdline.c
	Orig    string // object compiled from the pristine source
	Patched string // object compiled from the patched source
	// Object is the kernel object kbuild compiled the unit for, from the
	// command it recorded in the unit's .cmd file: "vmlinux", or the
	// module's name (dashes as underscores) when it was compiled with
	// -DMODULE; "" when the record is missing.
	Object string
	// Headers lists the headers the patches change that the unit reads,
	// from kbuild's dependency record of its pristine compile.
	Headers []string
	// Includes lists the touched .c files the unit #includes rather than
	// compiles itself (kernel/sched/rt.c in build_policy.c); empty when
	// Source is the touched file.
	Includes []string
}

// PatchCFLAGS are the extra compiler flags of every object BuildPair
// builds: one section per function and per data object, so that changed
// functions can be told apart and extracted.
const PatchCFLAGS = "-ffunction-sections -fdata-sections"

// BuildPair compiles every C file the given patch files touch twice, with
// kbuild's single-object target and PatchCFLAGS: first in the pristine
// tree, then with the patches applied in order (patch -p1). The objects are
// copied to outDir/orig/REL.o and outDir/patched/REL.o. The patches are
// always reverted before BuildPair returns, on failure and cancellation
// too, and a crash while they are applied is repaired by the next Prepare
// or BuildPair.
//
// The tree's BasePatches are applied first, before the pristine build, so
// both sides carry them; they are reverted with the patches (the
// crash-recovery marker covers their files too).
//
// A changed header is followed to every translation unit of this kernel
// configuration that reads it (see headerUnits): they are all compiled,
// in one make run per side with as many jobs as CPUs, and returned as
// pairs whose Headers name the changed headers they read. More includers
// than the tree's MaxHeaderUnits is a *HeaderUnitsError. An assembly unit
// that reads a changed header is preprocessed before and after; if its
// text differs the change is refused, since a live patch replaces C
// functions only. Other files (assembly, Makefiles, Kconfig) cannot be
// built object by object and are refused.
func (tr *Tree) BuildPair(ctx context.Context, patches []string, outDir string, log io.Writer) (_ []ObjectPair, err error) {
	if log == nil {
		log = io.Discard
	}
	if tr == nil || tr.root == "" {
		return nil, errors.New("build objects: tree was not made by Prepare")
	}
	if len(patches) == 0 {
		return nil, errors.New("build objects: no patches given")
	}
	var touched []string
	seen := map[string]bool{}
	for _, p := range patches {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("build objects: %w", err)
		}
		files, err := TouchedFiles(data)
		if err != nil {
			return nil, fmt.Errorf("build objects: patch %s: %w", p, err)
		}
		for _, f := range files {
			if !seen[f] {
				seen[f] = true
				touched = append(touched, f)
			}
		}
	}
	var sources, headers, refused []string
	includedBy := map[string][]string{} // translation unit -> touched .c files it includes
	touchedUnit := map[string]bool{}    // units compiled for a touched .c file
	for _, f := range touched {
		switch {
		case strings.HasSuffix(f, ".c"):
			for _, u := range tr.unitsOf(f) {
				if u != f {
					includedBy[u] = append(includedBy[u], f)
				}
				touchedUnit[u] = true
				if !slices.Contains(sources, u) {
					sources = append(sources, u)
				}
			}
		case strings.HasSuffix(f, ".h"):
			headers = append(headers, f)
		default:
			refused = append(refused, f)
		}
	}
	if len(refused) > 0 {
		return nil, fmt.Errorf("build objects: patches change %s; only changes to .c files and headers can be built object by object",
			strings.Join(refused, ", "))
	}
	absPatches := make([]string, len(patches))
	for i, p := range patches {
		a, err := filepath.Abs(p)
		if err != nil {
			return nil, fmt.Errorf("build objects: %w", err)
		}
		absPatches[i] = a
	}
	// Base patches: changes both sides share, applied before the pristine
	// build. Their files are saved and reverted like the patches' own.
	var baseTouched, absBase []string
	for _, p := range tr.BasePatches {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("build objects: base patch: %w", err)
		}
		files, err := TouchedFiles(data)
		if err != nil {
			return nil, fmt.Errorf("build objects: base patch %s: %w", p, err)
		}
		for _, f := range files {
			if !slices.Contains(baseTouched, f) && !seen[f] {
				baseTouched = append(baseTouched, f)
			}
		}
		a, err := filepath.Abs(p)
		if err != nil {
			return nil, fmt.Errorf("build objects: %w", err)
		}
		absBase = append(absBase, a)
	}
	var incNames []string
	for name := range tr.Includes {
		if name != filepath.Base(name) || !strings.HasSuffix(name, ".h") {
			return nil, fmt.Errorf("build objects: include %q: want a header file name", name)
		}
		incNames = append(incNames, filepath.Join("include", name))
	}
	slices.Sort(incNames)

	// The view holds the tree lock until releaseTree: the repair of a
	// crashed in-place build, the stamp check and the header units need
	// the shared tree as it is; compiling in a private view does not.
	v, err := tr.openView(ctx, slices.Concat(touched, baseTouched, incNames), log)
	if err != nil {
		return nil, fmt.Errorf("build objects: %w", err)
	}
	var results []buildTarget // removed from the shared tree by an in-place close
	defer func() {
		if cerr := v.close(results); cerr != nil {
			err = errors.Join(err, fmt.Errorf("build objects: %w", cerr))
		}
	}()
	if err := tr.recover(log); err != nil {
		return nil, err
	}
	if !stampIs(filepath.Join(tr.root, preparedName), tr.stamp) {
		return nil, fmt.Errorf("build objects: kernel tree %s is not prepared (was it removed?); call Prepare again", tr.Dir)
	}
	// From here on the tree this build sees may be modified: its private
	// view, or in place the shared tree, where the marker the first
	// apply writes lets anyone revert it, and the deferred close does.
	if err := v.apply(ctx, absBase, "base patch ", log); err != nil {
		return nil, fmt.Errorf("build objects: base patch: %w", err)
	}
	for _, s := range sources {
		if !v.exists(s) {
			return nil, fmt.Errorf("build objects: %s is not in the kernel source %s; patches may only change existing files",
				s, tr.Target.Release)
		}
	}

	// Headers the pristine tree has: a header the patch creates is read
	// only by files the patch also changes.
	var existing []string
	for _, h := range headers {
		if v.exists(h) {
			existing = append(existing, h)
		}
	}
	var asm []string
	if len(existing) > 0 {
		units, asmUnits, err := tr.headerUnits(ctx, existing, log)
		if err != nil {
			return nil, fmt.Errorf("build objects: %w", err)
		}
		for _, u := range units {
			if !slices.Contains(sources, u) {
				sources = append(sources, u)
			}
		}
		asm = asmUnits
	}
	v.releaseTree()
	if len(sources) == 0 && len(asm) == 0 {
		return nil, fmt.Errorf("build objects: no translation unit of this kernel configuration includes %s, so the patches change no code of kernel %s: %w",
			strings.Join(headers, ", "), tr.Target.Release, ErrNoUnits)
	}

	pairs := make([]ObjectPair, len(sources))
	for i, s := range sources {
		obj := strings.TrimSuffix(s, ".c") + ".o"
		pairs[i] = ObjectPair{
			Source:   s,
			Orig:     filepath.Join(outDir, "orig", obj),
			Patched:  filepath.Join(outDir, "patched", obj),
			Includes: includedBy[s],
		}
	}
	targets := func(which string, pairs []ObjectPair) []buildTarget {
		var ts []buildTarget
		for _, p := range pairs {
			dst := p.Orig
			if which == "patched" {
				dst = p.Patched
			}
			ts = append(ts, buildTarget{src: p.Source, make: strings.TrimSuffix(p.Source, ".c") + ".o", dst: dst})
		}
		for _, a := range asm {
			s := strings.TrimSuffix(a, ".S") + ".s"
			ts = append(ts, buildTarget{src: a, make: s, dst: filepath.Join(outDir, which, s)})
		}
		return ts
	}
	results = targets("orig", pairs)

	if err := tr.buildTargets(ctx, v, results, "orig", log); err != nil {
		return nil, err
	}
	// kbuild's records of the pristine compile: the object each unit
	// belongs to, and the headers it read. A unit there only for a
	// header it turns out not to read is not compiled again.
	read := map[string][]string{}
	kept := pairs[:0]
	for _, p := range pairs {
		p.Object = recordedObject(v.base(), p.Source)
		d, ok := readDeps(v.base(), p.Source)
		if ok {
			read[p.Source] = d
		}
		for _, h := range existing {
			if slices.Contains(d, h) {
				p.Headers = append(p.Headers, h)
			}
		}
		if !touchedUnit[p.Source] && ok && len(p.Headers) == 0 {
			fmt.Fprintf(log, "kbuild: %s does not read %s (its .o.cmd record); not compiled again\n", p.Source, strings.Join(existing, ", "))
			continue
		}
		kept = append(kept, p)
	}
	pairs = kept
	for _, a := range asm {
		if d, ok := readDeps(v.base(), a); ok {
			read[a] = d
		}
	}
	// Records of a base-patched tree describe that tree, not the
	// packaged one the cache keeps them for.
	if len(absBase) == 0 {
		if err := v.withTree(ctx, log, func() error {
			deps := tr.loadRecords(unitDepsName)
			maps.Copy(deps.Deps, read)
			return tr.saveRecords(unitDepsName, deps)
		}); err != nil {
			return nil, fmt.Errorf("build objects: save dependency records: %w", err)
		}
	}

	if err := v.apply(ctx, absPatches, "", log); err != nil {
		return nil, fmt.Errorf("build objects: %w", err)
	}
	for _, rel := range incNames {
		if err := v.writeFile(rel, tr.Includes[filepath.Base(rel)]); err != nil {
			return nil, fmt.Errorf("build objects: %w", err)
		}
	}
	if err := tr.buildTargets(ctx, v, targets("patched", pairs), "patched", log); err != nil {
		return nil, err
	}
	var changedAsm []string
	for _, a := range asm {
		s := strings.TrimSuffix(a, ".S") + ".s"
		before, err1 := asmText(filepath.Join(outDir, "orig", s))
		after, err2 := asmText(filepath.Join(outDir, "patched", s))
		if err := errors.Join(err1, err2); err != nil {
			return nil, fmt.Errorf("build objects: compare %s: %w", a, err)
		}
		if !bytes.Equal(before, after) {
			changedAsm = append(changedAsm, a)
		}
	}
	if len(changedAsm) > 0 {
		return nil, &AssemblyChangedError{Headers: existing, Units: changedAsm}
	}
	if len(pairs) == 0 {
		return nil, fmt.Errorf("build objects: %s changes the text of no assembly unit and is read by no C unit of this kernel configuration, so the patches change no code of kernel %s: %w",
			strings.Join(existing, ", "), tr.Target.Release, ErrNoUnits)
	}
	return pairs, nil
}

// ErrNoUnits is wrapped by BuildPair's error when the patches change
// only headers that no unit of this configuration reads.
var ErrNoUnits = errors.New("no unit to build")

// ErrAssemblyChanged is wrapped by *AssemblyChangedError.
var ErrAssemblyChanged = errors.New("assembly changed")

// AssemblyChangedError refuses a header change that changes what an
// assembly unit assembles: a live patch replaces C functions only.
type AssemblyChangedError struct {
	Headers []string // the changed headers
	Units   []string // assembly units whose preprocessed text differs
}

func (e *AssemblyChangedError) Error() string {
	return fmt.Sprintf("build objects: the change to %s alters assembly code in %s (its preprocessed text differs); a live patch replaces C functions only, so this cannot be live patched",
		strings.Join(e.Headers, ", "), strings.Join(e.Units, ", "))
}

func (e *AssemblyChangedError) Unwrap() error { return ErrAssemblyChanged }

// buildTarget is one make target of a build: a unit's object (or, for an
// assembly unit, its preprocessed text) and where to copy it.
type buildTarget struct {
	src  string // the unit, relative to the tree
	make string // make's target, relative to the tree: DIR/FILE.o or DIR/FILE.s
	dst  string
}

// buildTargets compiles targets with one make run, as many jobs as CPUs,
// and copies each result to its dst. Progress goes to log and to the
// tree's Progress writer.
func (tr *Tree) buildTargets(ctx context.Context, v *view, targets []buildTarget, which string, log io.Writer) error {
	// make must compile, not trust timestamps
	if err := v.remove(ctx, targetFiles(targets)); err != nil {
		return fmt.Errorf("compile (%s): %w", which, err)
	}
	args := []string{"-j" + strconv.Itoa(runtime.NumCPU()), "KCFLAGS=" + PatchCFLAGS}
	var names []string
	for _, t := range targets {
		args = append(args, t.make)
		names = append(names, t.src)
	}
	start := time.Now()
	fmt.Fprintf(log, "kbuild: compiling %s (%s)\n", summarize(names), which)
	var tee io.Writer
	if len(targets) > 1 {
		out := log
		if tr.Progress != nil {
			out = tr.Progress
		}
		tee = &progressWriter{out: out, which: which, total: len(targets), start: start, last: start}
	}
	out, err := v.run(ctx, tee, "make", args...)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("compile %s (%s): %w", summarize(names), which, ctx.Err())
		}
		return fmt.Errorf("compile %s (%s) failed:%s", summarize(names), which, compileErrors(out))
	}
	for _, t := range targets {
		obj := v.path(t.make)
		if _, err := os.Stat(obj); err != nil {
			return fmt.Errorf("compile %s (%s): make made no object; is it built into this kernel (see its Makefile and the .config)?%s",
				t.src, which, tail(out, 6))
		}
		if err := copyFile(obj, t.dst); err != nil {
			return fmt.Errorf("compile %s (%s): copy object: %w", t.src, which, err)
		}
	}
	fmt.Fprintf(log, "kbuild: compiled %d object(s) (%s) in %.1fs\n", len(targets), which, time.Since(start).Seconds())
	return nil
}

// summarize names a list of units, shortened when it is long.
func summarize(names []string) string {
	if len(names) <= 6 {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:4], ", "), len(names)-4)
}

// targetFiles are the results and kbuild records of targets, relative
// to the tree.
func targetFiles(targets []buildTarget) []string {
	var files []string
	for _, t := range targets {
		files = append(files, t.make, filepath.Join(filepath.Dir(t.make), "."+filepath.Base(t.make)+".cmd"))
	}
	return files
}

// removeTargets deletes the shared tree's results and kbuild records for
// targets, so that neither a stale pristine object nor a patched one
// survives there after an in-place build.
func (tr *Tree) removeTargets(targets []buildTarget) {
	for _, f := range targetFiles(targets) {
		_ = os.Remove(filepath.Join(tr.Dir, f))
	}
}

// BuildModule builds the out-of-tree kernel module whose Kbuild file and
// sources are in dir against the target's headers
// (`make -C Headers M=dir modules`). The .ko files are left in dir.
func (t Target) BuildModule(ctx context.Context, dir string, log io.Writer) error {
	if log == nil {
		log = io.Discard
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("build module: %w", err)
	}
	if _, err := os.Stat(filepath.Join(t.Headers, "Makefile")); err != nil {
		return fmt.Errorf("build module: no kernel headers at %s; run `make setup`", t.Headers)
	}
	start := time.Now()
	fmt.Fprintf(log, "kbuild: building module in %s against %s\n", abs, t.Headers)
	out, err := run(ctx, abs, "make", "-C", t.Headers, "M="+abs, "-j"+strconv.Itoa(runtime.NumCPU()), "modules")
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("build module in %s: %w", abs, ctx.Err())
		}
		return fmt.Errorf("build module in %s failed:%s", abs, compileErrors(out))
	}
	fmt.Fprintf(log, "kbuild: module built in %.1fs\n", time.Since(start).Seconds())
	return nil
}
