package klp

import (
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/livefix/livefix/elfobj"
	"github.com/livefix/livefix/internal/kbuild"
	"github.com/livefix/livefix/objdiff"
)

// Request is a live patch to build from source patches.
type Request struct {
	Name      string
	Level     int  // cumulative level, 1 when zero
	NoReplace bool // stack instead of replacing the loaded patches
	Target    kbuild.Target
	Patches   []string // unified diffs applying with patch -p1 to the kernel tree
	// BasePatches are applied to both sides before Patches (changes the
	// running kernel has that the source package lacks); they are not
	// part of the live patch (kbuild.Tree.BasePatches).
	BasePatches []string
	// ModuleObjects overrides ObjectOf: source file -> module name.
	ModuleObjects map[string]string
	OutDir        string // where NAME.ko and NAME.json go
	// WorkDir keeps the objects and the generated module there; empty
	// means a temporary directory that is removed.
	WorkDir string
	BuildID []byte // override of the expected kernel build-id (tests)
	// Log receives kbuild's and the steps' detailed output (-v).
	Log io.Writer
	// OnStep is called as each step ends: prepare, build orig, build
	// patched, diff, generate, link.
	OnStep func(Step)
	// CVEs and Summary are copied into the manifest.
	CVEs    []string
	Summary string
	// Explain, when set, receives each touched file's diff result as soon
	// as it is computed, refused or not (livefix-build kernel --explain).
	Explain func(source string, res *objdiff.Result)
	// MaxHeaderUnits limits how many translation units a changed header
	// may bring into the build (kbuild.DefaultMaxHeaderUnits when zero).
	MaxHeaderUnits int
	// Progress, when not nil, receives progress lines of long compiles.
	Progress io.Writer
}

