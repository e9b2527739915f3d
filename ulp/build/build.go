package build

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/livefix/livefix/elfobj"
	"github.com/livefix/livefix/objdiff"
	"github.com/livefix/livefix/ulp"
)

// Config describes one patch build.
type Config struct {
	// Src is the source tree; it is never modified.
	Src string
	// Patch is a unified diff applied with patch -p1 in the tree's root.
	Patch string
	// Build is the shell command that builds the tree (run in its root).
	Build string
	// Target is the built executable or shared library, relative to the
	// tree's root: the patch is for the binary the unpatched tree builds.
	Target string
	// TargetBinary, instead of Target, is the production binary (stripped
	// or not) the patch is for: the build only shows livefix how each
	// source is compiled; the patch is keyed to this file's build-id and
	// checked against its code.
	TargetBinary string
	// DebugFile is TargetBinary's separate debug file; if empty it is
	// looked up by build-id and .gnu_debuglink (ulp.DebugRoots).
	DebugFile string
	// Name and Level of the patch; Name defaults to the patch file's base
	// name without extension, Level to 1.
	Name  string
	Level int
	// WorkDir receives the two build trees (orig/ and patched/) and is
	// kept; if empty a temporary directory is used and removed.
	WorkDir string
	// Log receives the build output; nil discards it.
	Log io.Writer
}

// UnitDiff is the diff of one changed object.
type UnitDiff struct {
	Object    string            `json:"object"`
	InTarget  bool              `json:"in_target"`
	ChangeSet objdiff.ChangeSet `json:"changes"`
}

// Result is what Build produced.
type Result struct {
	Patch *ulp.Patch
	Diffs []UnitDiff
	// OrigTarget is the target built from the unpatched tree (the binary
	// whose running copies the patch applies to); empty once a temporary
	// WorkDir was removed, or with TargetBinary.
	OrigTarget string
	// SymbolSource says where the target's symbols came from.
	SymbolSource string
}

// RefusedError lists the changes that cannot be live patched.
type RefusedError struct {
	Refused []string
}

func (e *RefusedError) Error() string {
	return "cannot live patch: " + strings.Join(e.Refused, "; ")
}

// ErrNoChange: the patch changes no code of the target.
var ErrNoChange = errors.New("the patch changes no code of the target")

