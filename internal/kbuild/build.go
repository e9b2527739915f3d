package kbuild

import (
	"context"
	"errors"
	"fmt"
	"io"
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
// Patches may change only existing .c files: a change to a header or
// assembly file would change objects that are not rebuilt here, so it is
// refused rather than silently missed.
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
	var sources, refused []string
	includedBy := map[string][]string{} // translation unit -> touched .c files it includes
	for _, f := range touched {
		if !strings.HasSuffix(f, ".c") {
			refused = append(refused, f)
			continue
		}
		for _, u := range tr.unitsOf(f) {
			if u != f {
				includedBy[u] = append(includedBy[u], f)
			}
			if !slices.Contains(sources, u) {
				sources = append(sources, u)
			}
		}
	}
	if len(refused) > 0 {
		return nil, fmt.Errorf("build objects: patches change %s; only changes to .c files can be built object by object (a header change affects every file that includes it)",
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

	unlock, err := tr.acquire(ctx, log)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := tr.recover(log); err != nil {
		return nil, err
	}
	if !stampIs(filepath.Join(tr.root, preparedName), tr.stamp) {
		return nil, fmt.Errorf("build objects: kernel tree %s is not prepared (was it removed?); call Prepare again", tr.Dir)
	}
	for _, s := range sources {
		if _, err := os.Stat(filepath.Join(tr.Dir, s)); err != nil {
			return nil, fmt.Errorf("build objects: %s is not in the kernel source %s; patches may only change existing files",
				s, tr.Target.Release)
		}
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
	defer tr.removeObjects(sources)

	if err := tr.buildObjects(ctx, sources, "orig", func(i int) string { return pairs[i].Orig }, log); err != nil {
		return nil, err
	}
	for i, s := range sources {
		pairs[i].Object = tr.recordedObject(s)
	}

	// From here on the tree is modified; the marker written by
	// saveAndMark lets anyone revert it, and the deferred revert does.
	var incNames []string
	for name := range tr.Includes {
		if name != filepath.Base(name) || !strings.HasSuffix(name, ".h") {
			return nil, fmt.Errorf("build objects: include %q: want a header file name", name)
		}
		incNames = append(incNames, filepath.Join("include", name))
	}
	slices.Sort(incNames)
	if err := tr.saveAndMark(append(slices.Clone(touched), incNames...)); err != nil {
		return nil, fmt.Errorf("build objects: %w", err)
	}
	defer func() {
		if rerr := tr.revert(); rerr != nil {
			err = errors.Join(err, fmt.Errorf("build objects: %w", rerr))
		}
	}()
	for _, p := range absPatches {
		out, err := run(ctx, tr.Dir, "patch", "-p1", "--batch", "--forward", "--no-backup-if-mismatch", "--reject-file=-", "-i", p)
		if err != nil {
			return nil, fmt.Errorf("build objects: apply %s: %w:%s", p, err, tail(out, 10))
		}
		fmt.Fprintf(log, "kbuild: applied %s\n", p)
	}
	for _, rel := range incNames {
		if err := os.WriteFile(filepath.Join(tr.Dir, rel), tr.Includes[filepath.Base(rel)], 0o644); err != nil {
			return nil, fmt.Errorf("build objects: %w", err)
		}
	}
	if err := tr.buildObjects(ctx, sources, "patched", func(i int) string { return pairs[i].Patched }, log); err != nil {
		return nil, err
	}
	return pairs, nil
}

// buildObjects compiles sources with one make run and copies each object
// to dst(i).
func (tr *Tree) buildObjects(ctx context.Context, sources []string, which string, dst func(int) string, log io.Writer) error {
	tr.removeObjects(sources) // make must compile, not trust timestamps
	args := []string{"-j" + strconv.Itoa(runtime.NumCPU()), "KCFLAGS=" + PatchCFLAGS}
	for _, s := range sources {
		args = append(args, strings.TrimSuffix(s, ".c")+".o")
	}
	start := time.Now()
	fmt.Fprintf(log, "kbuild: compiling %s (%s)\n", strings.Join(sources, ", "), which)
	out, err := run(ctx, tr.Dir, "make", args...)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("compile %s (%s): %w", strings.Join(sources, ", "), which, ctx.Err())
		}
		return fmt.Errorf("compile %s (%s) failed:%s", strings.Join(sources, ", "), which, compileErrors(out))
	}
	for i, s := range sources {
		obj := filepath.Join(tr.Dir, strings.TrimSuffix(s, ".c")+".o")
		if _, err := os.Stat(obj); err != nil {
			return fmt.Errorf("compile %s (%s): make made no object; is it built into this kernel (see its Makefile and the .config)?%s",
				s, which, tail(out, 6))
		}
		if err := copyFile(obj, dst(i)); err != nil {
			return fmt.Errorf("compile %s (%s): copy object: %w", s, which, err)
		}
	}
	fmt.Fprintf(log, "kbuild: compiled %d object(s) (%s) in %.1fs\n", len(sources), which, time.Since(start).Seconds())
	return nil
}

// removeObjects deletes the tree's objects for sources, so that neither a
// stale pristine object nor a patched one survives in the shared tree.
func (tr *Tree) removeObjects(sources []string) {
	for _, s := range sources {
		base := filepath.Join(tr.Dir, strings.TrimSuffix(s, ".c"))
		_ = os.Remove(base + ".o")
		_ = os.Remove(filepath.Join(filepath.Dir(base), "."+filepath.Base(base)+".o.cmd"))
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
