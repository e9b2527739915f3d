package e2etest

import (
	"errors"
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
	// The agent commands run in livefix-agent, built next to livefix:
	// livefix execs it with the same arguments, so that the help, output
	// and exit status are the same through either program.
	for _, args := range [][]string{{"update", "--help"}, {"register", "--help"}, {"daemon", "--help"}, {"update", "--no-such-flag"}} {
		via, verr := exec.Command(lf, args...).CombinedOutput()
		direct, derr := exec.Command(filepath.Join(dir, "livefix-agent"), args...).CombinedOutput()
		if exitCode(verr) != exitCode(derr) || string(via) != string(direct) || len(via) == 0 {
			t.Errorf("livefix %v: exit %d, %q; livefix-agent: exit %d, %q", args, exitCode(verr), via, exitCode(derr), direct)
		}
	}
	if out, err := exec.Command(lf, "update", "--help").CombinedOutput(); err != nil || !strings.Contains(string(out), "usage: livefix update") {
		t.Errorf("livefix update --help: %v\n%s", err, out)
	}
	// Without livefix-agent the command says what is missing.
	cmd := exec.Command(lf, "update")
	cmd.Env = append(os.Environ(), "LIVEFIX_AGENT="+filepath.Join(t.TempDir(), "none"))
	if out, err := cmd.CombinedOutput(); exitCode(err) != 1 || !strings.Contains(string(out), "livefix update: run") {
		t.Errorf("livefix update without the agent program: exit %d\n%s", exitCode(err), out)
	}
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}
