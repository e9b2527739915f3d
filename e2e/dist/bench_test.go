package dist_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/livefix/livefix/internal/e2etest"
	"github.com/livefix/livefix/internal/patchtest"
	"github.com/livefix/livefix/patchrepo"
)

// benchEnv is a repository with level 1 published, served by a
// `livefix-server static` process on loopback.
type benchEnv struct {
	bin, data, url string
	server         *exec.Cmd
}

const benchBuildID = "f75010e906ea0123456789abcdef0123456789ab"

func newBenchEnv(b *testing.B) *benchEnv { return newBenchEnvWith(b, "") }

// newBenchEnvWith uses the livefix-server in directory bin ("": this
// tree's).
func newBenchEnvWith(b *testing.B, bin string) *benchEnv {
	b.Helper()
	tmp := b.TempDir()
	if bin == "" {
		bin = e2etest.Build(b, "livefix-server")
	}
	e := &benchEnv{bin: bin, data: filepath.Join(tmp, "data")}
	if out, err := exec.Command(filepath.Join(e.bin, "livefix-server"), "keys", "init", "--data", e.data).CombinedOutput(); err != nil {
		b.Fatalf("keys init: %v\n%s", err, out)
	}
	e.publish(b, 1)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	e.server = exec.Command(filepath.Join(e.bin, "livefix-server"), "static", "--data", e.data, "--listen", addr)
	e.server.Stderr = os.Stderr
	if err := e.server.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { e.server.Process.Kill(); e.server.Wait() })
	e.url = "http://" + addr
	for i := 0; ; i++ {
		if resp, err := http.Get(e.url + "/metadata/timestamp.json"); err == nil {
			resp.Body.Close()
			break
		}
		if i > 100 {
			b.Fatal("livefix-server static did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return e
}

func (e *benchEnv) publish(b *testing.B, level int) {
	b.Helper()
	ko, err := patchtest.KernelPatch{Name: fmt.Sprintf("lf_bench_l%d", level), Level: level, BuildID: benchBuildID,
		Tag: strings.Repeat("x", 64<<10)}.Write(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	if out, err := exec.Command(filepath.Join(e.bin, "livefix-server"), "publish", ko, "--channel", "stable", "--data", e.data).CombinedOutput(); err != nil {
		b.Fatalf("publish: %v\n%s", err, out)
	}
}

// cpuTicks is a process's user+system time in clock ticks (1/100 s).
func cpuTicks(b *testing.B, pid int) int64 {
	s, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(string(s[strings.LastIndexByte(string(s), ')')+2:]))
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return u + st
}

func rssKiB(b *testing.B, pid int) int64 {
	s, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(string(s), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	b.Fatal("no VmRSS")
	return 0
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// BenchmarkPublishToFleet measures the time from `livefix-server publish`
// until 99% of LIVEFIX_BENCH_AGENTS (default 10,000) simulated agents
// (simagent: the real agent, kernel step stubbed) hold the new level,
// polling every LIVEFIX_BENCH_POLL seconds (default 30), and the server
// process's CPU during that wave. With LIVEFIX_BENCH_BASELINE=REV (a git
// revision) it runs the same wave with the simagent of that revision too
// (built from `git archive REV`) first, so that the two compare under
// the same machine load. LIVEFIX_BENCH_STATE=DIR puts the simulated
// hosts' state directories below DIR (default: the test's temporary
// directory).
func BenchmarkPublishToFleet(b *testing.B) {
	n := envInt("LIVEFIX_BENCH_AGENTS", 10000)
	poll := time.Duration(envInt("LIVEFIX_BENCH_POLL", 30)) * time.Second
	sims := map[string]string{}
	names := []string{"current"}
	sims["current"] = filepath.Join(e2etest.Build(b, "e2e/dist/simagent"), "simagent")
	if rev := os.Getenv("LIVEFIX_BENCH_BASELINE"); rev != "" {
		name := "baseline-" + rev
		sims[name] = buildAt(b, rev, "./e2e/dist/simagent")
		names = []string{name, "current"}
	}
	for range b.N {
		for _, name := range names {
			b.Run(name, func(b *testing.B) {
				for range b.N {
					wave(b, sims[name], n, poll)
				}
			})
		}
	}
}

// buildAt builds package pkg of git revision rev (exported with git
// archive into a temporary directory) and returns the binary.
func buildAt(b *testing.B, rev, pkg string) string {
	b.Helper()
	top, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		b.Fatalf("LIVEFIX_BENCH_BASELINE needs a git checkout: %v", err)
	}
	src := b.TempDir()
	archive := exec.Command("sh", "-c", `git -C "$1" archive "$2" | tar -x -C "$3"`, "sh", strings.TrimSpace(string(top)), rev, src)
	if out, err := archive.CombinedOutput(); err != nil {
		b.Fatalf("git archive %s: %v\n%s", rev, err, out)
	}
	out := filepath.Join(src, "bin", filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, pkg)
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if msg, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("build %s at %s: %v\n%s", pkg, rev, err, msg)
	}
	return out
}

// wave runs one publish wave: n agents of simagent binary sim warm at
// level 1, then level 2 published; it reports the time until 99% hold
// level 2, the server's CPU in that time and the simulator's CPU per
// agent.
func wave(b *testing.B, sim string, n int, poll time.Duration) {
	e := newBenchEnv(b)
	root := filepath.Join(patchrepo.RepositoryDir(e.data), "metadata", "1.root.json")
	ctx, cancel := context.WithCancel(context.Background())
	state := filepath.Join(b.TempDir(), "agents")
	if d := os.Getenv("LIVEFIX_BENCH_STATE"); d != "" {
		// The simulated hosts' state directories elsewhere (such as a
		// tmpfs): each real host writes its few files on its own disk,
		// the simulator puts every host's on one.
		tmp, err := os.MkdirTemp(d, "simagents-")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(tmp) })
		state = tmp
	}
	args := []string{"-repo", e.url, "-root", root, "-dir", state, "-n", strconv.Itoa(n), "-poll", poll.String()}
	if p := os.Getenv("LIVEFIX_BENCH_SIMPROFILE"); p != "" && !strings.HasPrefix(filepath.Base(b.Name()), "baseline") {
		// A CPU profile of the simulator from ready to the end.
		args = append(args, "-cpuprofile", p+"."+filepath.Base(b.Name()))
	}
	cmd := exec.CommandContext(ctx, sim, args...)
	// Stopped with SIGTERM, so that it can write its profile.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	cmd.Stderr = os.Stderr
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		cancel()
		b.Fatal(err)
	}
	defer func() { cancel(); cmd.Wait() }()
	lines := make(chan string, 1000)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	warmStart := time.Now()
	waitLine(b, lines, "ready", 30*time.Minute)
	b.Logf("%d agents warm (level 1) in %s", n, time.Since(warmStart).Round(time.Second))
	// One interval for every daemon to start and settle.
	time.Sleep(poll + 5*time.Second)
	b.ResetTimer()
	cpu0, sim0, t0 := cpuTicks(b, e.server.Process.Pid), cpuTicks(b, cmd.Process.Pid), time.Now()
	e.publish(b, 2)
	want := (n*99 + 99) / 100
	var t99 time.Duration
	for t99 == 0 {
		l, ok := <-lines
		if !ok {
			b.Fatal("simagent exited")
		}
		var level, count int
		if _, err := fmt.Sscanf(l, "level %d %d", &level, &count); err == nil && level == 2 && count >= want {
			t99 = time.Since(t0)
		}
	}
	b.StopTimer()
	cpu := float64(cpuTicks(b, e.server.Process.Pid)-cpu0) / 100 / t99.Seconds()
	simCPU := float64(cpuTicks(b, cmd.Process.Pid)-sim0) * 10 / float64(want)
	b.ReportMetric(t99.Seconds(), "s-to-99%")
	b.ReportMetric(poll.Seconds()+10, "s-target")
	b.ReportMetric(cpu, "server-cores")
	b.ReportMetric(simCPU, "sim-cpu-ms/agent")
	b.Logf("%d agents, poll %s: 99%% at level 2 after %s; server used %.2f cores; simulator %.2f ms CPU per updated agent",
		n, poll, t99.Round(100*time.Millisecond), cpu, simCPU)
}

