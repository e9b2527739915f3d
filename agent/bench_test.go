package agent

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/livefix/livefix/internal/patchtest"
)

// BenchmarkUpdateNoChange is one agent's full update (TUF refresh,
// policy, status) when nothing new is published.
func BenchmarkUpdateNoChange(b *testing.B) {
	e := newEnv(b, "")
	e.publish(1, "stable", patchtest.KernelPatch{})
	if _, err := e.agent.Update(context.Background(), UpdateOptions{}); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		if _, err := e.agent.Update(context.Background(), UpdateOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWaveAgent is what each agent of a fleet does in a publish
// wave: b.N agents (each its own state directory, metadata cache and
// HTTP client, as separate hosts have) hold level 1 and have polled;
// level 2 (a 64 KiB module) is published; each agent's timed part is
// its next poll (the timestamp changed) and the update that follows:
// verified refresh, download, hash checks, apply (the kernel step is
// the test's fake), status. cpu-ms/op is the process's CPU, the
// loopback server included.
func BenchmarkWaveAgent(b *testing.B) {
	e := newEnv(b, "")
	tag := strings.Repeat("x", 64<<10)
	e.publish(1, "stable", patchtest.KernelPatch{Tag: tag})
	agents := make([]*Agent, b.N)
	kernels := make([]*fakeKernel, b.N)
	ctx := context.Background()
	for i := range agents {
		cfg := *e.agent.Config
		cfg.StateDir = filepath.Join(b.TempDir(), fmt.Sprint(i))
		kernels[i] = &fakeKernel{id: kernelID}
		agents[i] = &Agent{Config: &cfg, Kernel: kernels[i], Version: "1.0.0", Progress: io.Discard}
		if _, err := agents[i].Poll(ctx); err != nil {
			b.Fatal(err)
		}
		if _, err := agents[i].Update(ctx, UpdateOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	e.publish(2, "stable", patchtest.KernelPatch{Tag: tag})
	cpu0 := cpuTime()
	b.ResetTimer()
	// Labelled for profiles: go tool pprof -tagfocus phase=wave.
	pprof.Do(ctx, pprof.Labels("phase", "wave"), func(ctx context.Context) {
		for i, a := range agents {
			changed, err := a.Poll(ctx)
			if err != nil || !changed {
				b.Fatalf("poll: changed %v, %v", changed, err)
			}
			if _, err := a.Update(ctx, UpdateOptions{}); err != nil {
				b.Fatal(err)
			}
			if l, _ := kernels[i].get(); l != 2 {
				b.Fatalf("agent %d at level %d", i, l)
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(time.Millisecond)/float64(b.N), "cpu-ms/op")
}

// cpuTime is this process's user and system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
