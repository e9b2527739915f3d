package klp

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/livefix/livefix/internal/kbuild"
	"github.com/livefix/livefix/internal/kerneltest"
)

// BenchmarkBuildKernel measures FromPatches for the one-file
// testdata/cmdline.patch on the prepared (cached) tree, next to the floor
// measured in the same iteration: compiling the touched object twice
// (kbuild BuildPair, which also applies and reverts the patch) plus one
// kbuild link of the same module. It reports both in seconds and their
// ratio.
func BenchmarkBuildKernel(b *testing.B) {
	tgt := kerneltest.RequireTarget(b)
	ctx := context.Background()
	tree, err := kbuild.Prepare(ctx, tgt, nil)
	if err != nil {
		b.Fatal(err)
	}
	patches := []string{"testdata/cmdline.patch"}
	// Warm the caches (kallsyms, build-id) outside the timing.
	warm := b.TempDir()
	if _, err := FromPatches(ctx, Request{Name: "lfbench", Target: tgt, Patches: patches, OutDir: warm, WorkDir: filepath.Join(warm, "work")}); err != nil {
		b.Fatal(err)
	}
	var build, floor time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		dir := b.TempDir()
		t0 := time.Now()
		if _, err := FromPatches(ctx, Request{Name: "lfbench", Target: tgt, Patches: patches, OutDir: dir}); err != nil {
			b.Fatal(err)
		}
		build += time.Since(t0)

		t1 := time.Now()
		if _, err := tree.BuildPair(ctx, patches, filepath.Join(dir, "floor-objs"), nil); err != nil {
			b.Fatal(err)
		}
		mod := filepath.Join(dir, "floor-module")
		if err := copyModuleSources(filepath.Join(warm, "work", "module"), mod); err != nil {
			b.Fatal(err)
		}
		if err := tgt.BuildModule(ctx, mod, nil); err != nil {
			b.Fatal(err)
		}
		floor += time.Since(t1)
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(build.Seconds()/n, "build-s/op")
	b.ReportMetric(floor.Seconds()/n, "floor-s/op")
	b.ReportMetric(build.Seconds()/floor.Seconds(), "build/floor")
}

// copyModuleSources copies a generated module's inputs (not its build
// products) to dst.
func copyModuleSources(src, dst string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range ents {
		n := e.Name()
		if n != "Kbuild" && n != "livefix-hook.c" && !strings.HasSuffix(n, "_shipped") && !(strings.HasPrefix(n, ".livefix-unit-") && strings.HasSuffix(n, ".o.cmd")) {
			continue
		}
		data, err := os.ReadFile(filepath.Join(src, n))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dst, n), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}
