package user

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/livefix/livefix/internal/e2etest"
)

// TestObjectBuild: a Makefile that compiles objects with -c and builds one
// source twice with different flags (calc.c for the program and for the
// library, as libtool does for PIC and non-PIC): the patch for the
// production library uses the library's variant, the build's own
// compiles give the objects (no second compile), and the running program
// reads the library's static through the patch.
func TestObjectBuild(t *testing.T) {
	require(t)
	livefix, livefixBuild := e2etest.Tools(t)
	src, _ := filepath.Abs(filepath.Join("..", "..", "ulp", "testdata", "calc"))
	patch, _ := filepath.Abs(filepath.Join("..", "..", "ulp", "testdata", "patches", "readstatic.patch"))
	prod := filepath.Join(t.TempDir(), "calc")
	if out, err := exec.Command("cp", "-a", src, prod).CombinedOutput(); err != nil {
		t.Fatal(err, string(out))
	}
	if out, err := exec.Command("make", "-s", "-C", prod).CombinedOutput(); err != nil {
		t.Fatal(err, string(out))
	}
	lfp := filepath.Join(t.TempDir(), "readstatic.lfp")
	out, rc := run(t, nil, livefixBuild, "user", "-v", "--src", prod, "--patch", patch, "--build", "make -s",
		"--target-binary", filepath.Join(prod, "libcalc.so"), "-o", lfp)
	if rc != 0 || !strings.Contains(out, "calc.c: changed lib_answer") || !strings.Contains(out, "3 sources (3 objects kept from the build") {
		t.Fatalf("livefix-build: exit %d", rc)
	}
	cmd := exec.Command(filepath.Join(prod, "app"))
	cmd.Env = append(os.Environ(), "LD_LIBRARY_PATH="+prod)
	a := startCmd(t, cmd)
	if got := a.ask("B 77"); got != "ok" {
		t.Fatalf("B 77: %q", got)
	}
	env := []string{"LIVEFIX_STATE_DIR=" + t.TempDir()}
	for _, step := range []struct{ args []string }{{[]string{"patch", "--pid", a.pid, lfp}}, {[]string{"unpatch", "--pid", a.pid}}} {
		before := a.ask("A 5")
		if _, rc := run(t, env, livefix, append([]string{"process"}, step.args...)...); rc != 0 {
			t.Fatalf("%v: exit %d", step.args, rc)
		}
		after := a.ask("A 5")
		want := map[string][2]string{"patch": {"6", "82"}, "unpatch": {"82", "6"}}[step.args[0]]
		if before != want[0] || after != want[1] {
			t.Fatalf("%s: A 5 = %s then %s, want %s then %s", step.args[0], before, after, want[0], want[1])
		}
	}
}