// FromPatches builds a live patch module from source patches: it prepares
// the cached kernel tree, compiles the files the patches touch before and
// after, diffs each pair, decides which kernel object each file belongs
// to, and calls Build. A refused change fails with an error wrapping
// *objdiff.RefusedError; patches without a functional change fail with
// objdiff.ErrNoFunctionalChange; unusable arguments wrap ErrBadInput.
// No module is written in those cases.
func FromPatches(ctx context.Context, req Request) (*Manifest, error) {
	start := time.Now()
	log := req.Log
	if log == nil {
		log = io.Discard
	}
	var steps []Step
	var mu sync.Mutex
	emit := func(s Step) {
		mu.Lock()
		steps = append(steps, s)
		mu.Unlock()
		if req.OnStep != nil {
			req.OnStep(s)
		}
	}
	if !nameRE.MatchString(req.Name) {
		return nil, fmt.Errorf("patch name %q: use 1 to 55 letters, digits and underscores, not starting with a digit (it becomes the module name): %w", req.Name, ErrBadInput)
	}
	if len(req.Patches) == 0 {
		return nil, fmt.Errorf("no patch given: %w", ErrBadInput)
	}
	var digests []PatchDigest
	for _, p := range req.Patches {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("read patch: %w: %w", err, ErrBadInput)
		}
		if _, err := kbuild.TouchedFiles(data); err != nil {
			return nil, fmt.Errorf("patch %s: %w: %w", p, err, ErrBadInput)
		}
		sum := sha256.Sum256(data)
		digests = append(digests, PatchDigest{File: filepath.Base(p), SHA256: hex.EncodeToString(sum[:])})
	}

	for _, p := range req.BasePatches {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("read base patch: %w: %w", err, ErrBadInput)
		}
		if _, err := kbuild.TouchedFiles(data); err != nil {
			return nil, fmt.Errorf("base patch %s: %w: %w", p, err, ErrBadInput)
		}
	}

	t := time.Now()
	tree, err := kbuild.Prepare(ctx, req.Target, log)
	if err != nil {
		return nil, err
	}
	// The tree must build the target kernel's code: same source version,
	// the same config after olddefconfig (and, below, the same compiler).
	if err := tree.Check(ctx, log); err != nil {
		return nil, err
	}
	emit(Step{Name: "prepare", Seconds: time.Since(t).Seconds(), Detail: tree.Dir})

	tree.Includes = CompatHeaders()
	tree.BasePatches = req.BasePatches
	tree.MaxHeaderUnits, tree.Progress = req.MaxHeaderUnits, req.Progress
	objDir := req.WorkDir
	if objDir == "" {
		d, err := os.MkdirTemp("", "livefix-objs-")
		if err != nil {
			return nil, fmt.Errorf("work dir: %w", err)
		}
		defer os.RemoveAll(d)
		objDir = d
	}
	t = time.Now()
	w := &stepWatcher{out: log, start: t, emit: emit}
	pairs, err := tree.BuildPair(ctx, req.Patches, filepath.Join(objDir, "objects"), w)
	if err != nil {
		if strings.Contains(err.Error(), "apply ") || errors.Is(err, kbuild.ErrPatch) || strings.Contains(err.Error(), "only changes to .c files") || strings.Contains(err.Error(), "patches may only change existing") || errors.Is(err, kbuild.ErrTooManyUnits) {
			return nil, fmt.Errorf("%w: %w", err, ErrBadInput)
		}
		var asmErr *kbuild.AssemblyChangedError
		if errors.As(err, &asmErr) {
			re := &objdiff.RefusedError{}
			for _, u := range asmErr.Units {
				re.Refused = append(re.Refused, objdiff.Refusal{Symbol: u,
					Reason: "assembly changed by " + strings.Join(asmErr.Headers, ", ") + " (a live patch replaces C functions only)"})
			}
			return nil, fmt.Errorf("%w: %w", err, re)
		}
		if errors.Is(err, kbuild.ErrNoUnits) {
			return nil, fmt.Errorf("%w: %w", err, objdiff.ErrNoFunctionalChange)
		}
		return nil, err
	}
	if err := tree.CheckCompiler(ctx, pairs[0].Orig); err != nil {
		return nil, err
	}
	var names []string
	for _, p := range pairs {
		names = append(names, p.Source)
	}
	emit(Step{Name: "build patched", Seconds: time.Since(w.origDone(t)).Seconds(), Detail: strings.Join(names, ", ")})

	t = time.Now()
	objects, err := diffPairsExplained(ctx, tree.Dir, filepath.Dir(req.Target.Headers), pairs, req.ModuleObjects, req.Explain)
	if err != nil {
		return nil, err
	}
	emit(Step{Name: "diff", Seconds: time.Since(t).Seconds(), Detail: fmt.Sprintf("%d file(s)", len(pairs))})

	spec := Spec{
		Name: req.Name, Level: req.Level, NoReplace: req.NoReplace, Target: req.Target,
		Objects: objects, Patches: digests, BuildID: req.BuildID, OnStep: emit,
	}
	if req.WorkDir != "" {
		spec.WorkDir = filepath.Join(req.WorkDir, "module")
	}
	m, err := build(ctx, &spec, req.OutDir, log)
	if err != nil {
		return nil, err
	}
	mu.Lock()
	m.Steps = append([]Step(nil), steps...)
	mu.Unlock()
	m.BuildSeconds = time.Since(start).Seconds()
	m.CVEs, m.Summary = req.CVEs, req.Summary
	if err := writeManifest(filepath.Join(req.OutDir, req.Name+".json"), m); err != nil {
		return nil, err
	}
	return m, nil
}

// diffPairs diffs every object pair and groups the changed units by
// kernel object. Refusals anywhere stop it; units without a functional
// change are left out, and if no unit changed it fails with
// objdiff.ErrNoFunctionalChange.
func diffPairs(ctx context.Context, treeDir, modulesDir string, pairs []kbuild.ObjectPair, override map[string]string) ([]Object, error) {
	return diffPairsExplained(ctx, treeDir, modulesDir, pairs, override, nil)
}

