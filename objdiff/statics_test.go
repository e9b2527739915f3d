package objdiff

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/livefix/livefix/elfobj"
)

// outputOf compiles a corpus case, diffs it and returns the result with
// its output object written and read back.
func outputOf(t *testing.T, dir string) (*Result, *elfobj.File) {
	t.Helper()
	orig, patched := compileCase(t, dir)
	res, _, _ := diffFiles(t, orig, patched)
	if res.Output == nil {
		t.Fatalf("no output: %+v", res.ChangeSet)
	}
	data, err := res.Output.Write()
	if err != nil {
		t.Fatal(err)
	}
	out, err := elfobj.Read(data)
	if err != nil {
		t.Fatal(err)
	}
	return res, out
}

// TestDyndbgOwnDescriptors checks that a patched function carries its own
// dynamic debug descriptors, in one __dyndbg array, with its jump label
// entries pointing at their keys, and never refers to the running
// kernel's descriptors.
func TestDyndbgOwnDescriptors(t *testing.T) {
	res, out := outputOf(t, "testdata/cases/52-dyndbg-line-shift")
	for _, e := range res.Externals {
		if strings.HasPrefix(e.Name, "__UNIQUE_ID_ddebug") || strings.HasPrefix(e.Name, "__func__") {
			t.Errorf("output refers to the running %s", e.Name)
		}
	}
	var dd *elfobj.Section
	n := 0
	for _, s := range out.Sections {
		if s.Name == "__dyndbg" {
			if dd != nil {
				t.Fatalf("two __dyndbg sections")
			}
			dd = s
		}
	}
	if dd == nil {
		t.Fatal("no __dyndbg section in the output")
	}
	for _, s := range out.Symbols {
		if s.Section == dd && strings.HasPrefix(s.Name, "__UNIQUE_ID_ddebug") {
			n++
		}
	}
	if n != 2 || dd.Len() != 2*56 {
		t.Errorf("__dyndbg holds %d descriptors in %d bytes, want parse_hdr's 2 in 112", n, dd.Len())
	}
	keys := 0
	for _, s := range out.Sections {
		if !s.IsRela() || s.Target == nil || s.Target.Name != "__jump_table" {
			continue
		}
		for _, r := range s.Relocs {
			if r.Offset%16 == 8 {
				keys++
				if r.Sym == nil || r.Sym.Section != dd {
					t.Errorf("jump table key at %#x points at %v, not into the patch's __dyndbg", r.Offset, r.Sym)
				} else if at := int64(r.Sym.Value) + r.Addend; at < 0 || at >= int64(dd.Len()) || at%56 != 41 {
					t.Errorf("jump table key at %#x points at __dyndbg+%d, not at a descriptor's key (+40, branch bit 1)", r.Offset, at)
				}
			}
		}
	}
	if keys != 2 {
		t.Errorf("%d jump table entries, want 2", keys)
	}
}

// TestSpecialStaticsOwnCopy checks that lockdep keys, once-flags and
// ratelimit states used by a patched function are the patch's own and
// never resolved in the running kernel, and that exports are not copied.
func TestSpecialStaticsOwnCopy(t *testing.T) {
	res, out := outputOf(t, "testdata/cases/53-special-statics")
	for _, e := range res.Externals {
		switch b := baseName(e.Name); b {
		case "__key", "__already_done", "_rs", "__func__":
			t.Errorf("output refers to the running %s", e.Name)
		}
	}
	have := map[string]string{}
	for _, s := range out.Symbols {
		if s.Section != nil {
			have[baseName(s.Name)] = s.Section.Name
		}
	}
	for _, b := range []string{"__key", "__already_done", "_rs"} {
		if _, ok := have[b]; !ok {
			t.Errorf("output has no copy of %s", b)
		}
	}
	if !strings.HasPrefix(have["__already_done"], ".data.once") {
		t.Errorf("once-flag copied into %q, want a .data.once section", have["__already_done"])
	}

	_, out = outputOf(t, "testdata/cases/54-exported-changed")
	for _, s := range out.Sections {
		if exportSection(s.Name) || strings.Contains(s.Name, "ksymtab") {
			t.Errorf("output copies export section %s", s.Name)
		}
	}
}

