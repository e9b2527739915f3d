package ulp_test

import (
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/livefix/livefix/internal/proc"
	"github.com/livefix/livefix/ulp"
)

// BenchmarkPause applies and removes a one-function patch (value() of
// testdata/workers) in a target whose N threads call value() in a loop
// and record the longest gap between two calls. Apply stops one thread
// alone to map the memory (the others run) and every thread once per
// safety check (normally once) to write the jumps; the pause the target's
// threads experience is the longest stop of every thread. Metrics,
// medians over the iterations:
//
//	tool-pause-µs    the longest single stop of one Apply, first thread
//	                 stopped to last thread resumed (ulp.Result.Pause)
//	total-stopped-µs all stops of one Apply added up (ulp.Result.Stopped)
//	stops            stops of every thread per Apply (ulp.Result.Stops)
//	one-thread-µs    one thread alone stopped (ulp.Result.OneThread)
//	target-gap-µs    the longest gap any thread saw while the patch was applied
//	baseline-gap-µs  the longest gap over an equally long window without patching
//	gap-ratio        target-gap / baseline-gap
//	attach-pause-µs  the pause of a bare proc.Attach + Detach of the same
//	                 target (the floor any ptrace-based patcher pays)
//	pause-ratio      tool-pause / attach-pause
//	stopped-ratio    total-stopped / attach-pause
func BenchmarkPause(b *testing.B) {
	requireHost(b)
	work := b.TempDir()
	res := buildPatch(b, testdata(b, "workers"), testdata(b, "patches", "workers.patch"), "make -s", "workers", work, 1)
	for _, threads := range []int{1, 8} {
		b.Run(fmt.Sprintf("threads=%d", threads), func(b *testing.B) {
			tg := start(b, nil, res.OrigTarget, "gap", strconv.Itoa(threads))
			opts := ulp.Options{StateDir: b.TempDir()}
			time.Sleep(50 * time.Millisecond)
			var pauses, totals, gaps, base, bare, ones []time.Duration
			stops := 0
			for i := 0; i < b.N; i++ {
				tg.ask("z")
				t0 := time.Now()
				r, err := ulp.Apply(tg.pid, res.Patch, opts)
				if err != nil {
					b.Fatal(err)
				}
				d := time.Since(t0)
				time.Sleep(time.Millisecond) // every thread makes a call after the pause
				gaps = append(gaps, gapOf(b, tg))
				pauses = append(pauses, r.Pause)
				totals = append(totals, r.Stopped)
				ones = append(ones, r.OneThread)
				stops += r.Stops
				b.StopTimer()
				if _, err := ulp.Unpatch(tg.pid, "", opts); err != nil {
					b.Fatal(err)
				}
				// Baseline: the same window without touching the process.
				time.Sleep(time.Millisecond)
				tg.ask("z")
				time.Sleep(d + time.Millisecond)
				base = append(base, gapOf(b, tg))
				pr, err := proc.Attach(tg.pid, proc.AttachOptions{})
				if err != nil {
					b.Fatal(err)
				}
				if err := pr.Detach(); err != nil {
					b.Fatal(err)
				}
				bare = append(bare, pr.StoppedFor())
				b.StartTimer()
			}
			mp, mt, mg, mb := med(pauses), med(totals), med(gaps), med(base)
			b.ReportMetric(float64(mp.Microseconds()), "tool-pause-µs")
			b.ReportMetric(float64(mt.Microseconds()), "total-stopped-µs")
			b.ReportMetric(float64(stops)/float64(b.N), "stops")
			b.ReportMetric(float64(med(ones).Microseconds()), "one-thread-µs")
			b.ReportMetric(float64(mg.Microseconds()), "target-gap-µs")
			b.ReportMetric(float64(mb.Microseconds()), "baseline-gap-µs")
			if mb > 0 {
				b.ReportMetric(float64(mg)/float64(mb), "gap-ratio")
			}
			ma := med(bare)
			b.ReportMetric(float64(ma.Microseconds()), "attach-pause-µs")
			if ma > 0 {
				b.ReportMetric(float64(mp)/float64(ma), "pause-ratio")
				b.ReportMetric(float64(mt)/float64(ma), "stopped-ratio")
			}
		})
	}
}

func gapOf(b *testing.B, tg *target) time.Duration {
	ns, err := strconv.ParseInt(tg.ask("m"), 10, 64)
	if err != nil {
		b.Fatal(err)
	}
	return time.Duration(ns)
}

func med(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

// BenchmarkAll100 applies a library patch to 100 processes (--all) and
// removes it again; ns/op is one ApplyAll over all 100.
func BenchmarkAll100(b *testing.B) {
	requireHost(b)
	res := buildPatch(b, testdata(b, "calc"), testdata(b, "patches", "libccall.patch"), calcBuild, "libcalc.so", b.TempDir(), 1)
	dir := filepath.Dir(res.OrigTarget)
	for i := 0; i < 100; i++ {
		start(b, []string{"LD_LIBRARY_PATH=" + dir}, filepath.Join(dir, "app"))
	}
	opts := ulp.Options{StateDir: b.TempDir()}
	var pauses, totals []time.Duration
	var unpatch time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		pids, rs, errs, err := ulp.ApplyAll(res.Patch, opts)
		if err != nil || len(pids) != 100 {
			b.Fatalf("%d processes: %v", len(pids), err)
		}
		for j := range errs {
			if errs[j] != nil {
				b.Fatal(errs[j])
			}
			pauses = append(pauses, rs[j].Pause)
			totals = append(totals, rs[j].Stopped)
		}
		b.StopTimer()
		t0 := time.Now()
		if _, errs, err := ulp.UnpatchAll("", opts); err != nil || len(errs) > 0 {
			b.Fatal(err, errs)
		}
		unpatch += time.Since(t0)
		b.StartTimer()
	}
	b.ReportMetric(float64(med(pauses).Microseconds()), "median-pause-µs")
	b.ReportMetric(float64(med(totals).Microseconds()), "median-stopped-µs")
	b.ReportMetric(float64(unpatch.Milliseconds())/float64(b.N), "unpatch-all-ms")
}

// BenchmarkOverhead compares calls per second to value() in the running
// original with the live patch applied against the binary rebuilt with
// the same fix (the builder's patched tree), in the same run.
func BenchmarkOverhead(b *testing.B) {
	requireHost(b)
	work := b.TempDir()
	res := buildPatch(b, testdata(b, "workers"), testdata(b, "patches", "workers.patch"), "make -s", "workers", work, 1)
	live := start(b, nil, res.OrigTarget, "rate")
	rebuilt := start(b, nil, filepath.Join(work, "patched", "workers"), "rate")
	if _, err := ulp.Apply(live.pid, res.Patch, ulp.Options{StateDir: b.TempDir()}); err != nil {
		b.Fatal(err)
	}
	var lr, rr []float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// Alternate, so both see the same machine load.
		lr = append(lr, callsPerSec(b, live))
		rr = append(rr, callsPerSec(b, rebuilt))
	}
	slices.Sort(lr)
	slices.Sort(rr)
	l, r := lr[len(lr)/2], rr[len(rr)/2]
	b.ReportMetric(l/1e6, "patched-Mcalls/s")
	b.ReportMetric(r/1e6, "rebuilt-Mcalls/s")
	b.ReportMetric(l/r, "ratio")
}

func callsPerSec(b *testing.B, tg *target) float64 {
	n, err := strconv.ParseInt(tg.ask("R 100"), 10, 64)
	if err != nil {
		b.Fatal(err)
	}
	return float64(n) / 0.1
}
