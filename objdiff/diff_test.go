package objdiff

import (
	"bytes"
	"debug/elf"
	"encoding/json"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/livefix/livefix/elfobj"
)

var update = flag.Bool("update", false, "rewrite the expect.json golden files from the engine's output")

// corpusFlags are the flags every corpus case is built with: the kernel's
// code generation as far as it matters to the engine.
var corpusFlags = []string{"-O2", "-ffunction-sections", "-fdata-sections", "-fno-pic", "-pg", "-mfentry",
	"-fno-asynchronous-unwind-tables", "-fno-stack-protector", "-c"}

type expectation struct {
	ChangeSet
	Exit int `json:"exit"`
}

// compileCase builds orig.c and patched.c of a corpus case.
func compileCase(t testing.TB, dir string) (orig, patched string) {
	t.Helper()
	flags := slices.Clone(corpusFlags)
	if b, err := os.ReadFile(filepath.Join(dir, "cflags")); err == nil {
		flags = append(flags, strings.Fields(string(b))...)
	}
	tmp := t.TempDir()
	build := func(name string) string {
		out := filepath.Join(tmp, name+".o")
		args := append(slices.Clone(flags), "-o", out, filepath.Join(dir, name+".c"))
		if b, err := exec.Command("gcc", args...).CombinedOutput(); err != nil {
			t.Fatalf("gcc %s: %v\n%s", strings.Join(args, " "), err, b)
		}
		return out
	}
	return build("orig"), build("patched")
}

func diffFiles(t testing.TB, orig, patched string) (*Result, *elfobj.File, *elfobj.File) {
	t.Helper()
	a, err := elfobj.Open(orig)
	if err != nil {
		t.Fatal(err)
	}
	b, err := elfobj.Open(patched)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Diff(a, b, Options{})
	if err != nil {
		t.Fatalf("diff: %v", err)
	}
	return res, a, b
}

// golden returns the expected change set stored at path, first
// rewriting it from res when -update is given.
func golden(t *testing.T, path string, res *Result) expectation {
	t.Helper()
	if *update {
		b, _ := json.MarshalIndent(expectation{res.ChangeSet, exitCode(res)}, "", "  ")
		if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var want expectation
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return want
}

// goldenText compares got with the file at path, first rewriting the
// file when -update is given.
func goldenText(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs:\n--- got\n%s--- want\n%s", path, got, want)
	}
}

func exitCode(res *Result) int {
	switch {
	case len(res.Refused) > 0:
		return 3
	case res.NoFunctionalChange:
		return 4
	}
	return 0
}

func TestCorpus(t *testing.T) {
	dirs, err := filepath.Glob("testdata/cases/*")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, dir := range dirs {
		if _, err := os.Stat(filepath.Join(dir, "orig.c")); err != nil {
			continue
		}
		n++
		t.Run(filepath.Base(dir), func(t *testing.T) {
			orig, patched := compileCase(t, dir)
			res, a, b := diffFiles(t, orig, patched)
			want := golden(t, filepath.Join(dir, "expect.json"), res)
			var explained bytes.Buffer
			if err := WriteExplanation(&explained, filepath.Base(dir), res); err != nil {
				t.Fatal(err)
			}
			goldenText(t, filepath.Join(dir, "explain.txt"), explained.Bytes())
			got := res.ChangeSet
			check := func(what string, g, w []string) {
				if !slices.Equal(g, w) {
					t.Errorf("%s = %q, want %q", what, g, w)
				}
			}
			check("changed", got.Changed, want.Changed)
			check("new", got.New, want.New)
			check("new_data", got.NewData, want.NewData)
			if got.NoFunctionalChange != want.NoFunctionalChange {
				t.Errorf("no_functional_change = %v, want %v", got.NoFunctionalChange, want.NoFunctionalChange)
			}
			if e := exitCode(res); e != want.Exit {
				t.Errorf("exit = %d, want %d", e, want.Exit)
			}
			if len(got.Refused) != len(want.Refused) {
				t.Errorf("refused = %+v, want %+v", got.Refused, want.Refused)
			} else {
				for i := range got.Refused {
					g, w := got.Refused[i], want.Refused[i]
					if g.Symbol != w.Symbol || !strings.Contains(g.Reason, w.Reason) {
						t.Errorf("refused[%d] = %+v, want symbol %q with a reason containing %q", i, g, w.Symbol, w.Reason)
					}
				}
			}
			if exitCode(res) == 0 {
				checkOutput(t, res, a, b)
			} else if res.Output != nil {
				t.Errorf("an output object was produced although the result is not patchable")
			}
		})
	}
	if n < 25 {
		t.Errorf("corpus has %d cases, want at least 25", n)
	}
}

// checkOutput verifies the extracted object: it writes and reads back,
// defines every changed and new function and every new object, and leaves
// undefined only names the original object knows (defined there or
// itself undefined there) or that the patched object leaves undefined (a
// new call into the rest of the kernel).
func checkOutput(t *testing.T, res *Result, orig, patched *elfobj.File) {
	t.Helper()
	data, err := res.Output.Write()
	if err != nil {
		t.Fatalf("write output: %v", err)
	}
	out, err := elfobj.Read(data)
	if err != nil {
		t.Fatalf("output does not read back: %v", err)
	}
	defined := make(map[string]elf.SymType)
	for _, s := range out.Symbols {
		if s.Section != nil && s.Name != "" {
			defined[s.Name] = s.Type
		}
	}
	for _, f := range res.Funcs {
		if defined[f.Name] != elf.STT_FUNC {
			t.Errorf("output does not define changed function %s", f.Name)
		}
	}
	for _, n := range res.New {
		if defined[n] != elf.STT_FUNC {
			t.Errorf("output does not define new function %s", n)
		}
	}
	for _, n := range res.NewData {
		if _, ok := defined[n]; !ok {
			t.Errorf("output does not define new object %s", n)
		}
	}
	known := make(map[string]bool)
	for _, s := range orig.Symbols {
		known[s.Name] = true
	}
	for _, s := range patched.Symbols {
		if s.Section == nil {
			known[s.Name] = true
		}
	}
	for _, s := range out.Symbols {
		if s.Section == nil && s.Name != "" && !known[s.Name] {
			t.Errorf("output refers to %s, which the original object does not know", s.Name)
		}
		if s.Section == nil && s.Name != "" && defined[s.Name] != 0 {
			t.Errorf("%s is both defined and undefined in the output", s.Name)
		}
	}
	for _, s := range out.Sections {
		if s.IsRela() {
			for _, r := range s.Relocs {
				if r.Sym != nil && r.Sym.Type == elf.STT_SECTION && r.Sym.Section != nil && isCode(r.Sym.Section) && s.Target != nil && isCode(s.Target) {
					// Code may refer to its own section (jump targets) but
					// never through another function's section symbol.
					if r.Sym.Section != s.Target && !strings.HasPrefix(r.Sym.Section.Name, ".altinstr") {
						t.Errorf("%s refers to code section %s by section symbol", s.Name, r.Sym.Section.Name)
					}
				}
			}
		}
	}
	// The system's linker accepts it.
	dir := t.TempDir()
	in := filepath.Join(dir, "out.o")
	if err := os.WriteFile(in, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command("ld", "-r", "-o", filepath.Join(dir, "linked.o"), in).CombinedOutput(); err != nil {
		t.Errorf("ld -r rejects the output: %v\n%s", err, b)
	}
	if b, err := exec.Command("objdump", "-dr", in).CombinedOutput(); err != nil || bytes.Contains(b, []byte("can't")) {
		t.Errorf("objdump rejects the output: %v\n%s", err, b)
	}
}
