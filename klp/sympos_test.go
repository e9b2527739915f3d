package klp

import (
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/livefix/livefix/elfobj"
)

// linkVmlinuxLike compiles three units that each have a static c_next
// (between their own c_start and c_stop) and links them, in order a, b,
// c, into an executable with a symbol table and a build-id: a small
// stand-in for a vmlinux with its full symbol table. It returns the
// executable and the objects.
func linkVmlinuxLike(t *testing.T) (string, map[string]string) {
	t.Helper()
	for _, tool := range []string{"gcc", "ld"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed (make setup installs it): %v", tool, err)
		}
	}
	dir := t.TempDir()
	objs := map[string]string{}
	var order []string
	for _, u := range []string{"a", "b", "c"} {
		src := fmt.Sprintf(`#define S static __attribute__((used, noinline))
S int c_start_%[1]s(int x) { return x + 1; }
S int c_next(int x) { return x * 3 + '%[1]s'; }
S int c_stop_%[1]s(int x) { return x - 1; }
int %[1]s_data = 7;
S int counter_%[1]s;
int entry_%[1]s(int x) { return c_start_%[1]s(c_next(c_stop_%[1]s(x))) + counter_%[1]s; }
`, u)
		c := filepath.Join(dir, u+".c")
		if err := os.WriteFile(c, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		o := filepath.Join(dir, u+".o")
		if b, err := exec.Command("gcc", "-O1", "-fno-pic", "-ffunction-sections", "-fdata-sections", "-c", "-o", o, c).CombinedOutput(); err != nil {
			t.Fatalf("gcc: %v\n%s", err, b)
		}
		objs[u+".c"] = o
		order = append(order, o)
	}
	exe := filepath.Join(dir, "vmlinux")
	args := append([]string{"--build-id=sha1", "-e", "0", "-o", exe}, order...)
	if b, err := exec.Command("ld", args...).CombinedOutput(); err != nil {
		t.Fatalf("ld: %v\n%s", err, b)
	}
	return exe, objs
}

func TestVmlinuxFileSymbols(t *testing.T) {
	exe, objs := linkVmlinuxLike(t)
	f, err := elf.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	id, err := elfNoteBuildID(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	syms, err := VmlinuxFileSymbols(exe, id)
	if err != nil {
		t.Fatal(err)
	}
	for i, file := range []string{"a.c", "b.c", "c.c"} {
		pos, err := syms.Sympos("c_next", true, file, nil)
		if err != nil || pos != i+1 {
			t.Errorf("Sympos(c_next, %s) = %d, %v; want %d", file, pos, err, i+1)
			continue
		}
		orig, err := elfobj.Open(objs[file])
		if err != nil {
			t.Fatal(err)
		}
		if err := syms.VerifyStatic("c_next", pos, file, orig); err != nil {
			t.Errorf("VerifyStatic(c_next, %d, %s): %v", pos, file, err)
		}
		if err := syms.VerifyStatic("c_next", pos%3+1, file, orig); err == nil {
			t.Errorf("VerifyStatic accepted occurrence %d for %s", pos%3+1, file)
		}
	}
	if _, err := VmlinuxFileSymbols(exe, []byte{1, 2, 3}); err == nil || !strings.Contains(err.Error(), "another build") {
		t.Errorf("a vmlinux of another build: err = %v", err)
	}
}

// TestVerifyStaticByNeighbours checks the kallsyms-only verification: the
// table has names in address order and no files, as /proc/kallsyms.
func TestVerifyStaticByNeighbours(t *testing.T) {
	exe, objs := linkVmlinuxLike(t)
	out, err := exec.Command("nm", "-n", exe).Output()
	if err != nil {
		t.Fatalf("nm: %v", err)
	}
	syms, err := ParseKallsyms(strings.NewReader(string(out)))
	if err != nil {
		t.Fatal(err)
	}
	for i, file := range []string{"a.c", "b.c", "c.c"} {
		orig, err := elfobj.Open(objs[file])
		if err != nil {
			t.Fatal(err)
		}
		for pos := 1; pos <= 3; pos++ {
			err := syms.VerifyStatic("c_next", pos, file, orig)
			var se *SymposError
			switch {
			case pos == i+1 && err != nil:
				t.Errorf("VerifyStatic(c_next, %d, %s): %v", pos, file, err)
			case pos != i+1 && !errors.As(err, &se):
				t.Errorf("VerifyStatic(c_next, %d, %s) = %v, want a *SymposError", pos, file, err)
			}
		}
		// The data placement is verified the same way.
		if pos, err := syms.Sympos("counter_"+file[:1], true, file, nil); err != nil || pos != 0 {
			t.Errorf("unique static: %d, %v", pos, err)
		}
	}
	if err := syms.VerifyStatic("c_next", 1, "a.c", nil); err == nil {
		t.Error("VerifyStatic without the original object succeeded")
	}
}
