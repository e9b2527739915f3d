package user

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/livefix/livefix/internal/e2etest"
)

// BenchmarkProcessCommands measures userspace live patching from outside,
// the way a user runs it (issue 10, "Performance"): `livefix process
// patch` and `livefix process unpatch` run as commands, a new process
// each time (cold start included), against testdata/gapd built by its own
// Makefile, whose worker threads record the longest gap between two calls
// of the patched function check(). Each iteration is one patch command and
// one unpatch command, alternating, and then a window as long as the
// patch command without patching (the target's own gap, measured in the
// same run: the baseline). Run it with -benchtime 10x for the issue's
// median of 10. Metrics (medians unless said otherwise):
//
//	patch-gap-µs        longest gap any worker saw during a patch command
//	first-gap-µs        the same for the first patch of the process
//	max-patch-gap-µs    the longest over all patch commands
//	unpatch-gap-µs      longest gap during an unpatch command
//	baseline-gap-µs     longest gap over an equal window without patching
//	above-baseline-µs   patch-gap minus baseline-gap
//	above-baseline-mean-µs  the same for the means: with more busy
//	                    threads than CPUs the gaps come in whole time
//	                    slices (4 ms at HZ=250), so a median of 10 moves
//	                    by a slice from run to run; the means move less
//	patch-ms, unpatch-ms  wall time of the commands (exec to exit)
//	patch-cpu-ms        user+system CPU time of a patch command
//	start-ms            wall time of `livefix process --help` (the cold
//	                    start alone: exec, runtime, package init)
//
// LIVEFIX_BENCH_LIVEFIX=PATH measures that livefix program instead of
// the one built from the tree (livefix-build is still the tree's).
//
// With LIVEFIX_TRACE=1 in the environment the commands record their steps
// (internal/proc's trace) and gapd says when its longest gap began and
// ended, in the same clock; the benchmark then attributes each patch and
// unpatch gap (see attribute) and logs the steps inside the gap:
//
//	patch-lead-µs       gap start to the stop's first PTRACE_INTERRUPT
//	                    (the worker was already off its CPU: preempted,
//	                    by the command itself or by other load)
//	patch-stop-µs       the part of the gap inside the commit stop (its
//	                    first interrupt to its last detach or cont)
//	patch-tail-µs       the stop's end to the gap's end (the worker's
//	                    wake-up after PTRACE_DETACH/CONT, or preemption)
//	patch-exec-to-gap-ms  exec of the command to the gap's start
//	patch-exec-to-main-ms exec of the command to its main() (the cold
//	                    start: loading, runtime and package init)
//	unpatch-lead-µs ... the same for unpatch
//
// Sub-benchmarks: 1 and 8 worker threads, and 1 worker with the binary
// stripped and its debug file split off (the patch was built through the
// debug file; applying must cost the same).
func BenchmarkProcessCommands(b *testing.B) {
	require(b)
	livefix, livefixBuild := e2etest.Tools(b)
	if p := os.Getenv("LIVEFIX_BENCH_LIVEFIX"); p != "" {
		// Another livefix to measure (e.g. one built from an earlier
		// commit, for a before/after in the same session).
		livefix = p
	}
	src, _ := filepath.Abs(filepath.Join("testdata", "gapd"))
	patch, _ := filepath.Abs(filepath.Join("testdata", "gapd.patch"))
	prod := filepath.Join(b.TempDir(), "gapd")
	if out, err := exec.Command("cp", "-a", src, prod).CombinedOutput(); err != nil {
		b.Fatal(err, string(out))
	}
	if out, err := exec.Command("make", "-s", "-C", prod).CombinedOutput(); err != nil {
		b.Fatal(err, string(out))
	}
	bin := filepath.Join(prod, "gapd")
	lfp := filepath.Join(b.TempDir(), "gapd.lfp")
	if out, err := exec.Command(livefixBuild, "user", "--src", prod, "--patch", patch, "--build", "make -s",
		"--target-binary", bin, "-o", lfp).CombinedOutput(); err != nil {
		b.Fatalf("livefix-build: %v\n%s", err, out)
	}
	// Stripped as Debian's dh_strip does, the debug file next to it.
	deploy := filepath.Join(b.TempDir(), "deploy")
	os.MkdirAll(deploy, 0o755)
	sbin, dbg := filepath.Join(deploy, "gapd"), filepath.Join(deploy, "gapd.debug")
	slfp := filepath.Join(b.TempDir(), "gapd-stripped.lfp")
	for _, c := range [][]string{
		{"cp", bin, sbin},
		{"objcopy", "--only-keep-debug", "--compress-debug-sections", sbin, dbg},
		{"strip", "--remove-section=.comment", "--remove-section=.note", "--strip-unneeded", sbin},
		{"objcopy", "--add-gnu-debuglink=" + dbg, sbin},
		{livefixBuild, "user", "--src", prod, "--patch", patch, "--build", "make -s", "--target-binary", sbin, "-o", slfp},
	} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			b.Fatalf("%v: %v\n%s", c, err, out)
		}
	}

	for _, bc := range []struct {
		name    string
		bin     string
		lfp     string
		workers int
	}{
		{"workers=1", bin, lfp, 1},
		{"workers=8", bin, lfp, 8},
		{"workers=1/stripped", sbin, slfp, 1},
	} {
		b.Run(bc.name, func(b *testing.B) {
			g := startGapd(b, bc.bin, bc.workers)
			env := append(os.Environ(), "LIVEFIX_STATE_DIR="+b.TempDir())
			tracing := os.Getenv("LIVEFIX_TRACE") == "1"
			var execMono int64
			command := func(args ...string) (wall, cpu time.Duration, out string) {
				cmd := exec.Command(livefix, args...)
				cmd.Env = env
				var o bytes.Buffer
				cmd.Stdout, cmd.Stderr = &o, &o
				execMono = monoNow()
				t0 := time.Now()
				err := cmd.Run()
				wall = time.Since(t0)
				if err != nil {
					b.Fatalf("livefix %s: %v\n%s", strings.Join(args, " "), err, o.String())
				}
				ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
				cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
				return wall, cpu, o.String()
			}
			time.Sleep(100 * time.Millisecond) // the workers are running
			var pgap, ugap, base, pwall, uwall, pcpu, start []time.Duration
			var first time.Duration
			var pat, uat []attribution
			for i := 0; i < b.N; i++ {
				g.ask("z")
				w, c, out := command("process", "patch", "--pid", g.pid, bc.lfp)
				gap := g.gap()
				if tracing {
					a := attribute(execMono, g.window(), out)
					pat = append(pat, a)
					if i < 3 {
						b.Logf("patch %d: %s", i, a)
					}
				}
				if v := g.ask("v"); v != "5" {
					b.Fatalf("after patch: check(1) = %s, want 5\n%s", v, out)
				}
				if i == 0 {
					first = gap
					b.Logf("first patch: %s", strings.TrimSpace(untraced(out)))
				}
				pgap, pwall, pcpu = append(pgap, gap), append(pwall, w), append(pcpu, c)

				g.ask("z")
				w, _, out = command("process", "unpatch", "--pid", g.pid)
				ugap, uwall = append(ugap, g.gap()), append(uwall, w)
				if tracing {
					a := attribute(execMono, g.window(), out)
					uat = append(uat, a)
					if i < 3 {
						b.Logf("unpatch %d: %s", i, a)
					}
				}
				if v := g.ask("v"); v != "4" {
					b.Fatalf("after unpatch: check(1) = %s, want 4\n%s", v, out)
				}

				// The baseline: a window as long as the patch command,
				// nothing done to the process.
				g.ask("z")
				time.Sleep(pwall[i])
				base = append(base, g.gap())

				w, _, _ = command("process", "--help")
				start = append(start, w)
			}
			us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
			ms := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }
			b.ReportMetric(us(median(pgap)), "patch-gap-µs")
			b.ReportMetric(us(first), "first-gap-µs")
			b.ReportMetric(us(slices.Max(pgap)), "max-patch-gap-µs")
			b.ReportMetric(us(median(ugap)), "unpatch-gap-µs")
			b.ReportMetric(us(median(base)), "baseline-gap-µs")
			b.ReportMetric(us(median(pgap)-median(base)), "above-baseline-µs")
			b.ReportMetric(us(mean(pgap)-mean(base)), "above-baseline-mean-µs")
			b.ReportMetric(ms(median(pwall)), "patch-ms")
			b.ReportMetric(ms(median(uwall)), "unpatch-ms")
			b.ReportMetric(ms(median(pcpu)), "patch-cpu-ms")
			b.ReportMetric(ms(median(start)), "start-ms")
			for _, x := range []struct {
				name string
				a    []attribution
			}{{"patch", pat}, {"unpatch", uat}} {
				if len(x.a) == 0 {
					continue
				}
				pick := func(f func(attribution) time.Duration) time.Duration {
					var d []time.Duration
					for _, a := range x.a {
						d = append(d, f(a))
					}
					return median(d)
				}
				b.ReportMetric(us(pick(func(a attribution) time.Duration { return a.lead })), x.name+"-lead-µs")
				b.ReportMetric(us(pick(func(a attribution) time.Duration { return a.stop })), x.name+"-stop-µs")
				b.ReportMetric(us(pick(func(a attribution) time.Duration { return a.tail })), x.name+"-tail-µs")
				b.ReportMetric(ms(pick(func(a attribution) time.Duration { return a.execToGap })), x.name+"-exec-to-gap-ms")
				b.ReportMetric(ms(pick(func(a attribution) time.Duration { return a.execToMain })), x.name+"-exec-to-main-ms")
			}
			b.Logf("patch gaps %v; unpatch gaps %v; baseline %v; patch walls %v; unpatch walls %v",
				pgap, ugap, base, pwall, uwall)
		})
	}
}