// TestAddressTakenOriginal checks that the stored address of a replaced
// function refers to the original (an undefined symbol the live patch
// resolves), while direct calls go to the included copy.
func TestAddressTakenOriginal(t *testing.T) {
	res, out := outputOf(t, "testdata/cases/61-address-taken-changed")
	var ext *Extern
	for i, e := range res.Externals {
		if e.Name == "handler" {
			ext = &res.Externals[i]
		}
	}
	if ext == nil || !ext.Local || !ext.Func {
		t.Fatalf("externals %+v: want the original handler as a local function", res.Externals)
	}
	var copyName string
	for _, f := range res.Funcs {
		if f.OrigName == "handler" {
			copyName = f.Name
		}
	}
	if copyName == "" || copyName == "handler" {
		t.Fatalf("replaced handler is named %q in the output; want a name apart from the original's", copyName)
	}
	toOrig, toCopy := map[string]int{}, map[string]int{}
	for _, s := range out.Sections {
		if !s.IsRela() || s.Target == nil || !isCode(s.Target) {
			continue
		}
		for _, r := range s.Relocs {
			switch {
			case r.Sym != nil && r.Sym.Name == "handler" && r.Sym.Section == nil:
				toOrig[s.Target.Name]++
			case r.Sym != nil && r.Sym.Name == copyName:
				toCopy[s.Target.Name]++
			}
		}
	}
	if toOrig[".text.kick"] != 1 {
		t.Errorf("kick refers %d times to the original handler, want once (its stored address); all: %v", toOrig[".text.kick"], toOrig)
	}
	if toOrig[".text.run_now"] != 0 {
		t.Errorf("run_now's calls go to the original: %v", toOrig)
	}
	if toCopy[".text.run_now"] == 0 {
		t.Errorf("run_now does not call the included copy: %v", toCopy)
	}
}

// TestFentryRequiredUninstrumented compiles a case without -pg -mfentry,
// as kbuild compiles kernel/trace: the automatic mode takes the object
// for a userspace one and needs no ftrace entry, while a kernel live
// patch (FentryRequired, what klp uses) refuses the changed global
// function and says that the whole file is uninstrumented.
func TestFentryRequiredUninstrumented(t *testing.T) {
	tmp := t.TempDir()
	var objs []*elfobj.File
	for _, name := range []string{"orig", "patched"} {
		out := filepath.Join(tmp, name+".o")
		var flags []string
		for _, f := range corpusFlags {
			if f != "-pg" && f != "-mfentry" {
				flags = append(flags, f)
			}
		}
		args := append(flags, "-o", out, filepath.Join("testdata/cases/02-constant-changed", name+".c"))
		if b, err := exec.Command("gcc", args...).CombinedOutput(); err != nil {
			t.Fatalf("gcc %s: %v\n%s", strings.Join(args, " "), err, b)
		}
		f, err := elfobj.Open(out)
		if err != nil {
			t.Fatal(err)
		}
		objs = append(objs, f)
	}
	auto, err := Diff(objs[0], objs[1], Options{})
	if err != nil {
		t.Fatal(err)
	}
	if auto.Err() != nil {
		t.Errorf("automatic mode: %v, want a patchable change", auto.Err())
	}
	req, err := Diff(objs[0], objs[1], Options{Fentry: FentryRequired})
	if err != nil {
		t.Fatal(err)
	}
	if err := req.Err(); err == nil || !strings.Contains(err.Error(), ReasonNoFentry) || !strings.Contains(err.Error(), "compiled without ftrace instrumentation") {
		t.Errorf("FentryRequired: %v, want no fentry, naming the uninstrumented file", err)
	}
}
