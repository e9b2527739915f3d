package user

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/livefix/livefix/internal/e2etest"
)

// authd is a running testdata/authd program.
type authd struct {
	t   *testing.T
	cmd *exec.Cmd
	in  io.WriteCloser
	rd  *bufio.Reader
	pid string
}

func startAuthd(t *testing.T, dir string) *authd {
	t.Helper()
	cmd := exec.Command(filepath.Join(dir, "authd"), "4")
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	a := &authd{t: t, cmd: cmd, in: in, rd: bufio.NewReader(out), pid: itoa(cmd.Process.Pid)}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	if got := a.ask(""); got != "ready" {
		t.Fatalf("authd: %q", got)
	}
	return a
}

func (a *authd) ask(q string) string {
	a.t.Helper()
	if q != "" {
		io.WriteString(a.in, q+"\n")
	}
	c := make(chan string, 1)
	go func() { s, _ := a.rd.ReadString('\n'); c <- strings.TrimSpace(s) }()
	select {
	case s := <-c:
		return s
	case <-time.After(10 * time.Second):
		a.t.Fatalf("authd: no answer to %q", q)
	}
	return ""
}

// expect checks the library's answers: the same-as-user password is
// accepted by the original code and refused by the fix; the workers
// (which use such a password) see the same.
func (a *authd) expect(fixed bool) {
	a.t.Helper()
	want := "1"
	if fixed {
		want = "0"
	}
	if got := a.ask("q bob1234 bob1234"); got != want {
		a.t.Fatalf("auth_check(bob1234, bob1234) = %s, want %s (fixed=%v)", got, want, fixed)
	}
	if got := a.ask("q bob bob1234"); got != "1" {
		a.t.Fatalf("auth_check(bob, bob1234) = %s, want 1", got)
	}
	if got := a.ask("q bob abc"); got != "0" {
		a.t.Fatalf("auth_check(bob, abc) = %s, want 0", got)
	}
	// A worker's last call may predate the change (or, just after the
	// start on a loaded machine, not have happened: -1); within a few of
	// their 100 µs rounds they have made a new one. Asked until they
	// agree, for at most 5 s.
	got := ""
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if got = a.ask("w"); got == want || time.Now().After(deadline) {
			break
		}
	}
	if got != want {
		a.t.Fatalf("workers see %s, want %s", got, want)
	}
}

// prodTree copies testdata/authd and builds it with its own Makefile
// (compile and link in one command), the way it runs in production.
func prodTree(t *testing.T, name string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	if out, err := exec.Command("cp", "-a", filepath.Join("testdata", "authd"), dir).CombinedOutput(); err != nil {
		t.Fatalf("copy: %v %s", err, out)
	}
	if out, err := exec.Command("make", "-s", "-C", dir).CombinedOutput(); err != nil {
		t.Fatalf("make: %v %s", err, out)
	}
	return dir
}

func buildIDOf(t *testing.T, path string) string {
	t.Helper()
	out, err := exec.Command("readelf", "-n", path).Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if _, id, ok := strings.Cut(l, "Build ID: "); ok {
			return strings.TrimSpace(id)
		}
	}
	t.Fatalf("%s has no build-id", path)
	return ""
}