// untraced is out without its trace lines.
func untraced(out string) string {
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		if !strings.HasPrefix(l, "livefix-trace ") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// attribution splits one longest gap by the steps the command traced.
type attribution struct {
	lead, stop, tail      time.Duration // see BenchmarkProcessCommands
	execToGap, execToMain time.Duration
	steps                 []string // the steps inside the gap, offsets from its start
	gap                   time.Duration
	// tid is the worker that saw the gap; restart its place (from 1)
	// among the threads the stop in the gap restarted, of restarted.
	tid                int64
	restart, restarted int
}

func (a attribution) String() string {
	where := ""
	if a.restarted > 0 {
		where = fmt.Sprintf(" (restarted %d of %d)", a.restart, a.restarted)
	}
	return fmt.Sprintf("gap %v of thread %d%s = lead %v + stop %v + tail %v, %v after exec; in the gap: %s",
		a.gap, a.tid, where, a.lead, a.stop, a.tail, a.execToGap, strings.Join(a.steps, ", "))
}

// attribute sets the gap [w[0], w[1]] of thread w[2] (gapd's w) against
// the "livefix-trace MONO STEP" lines of a command's output that exec'd at
// execMono. With no step inside the gap, all of it is lead.
func attribute(execMono int64, w [3]int64, out string) attribution {
	a := attribution{gap: time.Duration(w[1] - w[0]), execToGap: time.Duration(w[0] - execMono), tid: w[2]}
	var order []string // threads restarted by the stop, in order
	// The stop: from the first interrupt after the last "stop" mark
	// that precedes the gap's end, to the last detach or cont after it.
	var first, last int64
	inStop := false
	for _, line := range strings.Split(out, "\n") {
		f := strings.SplitN(line, " ", 3)
		if len(f) != 3 || f[0] != "livefix-trace" {
			continue
		}
		t, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			continue
		}
		step := f[2]
		if step == "main" {
			a.execToMain = time.Duration(t - execMono)
		}
		if t <= w[1] && strings.Contains(step, ": stop") {
			inStop, first, last, order = true, 0, 0, nil
		}
		if inStop && t <= w[1] {
			switch {
			case first == 0 && strings.HasPrefix(step, "interrupt "):
				first = t
			case first != 0 && (strings.HasPrefix(step, "detach ") || strings.HasPrefix(step, "cont ")):
				last = t
				order = append(order, strings.Fields(step)[1])
			}
		}
		if t >= w[0] && t <= w[1] {
			a.steps = append(a.steps, fmt.Sprintf("+%dµs %s", (t-w[0])/1000, step))
		}
	}
	if first == 0 || last < w[0] {
		a.lead = a.gap // no stop inside the gap
		return a
	}
	first = max(first, w[0])
	a.lead, a.stop, a.tail = time.Duration(first-w[0]), time.Duration(last-first), time.Duration(w[1]-last)
	a.restart, a.restarted = slices.Index(order, strconv.FormatInt(w[2], 10))+1, len(order)
	return a
}

