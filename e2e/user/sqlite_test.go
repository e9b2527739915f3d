package user

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/livefix/livefix/internal/e2etest"
)

const (
	sqliteModule = "github.com/mattn/go-sqlite3@v1.14.22"
	// The fix: absFunc's error for abs(-9223372036854775808) says why.
	oldMessage = `sqlite3_result_error(context, "integer overflow", -1);`
	newMessage = `sqlite3_result_error(context, "integer overflow: abs(-9223372036854775808) has no 64-bit result", -1);`
)

func require(t *testing.T) {
	t.Helper()
	fail := t.Skipf
	if os.Getenv("LIVEFIX_REQUIRE_VM") == "1" {
		fail = t.Fatalf
	}
	for _, tool := range []string{"gcc", "make", "patch", "diff", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			fail("%s is required: %v", tool, err)
		}
	}
	if os.Geteuid() != 0 {
		fail("live patching other processes needs root")
	}
}

// run runs a command and returns its stdout; stderr goes to the log.
func run(t *testing.T, env []string, name string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	t.Logf("$ %s %s\n%s%s(exit %d)", filepath.Base(name), strings.Join(args, " "), out.String(), errb.String(), code)
	return out.String() + errb.String(), code
}

// sqliteSource fetches the amalgamation through the Go module proxy into
// the module cache and returns its directory.
func sqliteSource(t *testing.T) string {
	t.Helper()
	cmd := exec.Command("go", "mod", "download", "-json", sqliteModule)
	cmd.Dir = t.TempDir() // outside any module: nothing is recorded in go.mod
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GO111MODULE=on")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go mod download %s: %v", sqliteModule, err)
	}
	var m struct{ Dir string }
	if err := json.Unmarshal(out, &m); err != nil || m.Dir == "" {
		t.Fatalf("go mod download: %v %s", err, out)
	}
	return m.Dir
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestSQLite builds SQLite from source, runs a program using it, fixes
// absFunc live with the command-line tools and checks the running
// program's results change, then change back on unpatch.
func TestSQLite(t *testing.T) {
	require(t)
	bin := e2etest.Build(t, "livefix", "livefix-build")
	mod := sqliteSource(t)

	// The source tree: the amalgamation plus our Makefile and driver.
	src := filepath.Join(t.TempDir(), "sqlite")
	os.MkdirAll(src, 0o755)
	for _, f := range []string{"sqlite3-binding.c", "sqlite3-binding.h"} {
		copyFile(t, filepath.Join(mod, f), filepath.Join(src, f))
	}
	for _, f := range []string{"Makefile", "sqldrv.c"} {
		copyFile(t, filepath.Join("testdata", "sqlite", f), filepath.Join(src, f))
	}
	// The fix, as a unified diff made here (no SQLite code is committed).
	fixed := filepath.Join(t.TempDir(), "b")
	os.MkdirAll(fixed, 0o755)
	code, err := os.ReadFile(filepath.Join(src, "sqlite3-binding.c"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Count(code, []byte(oldMessage)) != 1 {
		t.Fatalf("the amalgamation does not have exactly one %q", oldMessage)
	}
	os.WriteFile(filepath.Join(fixed, "sqlite3-binding.c"), bytes.Replace(code, []byte(oldMessage), []byte(newMessage), 1), 0o644)
	diff := exec.Command("diff", "-u", "--label", "a/sqlite3-binding.c", "--label", "b/sqlite3-binding.c", filepath.Join(src, "sqlite3-binding.c"), filepath.Join(fixed, "sqlite3-binding.c"))
	patchText, _ := diff.Output()
	if len(patchText) == 0 {
		t.Fatal("empty diff")
	}
	patchFile := filepath.Join(t.TempDir(), "abs-message.patch")
	os.WriteFile(patchFile, patchText, 0o644)

	work := t.TempDir()
	lfp := filepath.Join(t.TempDir(), "abs-message.lfp")
	out, rc := run(t, nil, filepath.Join(bin, "livefix-build"), "user", "--src", src, "--patch", patchFile,
		"--build", "make -s", "--target", "libsqlite3.so", "--keep", work, "-o", lfp)
	if rc != 0 || !strings.Contains(out, "changed absFunc") {
		t.Fatalf("livefix-build user: exit %d", rc)
	}

	orig := filepath.Join(work, "orig")
	cmd := exec.Command(filepath.Join(orig, "sqldrv"))
	cmd.Env = append(os.Environ(), "LD_LIBRARY_PATH="+orig)
	in, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	rd := bufio.NewReader(stdout)
	ask := func(sql string) string {
		t.Helper()
		if sql != "" {
			io.WriteString(in, sql+"\n")
		}
		c := make(chan string, 1)
		go func() { s, _ := rd.ReadString('\n'); c <- strings.TrimSpace(s) }()
		select {
		case s := <-c:
			return s
		case <-time.After(10 * time.Second):
			t.Fatalf("no answer to %q", sql)
		}
		return ""
	}
	if got := ask(""); got != "ready" {
		t.Fatalf("sqldrv: %q", got)
	}
	const overflow = "SELECT abs(-9223372036854775808);"
	checks := func(wantMsg string) {
		t.Helper()
		if got := ask(overflow); got != "error: "+wantMsg {
			t.Fatalf("%s = %q, want %q", overflow, got, "error: "+wantMsg)
		}
		if got := ask("SELECT abs(-42) + 1;"); got != "43" {
			t.Fatalf("abs(-42)+1 = %q", got)
		}
	}
	checks("integer overflow")

	env := []string{"LIVEFIX_STATE_DIR=" + t.TempDir()}
	pid := itoa(cmd.Process.Pid)
	livefix := filepath.Join(bin, "livefix")

	// Bad input through the command line: a tampered file, a missing
	// process. Exit status 2, the process untouched.
	bad := filepath.Join(t.TempDir(), "bad.lfp")
	b, _ := os.ReadFile(lfp)
	b[len(b)/2] ^= 0x40
	os.WriteFile(bad, b, 0o644)
	if out, rc := run(t, env, livefix, "process", "patch", "--pid", pid, bad); rc != 2 || !strings.Contains(out, "checksum mismatch") {
		t.Fatalf("tampered patch: exit %d", rc)
	}
	if _, rc := run(t, env, livefix, "process", "patch", "--pid", "999999999", lfp); rc != 2 {
		t.Fatalf("missing process: exit %d", rc)
	}
	checks("integer overflow")

	if out, rc := run(t, env, livefix, "process", "patch", "--pid", pid, lfp); rc != 0 || !strings.Contains(out, "patched with abs-message") {
		t.Fatalf("patch: exit %d", rc)
	}
	checks("integer overflow: abs(-9223372036854775808) has no 64-bit result")
	out, rc = run(t, env, livefix, "process", "list")
	if rc != 0 || !strings.Contains(out, "absFunc") || !strings.Contains(out, pid) {
		t.Fatalf("list: exit %d", rc)
	}
	out, rc = run(t, env, livefix, "process", "list", "--json")
	var recs []struct {
		Pid     int
		Patches []struct{ Name string }
	}
	if rc != 0 || json.Unmarshal([]byte(out), &recs) != nil || len(recs) != 1 || recs[0].Patches[0].Name != "abs-message" {
		t.Fatalf("list --json: exit %d: %s", rc, out)
	}
	if _, rc := run(t, env, livefix, "process", "unpatch", "--pid", pid, "abs-message"); rc != 0 {
		t.Fatalf("unpatch: exit %d", rc)
	}
	checks("integer overflow")
	if out, rc := run(t, env, livefix, "process", "list", "--json"); rc != 0 || strings.TrimSpace(out) != "[]" {
		t.Fatalf("list after unpatch: %s", out)
	}
}

func itoa(i int) string {
	b := []byte{}
	for ; i > 0; i /= 10 {
		b = append([]byte{byte('0' + i%10)}, b...)
	}
	return string(b)
}
