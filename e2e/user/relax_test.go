package user

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/livefix/livefix/internal/e2etest"
)

// TestRelaxedGOT: a library built the way distribution libraries are
// (-fPIC -fno-plt, internal symbols global in the source and made local
// by a version script), so the linker has rewritten every GOT access of
// the object in the library (mov -> lea, call * -> addr32 call,
// jmp * -> jmp; nop). The patch for it must still match the library's
// code, and be applied; stripped without its debug file, the internal
// symbols the fix uses are refused by name at build time instead of
// being looked up by name in the process.
func TestRelaxedGOT(t *testing.T) {
	require(t)
	livefix, livefixBuild := e2etest.Tools(t)
	patch, _ := filepath.Abs(filepath.Join("testdata", "vis.patch"))
	dir := filepath.Join(t.TempDir(), "vislib")
	if out, err := exec.Command("cp", "-a", filepath.Join("testdata", "vislib"), dir).CombinedOutput(); err != nil {
		t.Fatalf("copy: %v %s", err, out)
	}
	if out, err := exec.Command("make", "-s", "-C", dir).CombinedOutput(); err != nil {
		t.Fatalf("make: %v %s", err, out)
	}
	lib := filepath.Join(dir, "libvis.so")
	// The library really is relaxed: no GOT load of the internal symbols
	// is left (the object has them).
	dis, err := exec.Command("objdump", "-d", lib).Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"addr32 call", "lea    0x"} {
		if !strings.Contains(string(dis), want) {
			t.Fatalf("libvis.so has no %q: the linker did not relax as expected", want)
		}
	}
	mk := func(t *testing.T, target string) (string, string, int) {
		lfp := filepath.Join(t.TempDir(), "vis.lfp")
		out, rc := run(t, nil, livefixBuild, "user", "--src", dir, "--patch", patch, "--build", "make", "--target-binary", target, "-o", lfp)
		return lfp, out, rc
	}

	t.Run("apply", func(t *testing.T) {
		lfp, out, rc := mk(t, lib)
		if rc != 0 || !strings.Contains(out, "vis.c: changed vis_name, vis_tail") {
			t.Fatalf("livefix-build: exit %d", rc)
		}
		cmd := exec.Command(filepath.Join(dir, "visd"))
		in, _ := cmd.StdinPipe()
		stdout, _ := cmd.StdoutPipe()
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		p := &authd{t: t, cmd: cmd, in: in, rd: bufio.NewReader(stdout), pid: itoa(cmd.Process.Pid)}
		if got := p.ask(""); got != "ready" {
			t.Fatalf("visd: %q", got)
		}
		expect := func(fixed bool) {
			t.Helper()
			name, tail := "one", "4"
			if fixed {
				name, tail = "negative", "3"
			}
			for _, c := range [][2]string{{"n -1", name}, {"n 2", "two"}, {"t 1", tail}, {"c", "1"}} {
				if got := p.ask(c[0]); got != c[1] {
					t.Fatalf("%q: %s, want %s (fixed %v)", c[0], got, c[1], fixed)
				}
			}
			time.Sleep(20 * time.Millisecond)
			if got := p.ask("w"); got != name {
				t.Fatalf("worker sees %s, want %s", got, name)
			}
		}
		expect(false)
		env := []string{"LIVEFIX_STATE_DIR=" + t.TempDir()}
		if _, rc := run(t, env, livefix, "process", "patch", "--pid", p.pid, lfp); rc != 0 {
			t.Fatalf("patch: exit %d", rc)
		}
		expect(true)
		if _, rc := run(t, env, livefix, "process", "unpatch", "--pid", p.pid); rc != 0 {
			t.Fatalf("unpatch: exit %d", rc)
		}
		expect(false)
	})

	t.Run("stripped-no-debug", func(t *testing.T) {
		bare := filepath.Join(t.TempDir(), "libvis.so")
		copyFile(t, lib, bare)
		if out, err := exec.Command("strip", "--strip-unneeded", bare).CombinedOutput(); err != nil {
			t.Fatalf("strip: %v %s", err, out)
		}
		_, out, rc := mk(t, bare)
		for _, s := range []string{"vis_calls", "vis_names", "vis_helper"} {
			if rc != 3 || !strings.Contains(out, s+": defined by vis.c in the target but not exported") {
				t.Fatalf("stripped without debug file: exit %d, want %s refused", rc, s)
			}
		}
	})
}

// TestCopyRelocation: a patch reading a variable a library exports, which
// the program refers to directly, so the program holds the live copy
// (R_X86_64_COPY) and the library's own copy is stale: the patch must
// read the program's, as the library's code does through its GOT.
func TestCopyRelocation(t *testing.T) {
	require(t)
	livefix, livefixBuild := e2etest.Tools(t)
	patch, _ := filepath.Abs(filepath.Join("testdata", "copyreloc.patch"))
	dir := filepath.Join(t.TempDir(), "copyreloc")
	if out, err := exec.Command("cp", "-a", filepath.Join("testdata", "copyreloc"), dir).CombinedOutput(); err != nil {
		t.Fatalf("copy: %v %s", err, out)
	}
	if out, err := exec.Command("make", "-s", "-C", dir).CombinedOutput(); err != nil {
		t.Fatalf("make: %v %s", err, out)
	}
	if out, _ := exec.Command("readelf", "-r", filepath.Join(dir, "cnt")).Output(); !strings.Contains(string(out), "R_X86_64_COPY") {
		t.Fatal("cnt has no copy relocation")
	}
	lfp := filepath.Join(t.TempDir(), "cnt.lfp")
	if _, rc := run(t, nil, livefixBuild, "user", "--src", dir, "--patch", patch, "--build", "make", "--target-binary", filepath.Join(dir, "libcnt.so"), "-o", lfp); rc != 0 {
		t.Fatalf("livefix-build: exit %d", rc)
	}
	cmd := exec.Command(filepath.Join(dir, "cnt"))
	in, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	p := &authd{t: t, cmd: cmd, in: in, rd: bufio.NewReader(stdout), pid: itoa(cmd.Process.Pid)}
	if got := p.ask(""); got != "ready" {
		t.Fatalf("cnt: %q", got)
	}
	if got := p.ask("x"); got != "42" {
		t.Fatalf("get() = %s before the patch, want 42", got)
	}
	env := []string{"LIVEFIX_STATE_DIR=" + t.TempDir()}
	if _, rc := run(t, env, livefix, "process", "patch", "--pid", p.pid, lfp); rc != 0 {
		t.Fatalf("patch: exit %d", rc)
	}
	// 6 would be the library's stale copy plus one.
	if got := p.ask("x"); got != "43" {
		t.Fatalf("get() = %s with the patch, want 43 (the program's copy of counter, plus one)", got)
	}
	if _, rc := run(t, env, livefix, "process", "unpatch", "--pid", p.pid); rc != 0 {
		t.Fatalf("unpatch: exit %d", rc)
	}
	if got := p.ask("x"); got != "42" {
		t.Fatalf("get() = %s after unpatch, want 42", got)
	}
}