func mean(d []time.Duration) time.Duration {
	var sum time.Duration
	for _, x := range d {
		sum += x
	}
	if len(d) == 0 {
		return 0
	}
	return sum / time.Duration(len(d))
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

// gapd is a running testdata/gapd.
type gapd struct {
	tb  testing.TB
	in  io.Writer
	rd  *bufio.Reader
	pid string
}

func startGapd(tb testing.TB, bin string, workers int) *gapd {
	tb.Helper()
	cmd := exec.Command(bin, strconv.Itoa(workers))
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	g := &gapd{tb: tb, in: in, rd: bufio.NewReader(out), pid: strconv.Itoa(cmd.Process.Pid)}
	if got := g.ask(""); got != "ready" {
		tb.Fatalf("gapd: %q", got)
	}
	return g
}

func (g *gapd) ask(q string) string {
	g.tb.Helper()
	if q != "" {
		io.WriteString(g.in, q+"\n")
	}
	c := make(chan string, 1)
	go func() { s, _ := g.rd.ReadString('\n'); c <- strings.TrimSpace(s) }()
	select {
	case s := <-c:
		return s
	case <-time.After(10 * time.Second):
		g.tb.Fatalf("gapd: no answer to %q", q)
	}
	return ""
}

// window is when the gap of the last m began and ended (CLOCK_MONOTONIC),
// and the thread id of the worker that saw it.
func (g *gapd) window() [3]int64 {
	g.tb.Helper()
	f := strings.Fields(g.ask("w"))
	var w [3]int64
	for i := range min(len(f), 3) {
		w[i], _ = strconv.ParseInt(f[i], 10, 64)
	}
	return w
}

// gap is the longest gap between two calls of check() since the last z.
func (g *gapd) gap() time.Duration {
	g.tb.Helper()
	s := g.ask("m")
	ns, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		g.tb.Fatalf("gapd: longest gap %q", s)
	}
	return time.Duration(ns)
}