// Build runs both builds and makes the patch.
func Build(ctx context.Context, c Config) (*Result, error) {
	if c.Src == "" || c.Patch == "" || c.Build == "" || (c.Target == "") == (c.TargetBinary == "") {
		return nil, errors.New("build: source tree, patch, build command and one of target (in the tree) or target binary are required")
	}
	if c.TargetBinary != "" {
		abs, err := filepath.Abs(c.TargetBinary)
		if err != nil {
			return nil, fmt.Errorf("target binary: %w", err)
		}
		if _, err := os.Stat(abs); err != nil {
			return nil, fmt.Errorf("target binary: %w", err)
		}
		c.TargetBinary = abs
	} else if c.DebugFile != "" {
		return nil, errors.New("build: a debug file goes with a target binary")
	}
	src, err := filepath.Abs(c.Src)
	if err != nil {
		return nil, fmt.Errorf("source tree: %w", err)
	}
	if st, err := os.Stat(src); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("source tree %s is not a directory", c.Src)
	}
	patchFile, err := filepath.Abs(c.Patch)
	if err != nil {
		return nil, fmt.Errorf("patch: %w", err)
	}
	if _, err := os.Stat(patchFile); err != nil {
		return nil, fmt.Errorf("patch: %w", err)
	}
	if c.Target != "" && (filepath.IsAbs(c.Target) || strings.HasPrefix(filepath.Clean(c.Target), "..")) {
		return nil, fmt.Errorf("target %s must be a path inside the build tree", c.Target)
	}
	if c.Name == "" {
		c.Name = strings.TrimSuffix(filepath.Base(c.Patch), filepath.Ext(c.Patch))
	}
	if !ulp.ValidName(c.Name) {
		return nil, fmt.Errorf("patch name %q: use letters, digits, '.', '_', '+', '-' (set it with --name)", c.Name)
	}
	if c.Level == 0 {
		c.Level = 1
	}
	log := c.Log
	if log == nil {
		log = io.Discard
	}
	work := c.WorkDir
	if work == "" {
		if work, err = os.MkdirTemp("", "livefix-build-"); err != nil {
			return nil, fmt.Errorf("work directory: %w", err)
		}
		defer os.RemoveAll(work)
	} else {
		if work, err = filepath.Abs(work); err != nil {
			return nil, err
		}
		for _, d := range []string{"orig", "patched", "wrap"} {
			os.RemoveAll(filepath.Join(work, d))
		}
		if err := os.MkdirAll(work, 0o755); err != nil {
			return nil, fmt.Errorf("work directory: %w", err)
		}
	}
	wrap, err := writeWrapper(filepath.Join(work, "wrap"))
	if err != nil {
		return nil, err
	}
	trees := map[string]string{"orig": filepath.Join(work, "orig"), "patched": filepath.Join(work, "patched")}
	for _, t := range []string{"orig", "patched"} {
		if err := run(ctx, log, "", "cp", "-a", src+"/.", trees[t]); err != nil {
			return nil, fmt.Errorf("copy source tree: %w", err)
		}
		if err := removeBuilt(trees[t]); err != nil {
			return nil, err
		}
	}
	if err := run(ctx, log, trees["patched"], "patch", "-p1", "--batch", "--forward", "--no-backup-if-mismatch", "-i", patchFile); err != nil {
		return nil, fmt.Errorf("apply %s to a copy of %s: %w", c.Patch, c.Src, err)
	}
	// Both trees build at the same time (each with its own log, written
	// out in order afterwards): on a multi-core host the patch takes the
	// time of one build.
	objs := map[string]map[string]compileJob{}
	var logs [2]bytes.Buffer
	var jobs [2][]compileJob
	var errs [2]error
	var wg sync.WaitGroup
	for i, t := range []string{"orig", "patched"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fmt.Fprintf(&logs[i], "livefix-build: building %s tree\n", t)
			jobs[i], errs[i] = buildTree(ctx, &logs[i], wrap, trees[t], src, c.Build, c.TargetBinary != "")
		}()
	}
	wg.Wait()
	for i, t := range []string{"orig", "patched"} {
		log.Write(logs[i].Bytes())
		if errs[i] != nil {
			return nil, fmt.Errorf("build of the %s tree: %w", t, errs[i])
		}
		objs[t] = map[string]compileJob{}
		for _, j := range jobs[i] {
			objs[t][j.key] = j
		}
	}
	targetPath := c.TargetBinary
	if targetPath == "" {
		targetPath = filepath.Join(trees["orig"], c.Target)
	}
	tf, err := ulp.OpenTarget(targetPath, c.DebugFile)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(log, "livefix-build: target %s (build-id %x), symbols from %s\n", targetPath, tf.BuildID, tf.Symbols)
	tname := c.Target
	if tname == "" {
		tname = filepath.Base(c.TargetBinary)
	}
	p := &ulp.Patch{Name: c.Name, Level: c.Level, Target: ulp.Target{BuildID: hex.EncodeToString(tf.BuildID), Path: tname, Soname: soname(targetPath)}}
	res := &Result{Patch: p, SymbolSource: tf.Symbols}
	if c.WorkDir != "" && c.TargetBinary == "" {
		res.OrigTarget = targetPath
	}
	orig, err := indexOrig(trees["orig"], objs["orig"])
	if err != nil {
		return nil, err
	}
	var refused []string
	// Units by source file: a file compiled several ways (libtool's PIC
	// and non-PIC objects, one source built into two programs) has one
	// variant per way; the one whose code is in the target is used.
	type variant struct {
		job compileJob
		u   *ulp.Unit
		cs  objdiff.ChangeSet
		in  bool
		bad []ulp.Mismatch
	}
	bySrc := map[string][]*variant{}
	var srcs []string
	keys := make([]string, 0, len(objs["patched"]))
	for k := range objs["patched"] {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		pj := objs["patched"][k]
		oj, ok := objs["orig"][k]
		if !ok {
			refused = append(refused, pj.src+": a new source file or a new way of compiling it; put new code into an existing source file")
			continue
		}
		a, errA := os.ReadFile(filepath.Join(trees["orig"], oj.obj))
		b, errB := os.ReadFile(filepath.Join(trees["patched"], pj.obj))
		if errA != nil || errB != nil {
			return nil, fmt.Errorf("object of %s: %w", pj.src, errors.Join(errA, errB))
		}
		if bytes.Equal(a, b) {
			continue
		}
		if pj.lang == "c++" {
			refused = append(refused, pj.src+": C++ translation units cannot be live patched (exceptions and .eh_frame of patched code are not supported); only C sources")
			continue
		}
		u, cs, err := diffObject(pj.src, a, b)
		if err != nil {
			var re *objdiff.RefusedError
			if errors.As(err, &re) {
				for _, r := range re.Refused {
					refused = append(refused, pj.src+": "+r.Symbol+": "+r.Reason)
				}
				continue
			}
			return nil, err
		}
		if u == nil {
			continue // no functional change
		}
		funcs, defs := globalDefs(a)
		v := &variant{job: oj, u: u, cs: cs}
		if v.in, v.bad, err = tf.Bind(u, funcs, defs, orig.lookup(oj.key)); err != nil {
			return nil, err
		}
		if len(bySrc[pj.src]) == 0 {
			srcs = append(srcs, pj.src)
		}
		bySrc[pj.src] = append(bySrc[pj.src], v)
	}
	// Several variants may match the target's code (zlib's Makefile
	// compiles each source for the static and for the shared library; a
	// function touching no preemptible symbol is the same either way).
	// The one compiled the way the target's code is must be used: its new
	// code reaches exported symbols as the target's does (through the
	// GOT, so interposition is kept, in a shared library).
	shared := sharedLibrary(targetPath)
	for _, s := range srcs {
		var use *variant
		var inBad []*variant
		for _, v := range bySrc[s] {
			if v.in && len(v.bad) == 0 {
				if use == nil || isPIC(use.job.args) != shared && isPIC(v.job.args) == shared {
					use = v
				}
			} else if v.in && len(v.bad) > 0 {
				inBad = append(inBad, v)
			}
		}
		switch {
		case use != nil:
			res.Diffs = append(res.Diffs, UnitDiff{Object: s, InTarget: true, ChangeSet: use.cs})
			p.Units = append(p.Units, *use.u)
		case len(inBad) > 0:
			for _, m := range inBad[0].bad {
				refused = append(refused, fmt.Sprintf("%s: %s", s, m))
			}
		default:
			res.Diffs = append(res.Diffs, UnitDiff{Object: s, InTarget: false, ChangeSet: bySrc[s][0].cs})
			fmt.Fprintf(log, "livefix-build: %s changed but is not part of %s; skipped\n", s, tname)
		}
	}
	if len(refused) > 0 {
		return res, &RefusedError{Refused: refused}
	}
	if len(p.Units) == 0 {
		return res, fmt.Errorf("%s: %w", c.Patch, ErrNoChange)
	}
	if err := p.Validate(); err != nil {
		return res, err
	}
	return res, nil
}