// diffPairsExplained is diffPairs that also hands each result to explain
// (when not nil) before judging it.
func diffPairsExplained(ctx context.Context, treeDir, modulesDir string, pairs []kbuild.ObjectPair, override map[string]string, explain func(string, *objdiff.Result)) ([]Object, error) {
	var refusals, removed []string
	var firstRefused error
	var objects []Object
	index := map[string]int{}
	for _, p := range pairs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		orig, err := elfobj.Open(p.Orig)
		if err != nil {
			return nil, fmt.Errorf("diff %s: %w", p.Source, err)
		}
		patched, err := elfobj.Open(p.Patched)
		if err != nil {
			return nil, fmt.Errorf("diff %s: %w", p.Source, err)
		}
		// A kernel live patch redirects functions through ftrace: every
		// changed function needs an ftrace entry, also in files compiled
		// without any (kernel/trace, which does not trace itself), where
		// the automatic mode would assume a userspace object.
		res, err := objdiff.Diff(orig, patched, objdiff.Options{Fentry: objdiff.FentryRequired})
		if err != nil {
			return nil, fmt.Errorf("diff %s: %w", p.Source, err)
		}
		if explain != nil {
			explain(p.Source, res)
		}
		switch err := res.Err(); {
		case errors.Is(err, objdiff.ErrNoFunctionalChange):
			removed = append(removed, removedFuncs(p.Source, orig, patched)...)
			continue
		case err != nil:
			var re *objdiff.RefusedError
			if errors.As(err, &re) {
				for _, r := range re.Refused {
					refusals = append(refusals, fmt.Sprintf("%s: %s: %s", p.Source, r.Symbol, r.Reason))
				}
			}
			if firstRefused == nil {
				firstRefused = err
			}
			continue
		}
		obj, err := objectOfPair(treeDir, modulesDir, p, override)
		if err != nil {
			return nil, err
		}
		i, ok := index[obj]
		if !ok {
			i = len(objects)
			index[obj] = i
			objects = append(objects, Object{Name: obj})
		}
		objects[i].Units = append(objects[i].Units, Unit{Source: p.Source, Orig: p.Orig, Result: res})
	}
	if firstRefused != nil {
		return nil, &BuildRefusedError{Lines: refusals, Err: firstRefused}
	}
	if len(objects) == 0 {
		if len(removed) > 0 {
			return nil, fmt.Errorf("the patches change no function; they only remove %s, which a live patch leaves in place (no code the patches change calls it): %w",
				strings.Join(removed, ", "), objdiff.ErrNoFunctionalChange)
		}
		return nil, fmt.Errorf("the patches change no function (only whitespace, comments or line numbers): %w", objdiff.ErrNoFunctionalChange)
	}
	return objects, nil
}

// BuildRefusedError lists every refused change as "FILE: SYMBOL: REASON";
// it unwraps to the first *objdiff.RefusedError.
type BuildRefusedError struct {
	Lines []string
	Err   error
}

func (e *BuildRefusedError) Error() string {
	return "cannot live patch: " + strings.Join(e.Lines, "; ")
}

func (e *BuildRefusedError) Unwrap() error { return e.Err }

// stepWatcher passes kbuild's log through and notices when the original
// objects are done, to time "build orig" apart from "build patched".
type stepWatcher struct {
	out   io.Writer
	start time.Time
	emit  func(Step)
	mu    sync.Mutex
	done  time.Time
	buf   []byte
}

func (w *stepWatcher) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		line := string(w.buf[:i])
		w.buf = w.buf[i+1:]
		if w.done.IsZero() && strings.HasPrefix(line, "kbuild: compiled") && strings.Contains(line, "(orig)") {
			w.done = time.Now()
			w.emit(Step{Name: "build orig", Seconds: w.done.Sub(w.start).Seconds()})
		}
	}
	w.mu.Unlock()
	return w.out.Write(p)
}

func (w *stepWatcher) origDone(fallback time.Time) time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done.IsZero() {
		return fallback
	}
	return w.done
}

// removedFuncs names the functions of orig that patched no longer has,
// as "FILE: NAME": a change that only removes code is no functional
// change for a live patch, and the message says what was removed.
func removedFuncs(source string, orig, patched *elfobj.File) []string {
	have := map[string]bool{}
	for _, s := range patched.Symbols {
		if s.Type == elf.STT_FUNC {
			have[s.Name] = true
		}
	}
	var out []string
	for _, s := range orig.Symbols {
		if s.Type == elf.STT_FUNC && s.Section != nil && !have[s.Name] {
			out = append(out, source+": "+s.Name)
		}
	}
	return out
}
