package user

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/livefix/livefix/internal/e2etest"
)

// TestWatch: processes started after `livefix process watch` began are
// patched within 200 ms of their exec (issue 10, acceptance 7; the median
// of 5, none over 1 s), through the exec events (the scan period is 10 s),
// and one that already ran when it started is patched by its first scan.
// LIVEFIX_WATCH_BOUND_MS overrides the bound.
func TestWatch(t *testing.T) {
	require(t)
	livefix, livefixBuild := e2etest.Tools(t)
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

	// A long scan period: the processes started later can only be
	// patched in time through the exec events.
	w := exec.Command(livefix, "process", "watch", "--scan", "10s", lfp)
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
	var took []time.Duration
	for round := 0; round < 5; round++ {
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
		d := time.Duration(ms * float64(time.Millisecond))
		t.Logf("round %d: patched %v after the exec", round, d)
		took = append(took, d)
		if got := late.ask("v"); got != "17" {
			t.Fatalf("v = %s", got)
		}
	}
	// The bound holds for the median; a single round on an overloaded
	// machine (the target's threads waiting for a CPU to reach their
	// stop) may take longer, but never 5 times as long.
	sorted := slices.Clone(took)
	slices.Sort(sorted)
	if med := sorted[len(sorted)/2]; med > bound {
		t.Fatalf("median %v after the exec (rounds %v), want at most %v", med, took, bound)
	}
	if worst := sorted[len(sorted)-1]; worst > 5*bound {
		t.Fatalf("a round took %v after the exec (rounds %v), want at most %v", worst, took, 5*bound)
	}
}