// diffObject diffs one object; nil unit means no functional change.
func diffObject(name string, a, b []byte) (*ulp.Unit, objdiff.ChangeSet, error) {
	fa, err := elfobj.Read(a)
	if err != nil {
		return nil, objdiff.ChangeSet{}, fmt.Errorf("original %s: %w", name, err)
	}
	fb, err := elfobj.Read(b)
	if err != nil {
		return nil, objdiff.ChangeSet{}, fmt.Errorf("patched %s: %w", name, err)
	}
	for _, s := range fb.Sections {
		if strings.HasPrefix(s.Name, ".gnu.lto_") {
			return nil, objdiff.ChangeSet{}, fmt.Errorf("%s holds LTO bytecode; build without -flto", name)
		}
	}
	res, err := objdiff.Diff(fa, fb, objdiff.Options{Fentry: objdiff.FentryIgnored})
	if err != nil {
		return nil, objdiff.ChangeSet{}, fmt.Errorf("diff %s: %w", name, err)
	}
	if err := res.Err(); errors.Is(err, objdiff.ErrNoFunctionalChange) {
		return nil, res.ChangeSet, nil
	} else if err != nil {
		return nil, res.ChangeSet, err
	}
	out, err := res.Output.Write()
	if err != nil {
		return nil, res.ChangeSet, fmt.Errorf("write included parts of %s: %w", name, err)
	}
	u := &ulp.Unit{Object: name, File: fileSymbol(fa), ELF: out}
	rels := fa.RelocSections()
	for _, f := range res.Funcs {
		uf := ulp.Func{Name: f.Name, OrigName: f.OrigName, Local: f.Local}
		uf.Code, uf.Holes, uf.Relax = origCode(fa, rels, f.OrigName)
		u.Funcs = append(u.Funcs, uf)
	}
	for _, e := range res.Externals {
		u.Externs = append(u.Externs, ulp.Extern{Name: e.Name, Local: e.Local, Func: e.Func})
	}
	return u, res.ChangeSet, nil
}

// origCode returns the machine code of function name in f with the
// bytes its relocations fill in zeroed, where those are, and which of
// them are GOT loads the linker may have relaxed (ulp.Relax).
func origCode(f *elfobj.File, rels map[*elfobj.Section][]*elfobj.Section, name string) ([]byte, [][2]uint32, []ulp.Relax) {
	var sym *elfobj.Symbol
	for _, s := range f.Symbols {
		if s.Name == name && s.Type == elf.STT_FUNC && s.Section != nil {
			sym = s
			break
		}
	}
	if sym == nil || sym.Section.Type == elf.SHT_NOBITS || sym.Value+sym.Size > uint64(len(sym.Section.Data)) {
		return nil, nil, nil
	}
	code := bytes.Clone(sym.Section.Data[sym.Value : sym.Value+sym.Size])
	var holes [][2]uint32
	var relax []ulp.Relax
	for _, rs := range rels[sym.Section] {
		for _, r := range rs.Relocs {
			n := uint64(4)
			switch r.Type {
			case elf.R_X86_64_64, elf.R_X86_64_PC64, elf.R_X86_64_DTPOFF64, elf.R_X86_64_TPOFF64, elf.R_X86_64_GOTOFF64:
				n = 8
			case elf.R_X86_64_NONE:
				continue
			}
			if r.Offset < sym.Value || r.Offset+n > sym.Value+sym.Size {
				continue
			}
			off := r.Offset - sym.Value
			clear(code[off : off+n])
			holes = append(holes, [2]uint32{uint32(off), uint32(n)})
			switch r.Type {
			case elf.R_X86_64_GOTPCRELX, elf.R_X86_64_REX_GOTPCRELX:
				relax = append(relax, ulp.Relax{Off: uint32(off), REX: r.Type == elf.R_X86_64_REX_GOTPCRELX})
			}
		}
	}
	return code, holes, relax
}