func waitLine(b *testing.B, lines <-chan string, want string, timeout time.Duration) {
	b.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				b.Fatalf("simagent exited before %q", want)
			}
			if l == want {
				return
			}
		case <-deadline:
			b.Fatalf("no %q within %s", want, timeout)
		}
	}
}

// BenchmarkConditionalTimestamp measures conditional GETs of
// timestamp.json (If-None-Match, answered 304) per second against a
// `livefix-server static` process. The load generator is kept light so
// that the server, not the client, is measured: 32 keep-alive connections,
// each with 16 requests in flight (HTTP/1.1 pipelining), each response's
// status line checked and its header read to the blank line (a 304 has
// no body), as wrk-like generators do. server-cores is the server
// process's CPU; req/s-per-server-core is what one core of the server
// sustains.
//
// With LIVEFIX_BENCH_BASELINE=REV, the livefix-server of that revision
// is measured first in the same run.
func BenchmarkConditionalTimestamp(b *testing.B) {
	if rev := os.Getenv("LIVEFIX_BENCH_BASELINE"); rev != "" {
		bin := filepath.Dir(buildAt(b, rev, "./cmd/livefix-server"))
		b.Run("baseline-"+rev, func(b *testing.B) { conditionalTimestamp(b, newBenchEnvWith(b, bin)) })
	}
	b.Run("current", func(b *testing.B) { conditionalTimestamp(b, newBenchEnv(b)) })
}

