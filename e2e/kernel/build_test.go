package kernel_test

import (
	"context"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"
)

// buildPatches runs one `livefix-build kernel ARGS...` per entry of args
// at once (each compiles in its own private view of the shared kernel
// tree, so the compiles overlap too, not only the steps around them;
// internal/kbuild's view.go), then fails the test on the
// first one that failed, naming it with its output, and logs how long
// each took. names label the builds in that order; it returns each
// build's combined output.
func buildPatches(ctx context.Context, t *testing.T, livefixBuild string, names []string, args [][]string) [][]byte {
	t.Helper()
	type built struct {
		out  []byte
		err  error
		secs float64
	}
	results := make([]built, len(args))
	var wg sync.WaitGroup
	for i, a := range args {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			cmd := exec.CommandContext(ctx, livefixBuild, append([]string{"kernel"}, a...)...)
			// A test binary killed by -timeout exits without cancelling
			// ctx: the builds (and their compilers and VMs) die with it.
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			out, err := cmd.CombinedOutput()
			results[i] = built{out, err, time.Since(start).Seconds()}
		}()
	}
	wg.Wait()
	for i, r := range results {
		if r.err != nil {
			t.Fatalf("%s: livefix-build kernel: %v\n%s", names[i], r.err, r.out)
		}
		t.Logf("%s built in %.1fs", names[i], r.secs)
	}
	outs := make([][]byte, len(results))
	for i, r := range results {
		outs[i] = r.out
	}
	return outs
}
