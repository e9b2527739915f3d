package build

import (
	"bufio"
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

	"github.com/livefix/livefix/elfobj"
	"github.com/livefix/livefix/internal/proc"
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
	// tree's root.
	Target string
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
	// WorkDir was removed.
	OrigTarget string
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
	if c.Src == "" || c.Patch == "" || c.Build == "" || c.Target == "" {
		return nil, errors.New("build: source tree, patch, build command and target are all required")
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
	if filepath.IsAbs(c.Target) || strings.HasPrefix(filepath.Clean(c.Target), "..") {
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
	}
	if err := run(ctx, log, trees["patched"], "patch", "-p1", "--batch", "--forward", "--no-backup-if-mismatch", "-i", patchFile); err != nil {
		return nil, fmt.Errorf("apply %s to a copy of %s: %w", c.Patch, c.Src, err)
	}
	objs := map[string][]string{}
	for _, t := range []string{"orig", "patched"} {
		fmt.Fprintf(log, "livefix-build: building %s tree\n", t)
		if objs[t], err = buildTree(ctx, log, wrap, trees[t], src, c.Build); err != nil {
			return nil, fmt.Errorf("build of the %s tree: %w", t, err)
		}
	}
	origTarget := filepath.Join(trees["orig"], c.Target)
	id, err := proc.ReadBuildID(origTarget)
	if err != nil {
		return nil, fmt.Errorf("target %s: %w (link it with --build-id, the default of Debian's gcc)", c.Target, err)
	}
	p := &ulp.Patch{Name: c.Name, Level: c.Level, Target: ulp.Target{BuildID: hex.EncodeToString(id), Path: c.Target, Soname: soname(origTarget)}}
	res := &Result{Patch: p}
	if c.WorkDir != "" {
		res.OrigTarget = origTarget
	}
	var refused []string
	origSet := map[string]bool{}
	for _, o := range objs["orig"] {
		origSet[o] = true
	}
	for _, o := range objs["patched"] {
		if !origSet[o] {
			refused = append(refused, o+": a new object file; put new code into an existing source file")
			continue
		}
		a, errA := os.ReadFile(filepath.Join(trees["orig"], o))
		b, errB := os.ReadFile(filepath.Join(trees["patched"], o))
		if errA != nil || errB != nil {
			return nil, fmt.Errorf("object %s: %w", o, errors.Join(errA, errB))
		}
		if bytes.Equal(a, b) {
			continue
		}
		u, cs, err := diffObject(o, a, b)
		if err != nil {
			var re *objdiff.RefusedError
			if errors.As(err, &re) {
				for _, r := range re.Refused {
					refused = append(refused, o+": "+r.Symbol+": "+r.Reason)
				}
				continue
			}
			return nil, err
		}
		if u == nil {
			continue // no functional change
		}
		in, err := ulp.UnitInTarget(origTarget, u, globalFuncs(a))
		if err != nil {
			return nil, err
		}
		res.Diffs = append(res.Diffs, UnitDiff{Object: o, InTarget: in, ChangeSet: cs})
		if in {
			p.Units = append(p.Units, *u)
		} else {
			fmt.Fprintf(log, "livefix-build: %s changed but is not part of %s; skipped\n", o, c.Target)
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
		uf.Code, uf.Holes = origCode(fa, rels, f.OrigName)
		u.Funcs = append(u.Funcs, uf)
	}
	for _, e := range res.Externals {
		u.Externs = append(u.Externs, ulp.Extern{Name: e.Name, Local: e.Local, Func: e.Func})
	}
	return u, res.ChangeSet, nil
}

// origCode returns the machine code of function name in f with the
// bytes its relocations fill in zeroed, and where those are.
func origCode(f *elfobj.File, rels map[*elfobj.Section][]*elfobj.Section, name string) ([]byte, [][2]uint32) {
	var sym *elfobj.Symbol
	for _, s := range f.Symbols {
		if s.Name == name && s.Type == elf.STT_FUNC && s.Section != nil {
			sym = s
			break
		}
	}
	if sym == nil || sym.Section.Type == elf.SHT_NOBITS || sym.Value+sym.Size > uint64(len(sym.Section.Data)) {
		return nil, nil
	}
	code := bytes.Clone(sym.Section.Data[sym.Value : sym.Value+sym.Size])
	var holes [][2]uint32
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
		}
	}
	return code, holes
}

