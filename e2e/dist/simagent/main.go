// Command simagent runs many simulated livefix agents in one process for
// the distribution benchmarks: each is the real agent (TUF refresh,
// policy, download, verification, daemon loop with conditional polls),
// with its own state directory and metadata cache, and only the kernel
// step stubbed out (a level held in memory).
//
//	simagent -repo URL -root FILE -dir DIR -n N [-poll D] [-cpuprofile FILE]
//
// It prints "ready" once every agent holds the repository's current level
// (brought there with a bounded concurrency), then runs every agent's
// daemon (first polls spread over one interval) and prints "level L N"
// each time N agents have reached level L (every 1% of N and at N).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/livefix/livefix/agent"
)

// kernel is the stubbed kernel step.
type kernel struct {
	level   atomic.Int64
	reached func(int)
}

func (k *kernel) BuildID() (string, error) { return buildID, nil }
func (k *kernel) Applied() (int, string, error) {
	return int(k.level.Load()), "lf_bench", nil
}
func (k *kernel) Apply(_ context.Context, ko string, _ bool, _ io.Writer) error {
	// The module was downloaded and verified; read its level from the
	// file name the agent gave (NAME is lf_bench_lN).
	fi, err := os.Stat(ko)
	if err != nil || fi.Size() == 0 {
		return fmt.Errorf("stub kernel: %s: %v", ko, err)
	}
	var l int
	if _, err := fmt.Sscanf(filepath.Base(ko), "lf_bench_l%d.ko", &l); err != nil {
		return fmt.Errorf("stub kernel: %s: %v", ko, err)
	}
	k.level.Store(int64(l))
	k.reached(l)
	return nil
}
func (k *kernel) Unload(context.Context, io.Writer) error { k.level.Store(0); return nil }

var buildID = "f75010e906ea0123456789abcdef0123456789ab"

func main() {
	repo := flag.String("repo", "", "repository URL")
	root := flag.String("root", "", "trusted root metadata")
	dir := flag.String("dir", "", "state directories go below this")
	n := flag.Int("n", 1, "agents")
	poll := flag.Duration("poll", 60*time.Second, "poll interval")
	warm := flag.Int("warm", 32, "concurrency of the first update")
	spread := flag.Bool("spread", true, "spread the daemons' first polls over one interval")
	flag.StringVar(&buildID, "build-id", buildID, "kernel build-id the agents run")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile from ready until the end to this file")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var mu sync.Mutex
	counts := map[int]int{}
	step := max(*n/100, 1)
	reached := func(l int) {
		mu.Lock()
		counts[l]++
		c := counts[l]
		mu.Unlock()
		if c%step == 0 || c == *n {
			fmt.Printf("level %d %d\n", l, c)
		}
	}
	agents := make([]*agent.Agent, *n)
	for i := range agents {
		cfg := &agent.Config{Repository: *repo, Root: *root, StateDir: filepath.Join(*dir, strconv.Itoa(i)),
			PollInterval: agent.Duration{Duration: *poll}}
		if err := cfg.Validate(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		agents[i] = &agent.Agent{Config: cfg, Kernel: &kernel{reached: reached}, Version: "1.0.0"}
	}
	// Bring every agent to the current level, a few at a time.
	sem := make(chan struct{}, *warm)
	var wg sync.WaitGroup
	var failed atomic.Int64
	for _, a := range agents {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if _, err := a.Update(ctx, agent.UpdateOptions{}); err != nil {
				failed.Add(1)
				fmt.Fprintln(os.Stderr, "warm-up:", err)
			}
		}()
	}
	wg.Wait()
	if failed.Load() > 0 {
		os.Exit(1)
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}
	fmt.Println("ready")
	for _, a := range agents {
		go func() {
			// Spread the first polls over one interval, as hosts booted at
			// different times are.
			var delay time.Duration
			if *spread {
				delay = rand.N(*poll)
			}
			t := time.NewTimer(delay)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			_ = a.Run(ctx, agent.DaemonOptions{})
		}()
	}
	<-ctx.Done()
}