// TestProductionBinary covers acceptance items 1-3 of issue 10: a patch
// built for the binary as its own ordinary build made it (not a livefix
// build), for the same binary stripped with its debug file split off as
// Debian's packaging does, and refusals when the source or the flags do
// not match the binary.
func TestProductionBinary(t *testing.T) {
	require(t)
	livefix, livefixBuild := e2etest.Tools(t)
	patch, _ := filepath.Abs(filepath.Join("testdata", "authd.patch"))
	prod := prodTree(t, "authd")
	lib := filepath.Join(prod, "libauth.so")
	id := buildIDOf(t, lib)

	mk := func(t *testing.T, src, buildCmd, target string, extra ...string) (string, string, int) {
		lfp := filepath.Join(t.TempDir(), "authd.lfp")
		args := append([]string{"user", "--src", src, "--patch", patch, "--build", buildCmd, "--target-binary", target, "-o", lfp}, extra...)
		out, rc := run(t, nil, livefixBuild, args...)
		return lfp, out, rc
	}
	cycle := func(t *testing.T, dir, lfp string) {
		t.Helper()
		a := startAuthd(t, dir)
		a.expect(false)
		env := []string{"LIVEFIX_STATE_DIR=" + t.TempDir()}
		if out, rc := run(t, env, livefix, "process", "patch", "--pid", a.pid, lfp); rc != 0 || !strings.Contains(out, "patched with authd") {
			t.Fatalf("patch: exit %d", rc)
		}
		a.expect(true)
		if out, rc := run(t, env, livefix, "process", "list"); rc != 0 || !strings.Contains(out, "auth_check") {
			t.Fatalf("list: exit %d", rc)
		}
		if _, rc := run(t, env, livefix, "process", "unpatch", "--pid", a.pid); rc != 0 {
			t.Fatalf("unpatch: exit %d", rc)
		}
		a.expect(false)
	}

	t.Run("one-command-build", func(t *testing.T) {
		// The source tree still holds the production build: livefix-build
		// copies it without its built files.
		lfp, out, rc := mk(t, prod, "make", lib)
		if rc != 0 || !strings.Contains(out, "changed auth_check") || !strings.Contains(out, "build-id "+id) {
			t.Fatalf("livefix-build: exit %d, want the patch keyed to %s", rc, id)
		}
		cycle(t, prod, lfp)
		// --all is idempotent: a process that has the patch is done.
		a := startAuthd(t, prod)
		env := []string{"LIVEFIX_STATE_DIR=" + t.TempDir()}
		for round := 0; round < 2; round++ {
			out, rc := run(t, env, livefix, "process", "patch", "--all", lfp)
			want := "pid " + a.pid + ": patched with authd"
			if round == 1 {
				want = "pid " + a.pid + ": left as it is: already has authd"
			}
			if rc != 0 || !strings.Contains(out, want) {
				t.Fatalf("patch --all, round %d: exit %d, want %q", round, rc, want)
			}
		}
		a.expect(true)
	})

	// Debian's dh_strip: keep the debug part, strip the library, link them.
	deploy := filepath.Join(t.TempDir(), "deploy")
	os.MkdirAll(deploy, 0o755)
	for _, f := range []string{"authd", "libauth.so"} {
		copyFile(t, filepath.Join(prod, f), filepath.Join(deploy, f))
		os.Chmod(filepath.Join(deploy, f), 0o755)
	}
	slib := filepath.Join(deploy, "libauth.so")
	dbg := filepath.Join(deploy, "libauth.debug")
	for _, c := range [][]string{
		{"objcopy", "--only-keep-debug", "--compress-debug-sections", slib, dbg},
		{"strip", "--remove-section=.comment", "--remove-section=.note", "--strip-unneeded", slib},
		{"objcopy", "--add-gnu-debuglink=" + dbg, slib},
	} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v %s", c, err, out)
		}
	}
	if out, _ := exec.Command("readelf", "-S", slib).Output(); strings.Contains(string(out), ".symtab") {
		t.Fatal("strip left a .symtab")
	}
	if got := buildIDOf(t, slib); got != id {
		t.Fatalf("stripping changed the build-id: %s vs %s", got, id)
	}
	t.Run("stripped-debuglink", func(t *testing.T) {
		lfp, out, rc := mk(t, prod, "make", slib)
		if rc != 0 || !strings.Contains(out, "symbols from "+dbg) {
			t.Fatalf("livefix-build: exit %d, want symbols from %s", rc, dbg)
		}
		cycle(t, deploy, lfp)
	})
	t.Run("stripped-debug-file", func(t *testing.T) {
		moved := filepath.Join(t.TempDir(), "elsewhere.debug")
		copyFile(t, dbg, moved)
		lfp, out, rc := mk(t, prod, "make", slib, "--debug-file", moved)
		if rc != 0 || !strings.Contains(out, "symbols from "+moved) {
			t.Fatalf("livefix-build: exit %d", rc)
		}
		// Applying needs no debug file (the patch records every
		// address): with none anywhere, the patch still applies.
		os.Remove(moved)
		hidden := dbg + ".hidden"
		if err := os.Rename(dbg, hidden); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Rename(hidden, dbg) })
		cycle(t, deploy, lfp)
		// A debug file of another build is refused.
		other := prodTree(t, "other")
		sed := exec.Command("sed", "-i", "s/return 6;/return 7;/", filepath.Join(other, "auth.c"))
		if out, err := sed.CombinedOutput(); err != nil {
			t.Fatal(err, string(out))
		}
		exec.Command("make", "-s", "-C", other, "clean", "all").Run()
		odbg := filepath.Join(t.TempDir(), "other.debug")
		exec.Command("objcopy", "--only-keep-debug", filepath.Join(other, "libauth.so"), odbg).Run()
		if _, out, rc := mk(t, prod, "make", slib, "--debug-file", odbg); rc == 0 || !strings.Contains(out, "belongs to another build") {
			t.Fatalf("foreign debug file: exit %d", rc)
		}
	})
	t.Run("stripped-no-debug", func(t *testing.T) {
		bare := filepath.Join(t.TempDir(), "libauth.so")
		copyFile(t, slib, bare)
		exec.Command("objcopy", "--remove-section=.gnu_debuglink", bare).Run()
		_, out, rc := mk(t, prod, "make", bare)
		// The fix calls the static weight() and uses the static counter.
		if rc != 3 || !strings.Contains(out, "weight: a static of auth.c that the patch uses cannot be located") || !strings.Contains(out, "attempts:") {
			t.Fatalf("stripped without debug file: exit %d", rc)
		}
	})

	t.Run("other-flags", func(t *testing.T) {
		_, out, rc := mk(t, prod, "make OPT=-O1", lib)
		if rc != 3 || !strings.Contains(out, "refused: auth.c: auth_check: ") || !strings.Contains(out, "does not match") {
			t.Fatalf("-O1 against an -O2 binary: exit %d", rc)
		}
	})
	t.Run("edited-callee", func(t *testing.T) {
		// The tree differs from what the binary was built from in weight(),
		// which the fix does not change but calls.
		drift := filepath.Join(t.TempDir(), "drift")
		exec.Command("cp", "-a", prod, drift).Run()
		sed := exec.Command("sed", "-i", "s/? 2 : 1;/? 3 : 1;/", filepath.Join(drift, "auth.c"))
		if out, err := sed.CombinedOutput(); err != nil {
			t.Fatal(err, string(out))
		}
		_, out, rc := mk(t, drift, "make", lib)
		if rc != 3 || !strings.Contains(out, "refused: auth.c: weight: called by the patch, but its code") || strings.Contains(out, "auth_check:") {
			t.Fatalf("edited callee: exit %d", rc)
		}
	})
}
