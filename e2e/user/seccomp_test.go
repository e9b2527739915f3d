package user

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/livefix/livefix/internal/e2etest"
)

// TestSeccomp: a process under a strict seccomp filter (mmap or mprotect
// with PROT_EXEC kills it) is patched and unpatched and keeps running
// (issue 10, acceptance 5): livefix suspends the filter for its own
// injected syscalls only (PTRACE_O_SUSPEND_SECCOMP).
func TestSeccomp(t *testing.T) {
	require(t)
	livefix, livefixBuild := e2etest.Tools(t)
	prod := filepath.Join(t.TempDir(), "sandboxed")
	if out, err := exec.Command("cp", "-a", filepath.Join("testdata", "sandboxed"), prod).CombinedOutput(); err != nil {
		t.Fatal(err, string(out))
	}
	if out, err := exec.Command("make", "-s", "-C", prod).CombinedOutput(); err != nil {
		t.Fatal(err, string(out))
	}
	bin := filepath.Join(prod, "sandboxed")
	// The filter is strict: asking for executable memory kills.
	probe := startLife(t, bin)
	probe.in.Write([]byte("x\n"))
	if err := probe.cmd.Wait(); err == nil || !strings.Contains(err.Error(), "bad system call") {
		t.Fatalf("mmap(PROT_EXEC) under the filter: %v, want killed by SIGSYS", err)
	}

	patch, _ := filepath.Abs(filepath.Join("testdata", "sandboxed.patch"))
	lfp := filepath.Join(t.TempDir(), "price.lfp")
	if _, rc := run(t, nil, livefixBuild, "user", "--src", prod, "--patch", patch, "--build", "make -s", "--target-binary", bin, "-o", lfp); rc != 0 {
		t.Fatalf("livefix-build: exit %d", rc)
	}
	tg := startLife(t, bin)
	if st, _ := os.ReadFile("/proc/" + tg.pid + "/status"); !strings.Contains(string(st), "Seccomp:\t2") {
		t.Fatal("the target is not under a seccomp filter")
	}
	if got := tg.ask("v"); got != "110" {
		t.Fatalf("v = %s", got)
	}
	env := []string{"LIVEFIX_STATE_DIR=" + t.TempDir()}
	for round := 0; round < 2; round++ {
		if out, rc := run(t, env, livefix, "process", "patch", "--pid", tg.pid, lfp); rc != 0 || !strings.Contains(out, "patched with sandboxed") {
			t.Fatalf("patch: exit %d", rc)
		}
		if got := tg.ask("v"); got != "99" {
			t.Fatalf("patched: v = %s", got)
		}
		if _, rc := run(t, env, livefix, "process", "unpatch", "--pid", tg.pid); rc != 0 {
			t.Fatalf("unpatch: exit %d", rc)
		}
		if got := tg.ask("v"); got != "110" {
			t.Fatalf("unpatched: v = %s", got)
		}
	}
	if got := tg.ask("p"); got != "pong" {
		t.Fatalf("p = %q", got)
	}
}
