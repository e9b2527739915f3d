package kbuild

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestIncludeDirectives(t *testing.T) {
	src := "#include <linux/fs.h>\n" +
		"  #  include \"internal.h\" /* local */\n" +
		"#include_next <asm/x.h>\n" + // not an #include
		"#define X 1\n" +
		"#include MACRO_NAME\n" +
		"#include TRACE_INCLUDE(TRACE_INCLUDE_FILE)\n" + // function-like: not followed
		"#include <unterminated\n" +
		"\t#include \"../sub/y.h\"\n" +
		"// #include <commented.h> is not a directive\n" +
		"#define MAGIC_FILE <linux/magic_genl.h>\n" +
		"# define LOCAL \"local.h\" /* comment */\n" +
		"#define NOT_A_HEADER \"text\"\n" +
		"#define FUNC(x) <linux/f.h>\n" +
		"#defineX <linux/g.h>\n"
	got := includeDirectives([]byte(src))
	want := []string{"<linux/fs.h", `"internal.h`, "=MACRO_NAME", `"../sub/y.h`, "+MAGIC_FILE<linux/magic_genl.h", `+LOCAL"local.h`}
	if !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// FuzzIncludeDirectives: any file of a source tree (which a patch may
// make arbitrary) is scanned without panicking, and every entry is one
// of the four documented forms with a non-empty name.
func FuzzIncludeDirectives(f *testing.F) {
	f.Add([]byte("#include <a.h>\n#include M\n#define M \"b.h\"\n"))
	f.Add([]byte("#define\n#include\n# define X\n#include X(\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, e := range includeDirectives(data) {
			switch {
			case len(e) >= 2 && (e[0] == '"' || e[0] == '<' || e[0] == '='):
			case len(e) >= 4 && e[0] == '+' && strings.IndexAny(e, "\"<") > 1 && strings.HasSuffix(e, ".h"):
			default:
				t.Fatalf("entry %q of %q", e, data)
			}
		}
	})
}

// tree writes files (path -> content) under a temporary directory.
func tree(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for p, c := range files {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, p), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestIncluders(t *testing.T) {
	dir := tree(t, map[string]string{
		"include/linux/a.h":         "#include <linux/b.h>\n",
		"include/linux/b.h":         "static inline int b(void) { return 1; }\n",
		"include/uapi/linux/c.h":    "",
		"fs/x/internal.h":           "#include <linux/a.h>\n",
		"fs/x/one.c":                "#include \"internal.h\"\n",
		"fs/x/two.c":                "#include <linux/b.h>\n",
		"fs/x/three.c":              "#include <linux/c.h>\n",
		"fs/x/big.c":                "#include \"part.c\"\n",
		"fs/x/part.c":               "#include <linux/a.h>\n",
		"fs/y/internal.h":           "",
		"fs/y/other.c":              "#include \"internal.h\"\n", // another directory's internal.h
		"drivers/z/include/priv.h":  "#include <linux/b.h>\n",
		"drivers/z/z.c":             "#include <priv.h>\n", // found through a Makefile's -I
		"arch/x86/entry/entry.S":    "#include <linux/a.h>\n",
		"arch/arm/kernel/arm.c":     "#include <linux/b.h>\n", // another architecture
		"tools/perf/perf.c":         "#include <linux/b.h>\n",
		"Documentation/example.c":   "#include <linux/b.h>\n",
		"arch/x86/include/asm/as.h": "#include <linux/b.h>\n",
		"kernel/k.c":                "#include <asm/as.h>\n",
		// drbd's pattern: a .c file names the header in a macro and
		// includes a header that #includes the macro.
		"include/linux/magic_func.h": "#include MAGIC_FILE\n",
		"include/linux/magic_genl.h": "",
		"drivers/m/m.c":              "#define MAGIC_FILE <linux/magic_genl.h>\n#include <linux/magic_func.h>\n",
		"drivers/m/n.c":              "#define UNUSED_MACRO <linux/b.h>\n", // never #included: no include of b.h
	})
	ix, err := scanIncludes(t.Context(), dir)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		header string
		want   []string
	}{
		{"include/linux/b.h", []string{"arch/x86/entry/entry.S", "drivers/z/z.c", "fs/x/big.c", "fs/x/one.c", "fs/x/part.c", "fs/x/two.c", "kernel/k.c"}},
		{"include/uapi/linux/c.h", []string{"fs/x/three.c"}},
		{"fs/x/internal.h", []string{"fs/x/one.c"}},
		{"fs/y/internal.h", []string{"fs/y/other.c"}},
		{"include/linux/magic_genl.h", []string{"drivers/m/m.c"}},
	}
	for _, tt := range tests {
		got := ix.includers([]string{tt.header})
		if !slices.Equal(got, tt.want) {
			t.Errorf("includers(%s) = %q, want %q", tt.header, got, tt.want)
		}
	}
}

