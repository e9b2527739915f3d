package host_test

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/livefix/livefix/internal/e2etest"
	"github.com/livefix/livefix/internal/kerneltest"
)

// benchReps is how many times each command is measured in the guest.
const benchReps = 7

// benchScript measures, in one boot and alternating, `livefix boot`
// re-applying level 2 (its record restored as an earlier boot left it)
// and `livefix kernel load` of the same level 2, plus `livefix status`
// with level 2 applied.
const benchScript = prelude + `
livefix kernel load $P/lf_host_l2.ko > /dev/null 2>&1 || echo "FAIL setup load"
K=$(ls -d $S/kernel/*)
cp -a $K /tmp/saved
livefix kernel unload --all > /dev/null 2>&1
restore() { rm -rf $K; cp -a /tmp/saved $K; sed -i 's/"boot_id": "[^"]*"/"boot_id": "earlier-boot"/g' $K/state.json; sync; }
for i in $(seq @REPS@); do
	if [ $((i % 2)) = 1 ]; then
		restore; hostbench boot livefix boot; livefix kernel unload --all > /dev/null 2>&1
		hostbench load livefix kernel load $P/lf_host_l2.ko
	else
		hostbench load livefix kernel load $P/lf_host_l2.ko; livefix kernel unload --all > /dev/null 2>&1
		restore; hostbench boot livefix boot
	fi
	hostbench status livefix status
	livefix kernel unload --all > /dev/null 2>&1
done
`

var benchLineRE = regexp.MustCompile(`(?m)^(boot|load|status) wall_ns=(\d+) maxrss_kib=(\d+) rc=(\d+)$`)

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// BenchmarkHostBoot measures issue 7's performance targets in one VM boot:
// `livefix boot` against `livefix kernel load` of the same level (target
// ratio at most 1.1), the peak RSS of `livefix status` (at most 15 MB)
// and the size of the livefix binary (at most 15 MB). One iteration is
// one VM boot.
//
//	go test -run '^$' -bench HostBoot -benchtime 1x ./e2e/host/
func BenchmarkHostBoot(b *testing.B) {
	tgt := kerneltest.RequireVM(b)
	tmp := b.TempDir()
	livefix, livefixBuild := e2etest.Tools(b)
	bench := filepath.Join(e2etest.Build(b, "e2e/host/testdata/hostbench"), "hostbench")
	outDir := filepath.Join(tmp, "p")
	buildLevels(b, livefixBuild, outDir)
	fi, err := os.Stat(livefix)
	if err != nil {
		b.Fatal(err)
	}
	e := &env{tgt: tgt, disk: newDisk(b, tmp), files: map[string]string{"/bin/livefix": livefix, "/bin/hostbench": bench}}
	for _, n := range []string{"lf_host_l2"} {
		for _, ext := range []string{".ko", ".json"} {
			e.files["/root/p/"+n+ext] = filepath.Join(outDir, n+ext)
		}
	}
	b.ResetTimer()
	for range b.N {
		out, _ := e.boot(b, strings.ReplaceAll(benchScript, "@REPS@", strconv.Itoa(benchReps)), "", "", 0)
		wall := map[string][]float64{}
		rss := map[string][]float64{}
		for _, m := range benchLineRE.FindAllStringSubmatch(out, -1) {
			if m[4] != "0" {
				b.Fatalf("%s exited %s:\n%s", m[1], m[4], out)
			}
			ns, _ := strconv.ParseFloat(m[2], 64)
			kib, _ := strconv.ParseFloat(m[3], 64)
			wall[m[1]] = append(wall[m[1]], ns)
			rss[m[1]] = append(rss[m[1]], kib)
		}
		for _, k := range []string{"boot", "load", "status"} {
			if len(wall[k]) != benchReps {
				b.Fatalf("%d %s measurements, want %d:\n%s", len(wall[k]), k, benchReps, out)
			}
		}
		boot, load := median(wall["boot"]), median(wall["load"])
		b.ReportMetric(boot/1e6, "boot-ms")
		b.ReportMetric(load/1e6, "load-ms")
		b.ReportMetric(boot/load, "boot/load")
		b.ReportMetric(slices.Max(rss["status"])/1024, "status-max-rss-MiB")
		b.ReportMetric(float64(fi.Size())/(1<<20), "binary-MiB")
		b.Logf("boot ms %v, load ms %v", scaled(wall["boot"]), scaled(wall["load"]))
	}
}

func scaled(v []float64) []int {
	var out []int
	for _, x := range v {
		out = append(out, int(x/1e6))
	}
	return out
}