func conditionalTimestamp(b *testing.B, e *benchEnv) {
	resp, err := http.Get(e.url + "/metadata/timestamp.json")
	if err != nil {
		b.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	etag := resp.Header.Get("ETag")
	host := strings.TrimPrefix(e.url, "http://")
	const conns, depth = 32, 16
	reqBytes := []byte("GET /metadata/timestamp.json HTTP/1.1\r\nHost: " + host + "\r\nUser-Agent: bench\r\nIf-None-Match: " + etag + "\r\n\r\n")
	batch := bytes.Repeat(reqBytes, depth)
	dur := time.Duration(envInt("LIVEFIX_BENCH_SECONDS", 5)) * time.Second
	var ok, bad atomic.Int64
	b.ResetTimer()
	for range b.N {
		cpu0 := cpuTicks(b, e.server.Process.Pid)
		start := time.Now()
		var wg sync.WaitGroup
		for range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := net.Dial("tcp", host)
				if err != nil {
					bad.Add(1)
					return
				}
				defer c.Close()
				br := bufio.NewReaderSize(c, 64<<10)
				for time.Since(start) < dur {
					if _, err := c.Write(batch); err != nil {
						bad.Add(1)
						return
					}
					for range depth {
						if !read304(br) {
							bad.Add(1)
							return
						}
						ok.Add(1)
					}
				}
			}()
		}
		wg.Wait()
		el := time.Since(start)
		cpu := float64(cpuTicks(b, e.server.Process.Pid)-cpu0) / 100 / el.Seconds()
		if bad.Load() > 0 {
			b.Fatalf("%d requests failed or were not 304", bad.Load())
		}
		rate := float64(ok.Load()) / el.Seconds()
		b.ReportMetric(rate, "req/s")
		b.ReportMetric(cpu, "server-cores")
		b.ReportMetric(rate/cpu, "req/s-per-server-core")
		b.Logf("%d conditional requests in %s: %.0f/s, server %.2f cores (%.0f/s per server core)", ok.Load(), el.Round(time.Millisecond), rate, cpu, rate/cpu)
		ok.Store(0)
	}
}

// read304 reads one response header from br and says whether it was a
// well-formed 304 Not Modified (which has no body).
func read304(br *bufio.Reader) bool {
	line, err := br.ReadSlice('\n')
	if err != nil || !bytes.HasPrefix(line, []byte("HTTP/1.1 304 ")) {
		return false
	}
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return false
		}
		if len(line) == 2 && line[0] == '\r' {
			return true
		}
		const cl = "content-length:"
		if len(line) > len(cl) && bytes.EqualFold(line[:len(cl)], []byte(cl)) && !bytes.Equal(bytes.TrimSpace(line[len(cl):]), []byte("0")) {
			return false
		}
	}
}

// BenchmarkDaemonIdle runs one simulated agent daemon (default 60 s poll)
// and measures its resident memory and the CPU it uses between polls.
func BenchmarkDaemonIdle(b *testing.B) {
	e := newBenchEnv(b)
	bin := filepath.Join(e2etest.Build(b, "e2e/dist/simagent"), "simagent")
	root := filepath.Join(patchrepo.RepositoryDir(e.data), "metadata", "1.root.json")
	for range b.N {
		ctx, cancel := context.WithCancel(context.Background())
		sim := exec.CommandContext(ctx, bin, "-repo", e.url, "-root", root,
			"-dir", b.TempDir(), "-n", "1", "-poll", "60s", "-spread=false")
		stdout, _ := sim.StdoutPipe()
		if err := sim.Start(); err != nil {
			b.Fatal(err)
		}
		sc := bufio.NewScanner(stdout)
		for sc.Scan() && sc.Text() != "ready" {
		}
		go io.Copy(io.Discard, stdout)
		pid := sim.Process.Pid
		time.Sleep(5 * time.Second) // its daemon's first poll and update
		idle := time.Duration(envInt("LIVEFIX_BENCH_IDLE", 40)) * time.Second
		cpu0 := cpuTicks(b, pid)
		time.Sleep(idle)
		cpu := cpuTicks(b, pid) - cpu0
		rss := rssKiB(b, pid)
		cancel()
		sim.Wait()
		b.ReportMetric(float64(rss)/1024, "RSS-MiB")
		b.ReportMetric(float64(cpu)*10, "cpu-ms-idle")
		b.Logf("daemon idle: RSS %.1f MiB, %d ms CPU in %s between polls", float64(rss)/1024, cpu*10, idle)
	}
}