func TestIncludeIndexCache(t *testing.T) {
	dir := tree(t, map[string]string{"src/include/linux/a.h": "", "src/k/k.c": "#include <linux/a.h>\n"})
	tr := &Tree{Dir: filepath.Join(dir, "src"), root: dir, stamp: "stamp-1\n"}
	var log bytes.Buffer
	ix, err := tr.loadIncludeIndex(t.Context(), &log)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log.String(), "indexed 2 files") {
		t.Fatalf("first load did not scan: %q", log.String())
	}
	// A cached index is used as it is, even if the tree changed.
	if err := os.WriteFile(filepath.Join(dir, "src/k/k2.c"), []byte("#include <linux/a.h>\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	log.Reset()
	ix2, err := tr.loadIncludeIndex(t.Context(), &log)
	if err != nil {
		t.Fatal(err)
	}
	if log.Len() != 0 || !slices.Equal(ix2.includers([]string{"include/linux/a.h"}), ix.includers([]string{"include/linux/a.h"})) {
		t.Fatalf("second load rescanned or differs: %q", log.String())
	}
	// Another tree stamp (a new source or config) rescans.
	tr.stamp = "stamp-2\n"
	ix3, err := tr.loadIncludeIndex(t.Context(), &log)
	if err != nil {
		t.Fatal(err)
	}
	if got := ix3.includers([]string{"include/linux/a.h"}); !slices.Equal(got, []string{"k/k.c", "k/k2.c"}) {
		t.Fatalf("after a stamp change: %q", got)
	}
}

func TestParseDeps(t *testing.T) {
	cmd := "cmd_fs/proc/x.o := gcc -c -o fs/proc/x.o fs/proc/x.c\n\n" +
		"source_fs/proc/x.o := fs/proc/x.c\n\n" +
		"deps_fs/proc/x.o := \\\n" +
		"  include/linux/compiler-version.h \\\n" +
		"    $(wildcard include/config/CC_VERSION_TEXT) \\\n" +
		"  fs/proc/internal.h \\\n" +
		"  arch/x86/include/generated/asm/rwonce.h \\\n" +
		"  include/linux/last.h \\\n" +
		"\n" +
		"fs/proc/x.o: $(deps_fs/proc/x.o)\n\n$(deps_fs/proc/x.o):\n"
	got, ok := parseDeps([]byte(cmd))
	want := []string{"include/linux/compiler-version.h", "fs/proc/internal.h", "arch/x86/include/generated/asm/rwonce.h", "include/linux/last.h"}
	if !ok || !slices.Equal(got, want) {
		t.Fatalf("got %q %v, want %q", got, ok, want)
	}
	if _, ok := parseDeps([]byte("cmd_x.o := gcc\n")); ok {
		t.Fatal("a .cmd file without deps_ parsed as a record")
	}
}

func TestAsmText(t *testing.T) {
	dir := t.TempDir()
	a := "# 1 \"arch/x86/x.S\"\n# 12 \"include/linux/h.h\" 1\n\tmovq $1, %rax\n\n  ret\n"
	b := "# 1 \"arch/x86/x.S\"\n# 14 \"include/linux/h.h\" 1\n\tmovq $1, %rax\n  ret\n"
	c := "# 1 \"arch/x86/x.S\"\n\tmovq $2, %rax\n  ret\n"
	read := func(s string) []byte {
		p := filepath.Join(dir, "f.s")
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := asmText(p)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	if !bytes.Equal(read(a), read(b)) {
		t.Error("moved lines count as an assembly change")
	}
	if bytes.Equal(read(a), read(c)) {
		t.Error("a changed instruction is not an assembly change")
	}
}

func TestHeaderUnitsError(t *testing.T) {
	err := error(&HeaderUnitsError{Headers: []string{"include/linux/sched.h"}, Units: 4321, Limit: 100, Examples: []string{"kernel/fork.c"}})
	if !errors.Is(err, ErrTooManyUnits) {
		t.Fatal("not ErrTooManyUnits")
	}
	for _, want := range []string{"include/linux/sched.h", "4321", "limit of 100", "--max-header-units 4321", "kernel/fork.c", "out-of-line"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not say %q", err, want)
		}
	}
}

func TestProgressWriter(t *testing.T) {
	var out bytes.Buffer
	start := time.Now()
	p := &progressWriter{out: &out, which: "orig", total: 3, start: start, last: start}
	for _, l := range []string{"  CC      fs/proc/a.o\n", "  CALL    scripts/checksyscalls.sh\n", "  CC [M]  fs/b/b.o\n  CPP     arch/x86/c.s\n"} {
		if _, err := p.Write([]byte(l)); err != nil {
			t.Fatal(err)
		}
	}
	if p.done != 3 || !strings.Contains(out.String(), "3/3 started") {
		t.Fatalf("done %d, output %q", p.done, out.String())
	}
}

func TestArchRoots(t *testing.T) {
	dir := tree(t, map[string]string{
		"src/arch/x86/Makefile": "libs-y  += arch/x86/lib/\n" +
			"drivers-$(CONFIG_PCI)            += arch/x86/pci/\n" +
			"drivers-$(CONFIG_MATH_EMULATION) += arch/x86/math-emu/\n" +
			"core-y += arch/x86/\n",
		"src/.config": "CONFIG_X86_64=y\nCONFIG_PCI=y\n# CONFIG_MATH_EMULATION is not set\n",
	})
	tr := &Tree{Dir: filepath.Join(dir, "src"), root: dir}
	got := tr.archRoots()
	if !got["arch/x86/lib"] || !got["arch/x86/pci"] || got["arch/x86/math-emu"] || len(got) != 2 {
		t.Fatalf("archRoots = %v", got)
	}
	if tr.bits() != "64" {
		t.Fatalf("bits = %s", tr.bits())
	}
}
