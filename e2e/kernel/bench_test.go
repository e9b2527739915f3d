package kernel_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/livefix/livefix/internal/e2etest"
	"github.com/livefix/livefix/internal/kerneltest"
	"github.com/livefix/livefix/internal/kernelvm"
)

// applyReps is how many times each variant is applied in the guest.
const applyReps = 7

// BenchmarkKernelApply measures issue 3's "Apply": the time from the start
// of `livefix kernel load` to the transition being complete, next to the
// floor of plain insmod plus polling the transition file, in the same VM
// boot, alternating (testdata/applybench). It reports the medians and their
// ratio (target: at most 1.05). One iteration is one VM boot.
//
//	go test -run '^$' -bench KernelApply -benchtime 1x ./e2e/kernel/
func BenchmarkKernelApply(b *testing.B) {
	tgt := kerneltest.RequireVM(b)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	tmp := b.TempDir()
	livefix, livefixBuild := e2etest.Tools(b)
	bench := filepath.Join(e2etest.Build(b, "e2e/kernel/testdata/applybench"), "applybench")
	c := buildCases[0] // the /proc/cmdline string change
	outDir := filepath.Join(tmp, "patches")
	if out, code := buildPatch(ctx, b, livefixBuild, c, outDir); code != 0 {
		b.Fatalf("livefix-build kernel exit %d:\n%s", code, out)
	}
	files := map[string]string{
		"/bin/livefix":              livefix,
		"/bin/applybench":           bench,
		"/root/" + c.name + ".ko":   filepath.Join(outDir, c.name+".ko"),
		"/root/" + c.name + ".json": filepath.Join(outDir, c.name+".json"),
	}
	script := fmt.Sprintf("applybench -ko /root/%s.ko -name %s -reps %d", c.name, c.name, applyReps)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		res, err := kernelvm.Run(ctx, kernelvm.Config{Target: tgt, Script: script, Files: files, Timeout: 10 * time.Minute})
		if err != nil {
			b.Fatal(err)
		}
		if res.ExitCode != 0 {
			b.Fatalf("applybench exit %d:\n%s", res.ExitCode, res.Output)
		}
		times := map[string][]float64{}
		for _, line := range strings.Split(res.Output, "\n") {
			f := strings.Fields(line)
			if len(f) != 2 {
				continue
			}
			ns, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				continue
			}
			times[f[0]] = append(times[f[0]], ns/1e6)
		}
		lf, base := times["livefix"], times["insmod"]
		if len(lf) != applyReps || len(base) != applyReps {
			b.Fatalf("want %d runs per variant, got %d livefix and %d insmod:\n%s", applyReps, len(lf), len(base), res.Output)
		}
		b.Logf("livefix kernel load (ms): %v", lf)
		b.Logf("insmod + poll (ms):       %v", base)
		ml, mb := median(lf), median(base)
		b.ReportMetric(ml, "livefix-ms")
		b.ReportMetric(mb, "insmod-ms")
		b.ReportMetric(ml/mb, "ratio")
	}
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