// globalFuncs lists the global functions an object defines.
func globalFuncs(obj []byte) []string {
	f, err := elfobj.Read(obj)
	if err != nil {
		return nil
	}
	var out []string
	for _, s := range f.Symbols {
		if s.Type == elf.STT_FUNC && s.Bind != elf.STB_LOCAL && s.Section != nil {
			out = append(out, s.Name)
		}
	}
	return out
}

func fileSymbol(f *elfobj.File) string {
	for _, s := range f.Symbols {
		if s.Type == elf.STT_FILE {
			return s.Name
		}
	}
	return ""
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

// wrapperScript is installed as cc and gcc in front of PATH.
const wrapperScript = `#!/bin/sh
# livefix-build compiler wrapper: adds the flags live patching needs and
# records each object file it compiles.
"$LIVEFIX_REAL_CC" "$@" -ffunction-sections -fdata-sections -fno-lto ${LIVEFIX_PREFIX_MAP:+"-ffile-prefix-map=$LIVEFIX_PREFIX_MAP"} || exit $?
compile=0 out= prev=
for a in "$@"; do
	[ "$prev" = "-o" ] && out=$a
	case $a in
	-c) compile=1 ;;
	-o?*) out=${a#-o} ;;
	esac
	prev=$a
done
if [ "$compile" != 1 ]; then
	for a in "$@"; do
		case $a in
		*.c|*.S) echo "livefix-build: warning: $a compiled and linked in one step; its object cannot be diffed (compile with -c)" >&2 ;;
		esac
	done
	exit 0
fi
if [ -n "$out" ]; then
	case $out in /*) ;; *) out=$PWD/$out ;; esac
	echo "$out" >>"$LIVEFIX_OBJLOG"
	exit 0
fi
for a in "$@"; do
	case $a in
	*.c|*.i|*.s|*.S)
		b=${a##*/}
		echo "$PWD/${b%.*}.o" >>"$LIVEFIX_OBJLOG" ;;
	esac
done
`

func writeWrapper(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("compiler wrapper: %w", err)
	}
	for _, n := range []string{"cc", "gcc"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(wrapperScript), 0o755); err != nil {
			return "", fmt.Errorf("compiler wrapper: %w", err)
		}
	}
	return dir, nil
}

// buildTree runs the build command in tree through the wrapper and
// returns the objects it compiled, relative to tree, in build order.
func buildTree(ctx context.Context, log io.Writer, wrap, tree, src, command string) ([]string, error) {
	real := os.Getenv("CC")
	if real == "" || filepath.Base(real) == real {
		name := real
		if name == "" {
			name = "gcc"
		}
		p, err := exec.LookPath(name)
		if err != nil {
			return nil, fmt.Errorf("compiler %s not found: %w", name, err)
		}
		real = p
	}
	objlog := filepath.Join(filepath.Dir(wrap), filepath.Base(tree)+".objects")
	os.Remove(objlog)
	cmd := exec.CommandContext(ctx, "sh", "-c", command)
	cmd.Dir = tree
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = append(os.Environ(),
		"PATH="+wrap+string(os.PathListSeparator)+os.Getenv("PATH"),
		"CC="+filepath.Join(wrap, "cc"),
		"LIVEFIX_REAL_CC="+real,
		"LIVEFIX_OBJLOG="+objlog,
		"LIVEFIX_PREFIX_MAP="+tree+"="+src,
	)
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%q failed in %s (see the build log): %w", command, tree, err)
	}
	f, err := os.Open(objlog)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%q compiled nothing through the wrapper (does it use $CC or cc/gcc from PATH, and was the tree clean?)", command)
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	seen := map[string]bool{}
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rel, err := filepath.Rel(tree, filepath.Clean(sc.Text()))
		if err != nil || strings.HasPrefix(rel, "..") {
			continue // compiled outside the tree
		}
		if !seen[rel] {
			seen[rel] = true
			out = append(out, rel)
		}
	}
	sort.Strings(out)
	return out, sc.Err()
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
