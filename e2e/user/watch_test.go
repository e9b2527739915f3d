package user

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestWatch: a process started after `livefix process watch` began is
// patched within 200 ms of its exec (issue 10, acceptance 7), and one
// that already ran when it started is patched by its first scan.
// LIVEFIX_WATCH_BOUND_MS overrides the bound.
func TestWatch(t *testing.T) {
	require(t)
	livefix, livefixBuild := buildTools(t)
	bound := 200 * time.Millisecond
	if s := os.Getenv("LIVEFIX_WATCH_BOUND_MS"); s != "" {
		ms, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("LIVEFIX_WATCH_BOUND_MS=%q", s)
		}
		bound = time.Duration(ms) * time.Millisecond
	}
	src, _ := filepath.Abs(filepath.Join("..", "..", "ulp", "testdata", "life"))
	patch, _ := filepath.Abs(filepath.Join("..", "..", "ulp", "testdata", "patches", "life.patch"))
	prod := filepath.Join(t.TempDir(), "life")
	if out, err := exec.Command("cp", "-a", src, prod).CombinedOutput(); err != nil {
		t.Fatal(err, string(out))
	}
	if out, err := exec.Command("make", "-s", "-C", prod).CombinedOutput(); err != nil {
		t.Fatal(err, string(out))
	}
	bin := filepath.Join(prod, "life")
	lfp := filepath.Join(t.TempDir(), "life.lfp")
	if _, rc := run(t, nil, livefixBuild, "user", "--src", prod, "--patch", patch, "--build", "make -s", "--target-binary", bin, "-o", lfp); rc != 0 {
		t.Fatalf("livefix-build: exit %d", rc)
	}
	early := startLife(t, bin)

	w := exec.Command(livefix, "process", "watch", lfp)
	w.Env = append(os.Environ(), "LIVEFIX_STATE_DIR="+t.TempDir())
	w.Stderr = os.Stderr
	out, _ := w.StdoutPipe()
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Process.Kill(); w.Wait() })
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	waitLine := func(want string, within time.Duration) (string, time.Time) {
		t.Helper()
		deadline := time.After(within)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("watch exited while waiting for %q", want)
				}
				t.Logf("watch: %s", l)
				if strings.Contains(l, want) {
					return l, time.Now()
				}
			case <-deadline:
				t.Fatalf("no %q from watch within %v", want, within)
			}
		}
	}
	waitLine("pid "+early.pid+": patched with life", 10*time.Second)
	waitLine("watching", 10*time.Second)
	if got := early.ask("v"); got != "17" {
		t.Fatalf("the process running before watch: v = %s", got)
	}
	for round := 0; round < 3; round++ {
		late := startLife(t, bin)
		l, _ := waitLine("pid "+late.pid+": patched with life", 10*time.Second)
		// Measured by the watcher from the kernel's exec event.
		_, after, ok := strings.Cut(l, "longest stop ")
		var stop, ms float64
		if !ok || !strings.Contains(after, "after its exec") {
			t.Fatalf("round %d: %q does not say when, after the exec", round, l)
		}
		if _, err := fmt.Sscanf(after, "%f ms, %f ms after its exec", &stop, &ms); err != nil {
			t.Fatalf("%q: %v", l, err)
		}
		took := time.Duration(ms * float64(time.Millisecond))
		t.Logf("round %d: patched %v after the exec", round, took)
		if took > bound {
			t.Fatalf("round %d: patched %v after the exec, want at most %v", round, took, bound)
		}
		if got := late.ask("v"); got != "17" {
			t.Fatalf("v = %s", got)
		}
	}
}