// globalDefs lists the global functions an object defines, and all its
// global definitions (functions and data).
func globalDefs(obj []byte) (funcs, defs []string) {
	f, err := elfobj.Read(obj)
	if err != nil {
		return nil, nil
	}
	for _, s := range f.Symbols {
		switch s.Type {
		case elf.STT_FUNC, elf.STT_OBJECT, elf.STT_TLS, elf.STT_GNU_IFUNC:
		default:
			continue
		}
		if s.Bind != elf.STB_LOCAL && s.Section != nil && s.Name != "" {
			defs = append(defs, s.Name)
		}
		if s.Type == elf.STT_FUNC && s.Bind != elf.STB_LOCAL && s.Section != nil {
			funcs = append(funcs, s.Name)
		}
	}
	return funcs, defs
}

func fileSymbol(f *elfobj.File) string {
	for _, s := range f.Symbols {
		if s.Type == elf.STT_FILE {
			return s.Name
		}
	}
	return ""
}

// sharedLibrary: path is a shared library (not an executable, PIE or not).
func sharedLibrary(path string) bool {
	f, err := elf.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	if f.Type != elf.ET_DYN {
		return false
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false
		}
	}
	return true
}

// isPIC: the compile options make position-independent code for a
// shared library (-fPIC or -fpic, as the last of the -f[no-]pic/pie
// options).
func isPIC(args []string) bool {
	pic := false
	for _, a := range args {
		switch a {
		case "-fPIC", "-fpic":
			pic = true
		case "-fno-PIC", "-fno-pic", "-fPIE", "-fpie", "-fno-PIE", "-fno-pie":
			pic = false
		}
	}
	return pic
}

func soname(path string) string {
	f, err := elf.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if s, err := f.DynString(elf.DT_SONAME); err == nil && len(s) > 0 {
		return s[0]
	}
	return ""
}

func run(ctx context.Context, log io.Writer, dir, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = io.MultiWriter(log, &buf), io.MultiWriter(log, &buf)
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w: %s", name, err, strings.TrimSpace(buf.String()))
	}
	return nil
}

// origIndex holds the functions of every object compiled from the
// unpatched tree, for the check of the target functions a patch calls.
type origIndex struct {
	// byKey: compile key -> function name -> its code (statics included).
	byKey map[string]map[string]ulp.Func
	// globals: function name -> code of each global definition.
	globals map[string][]ulp.Func
}

func indexOrig(tree string, jobs map[string]compileJob) (*origIndex, error) {
	ix := &origIndex{byKey: map[string]map[string]ulp.Func{}, globals: map[string][]ulp.Func{}}
	for k, j := range jobs {
		if j.lang == "c++" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(tree, j.obj))
		if err != nil {
			return nil, fmt.Errorf("object of %s: %w", j.src, err)
		}
		f, err := elfobj.Read(b)
		if err != nil {
			return nil, fmt.Errorf("object of %s: %w", j.src, err)
		}
		rels := f.RelocSections()
		m := map[string]ulp.Func{}
		for _, s := range f.Symbols {
			if s.Type != elf.STT_FUNC || s.Section == nil || s.Name == "" {
				continue
			}
			code, holes, relax := origCode(f, rels, s.Name)
			if code == nil {
				continue
			}
			fn := ulp.Func{OrigName: s.Name, Code: code, Holes: holes, Relax: relax}
			m[s.Name] = fn
			if s.Bind != elf.STB_LOCAL {
				ix.globals[s.Name] = append(ix.globals[s.Name], fn)
			}
		}
		ix.byKey[k] = m
	}
	return ix, nil
}

// lookup returns the OrigCode of the unit compiled as key.
func (ix *origIndex) lookup(key string) ulp.OrigCode {
	return func(_ *ulp.Unit, name string, local bool) []ulp.Func {
		own, ok := ix.byKey[key][name]
		if local {
			if ok {
				return []ulp.Func{own}
			}
			return nil
		}
		return ix.globals[name]
	}
}
