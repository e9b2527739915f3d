package e2etest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

// TestBuild builds a command and a package given by path, once: a second
// Build returns the same directory without rebuilding.
func TestBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds programs")
	}
	dir := Build(t, "livefix", "internal/e2etest/testdata/hello")
	hello := filepath.Join(dir, "hello")
	out, err := exec.Command(hello).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "hello" {
		t.Fatalf("hello: %v %q", err, out)
	}
	st, err := os.Stat(hello)
	if err != nil {
		t.Fatal(err)
	}
	if d := Build(t, "internal/e2etest/testdata/hello"); d != dir {
		t.Errorf("second Build returned %s, want %s", d, dir)
	}
	st2, err := os.Stat(hello)
	if err != nil {
		t.Fatal(err)
	}
	if !st2.ModTime().Equal(st.ModTime()) {
		t.Errorf("hello was rebuilt by the second Build")
	}
	lf, lfb := Tools(t)
	if lf != filepath.Join(dir, "livefix") || lfb != filepath.Join(dir, "livefix-build") {
		t.Errorf("Tools = %s, %s", lf, lfb)
	}
	if out, err := exec.Command(lf, "--help").CombinedOutput(); err != nil {
		t.Errorf("livefix --help: %v\n%s", err, out)
	}
}
