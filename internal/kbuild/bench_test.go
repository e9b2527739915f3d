package kbuild_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/livefix/livefix/internal/kbuild"
	"github.com/livefix/livefix/internal/kerneltest"
	"github.com/livefix/livefix/klp"
)

// headerPatch changes the static inline get_proc_task() in
// fs/proc/internal.h, which 24 units of the Debian configuration read
// (the e2e case TestHeaderInline).
var headerPatch = filepath.Join("..", "..", "e2e", "kernel", "testdata", "patches", "header-task-hidden.patch")

// BenchmarkHeaderPatch measures the whole `livefix-build kernel` path
// (klp.FromPatches: finding the header's units, compiling them before and
// after, diffing, generating and linking the module) for a header patch,
// next to the compile floor measured in the same iteration: the same
// units compiled twice in the pristine tree, one make run each with as
// many jobs as CPUs, and nothing else. The tree's include index and
// records and the kallsyms cache are expected warm (one earlier build of
// any patch); the metrics are seconds per build and their ratio.
func BenchmarkHeaderPatch(b *testing.B) {
	tgt := kerneltest.RequireTarget(b)
	ctx := context.Background()
	tr, err := kbuild.Prepare(ctx, tgt, nil)
	if err != nil {
		b.Fatal(err)
	}
	units, _, err := tr.HeaderUnits(ctx, []string{"fs/proc/internal.h"}, nil)
	if err != nil {
		b.Fatal(err)
	}
	var build, compile, floor time.Duration
	b.ResetTimer()
	for range b.N {
		dir := b.TempDir()
		t0 := time.Now()
		m, err := klp.FromPatches(ctx, klp.Request{Name: "lfhbench", Target: tgt, Patches: []string{headerPatch}, OutDir: dir})
		if err != nil {
			b.Fatal(err)
		}
		build += time.Since(t0)
		for _, s := range m.Steps {
			if s.Name == "build orig" || s.Name == "build patched" {
				compile += time.Duration(s.Seconds * float64(time.Second))
			}
		}

		t1 := time.Now()
		for _, side := range []string{"a", "b"} {
			if err := tr.CompileUnits(ctx, units, filepath.Join(dir, "floor", side)); err != nil {
				b.Fatal(err)
			}
		}
		floor += time.Since(t1)
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(float64(len(units)), "units")
	b.ReportMetric(build.Seconds()/n, "build-s/op")
	b.ReportMetric(compile.Seconds()/n, "compile-s/op")
	b.ReportMetric(floor.Seconds()/n, "floor-s/op")
	b.ReportMetric(build.Seconds()/floor.Seconds(), "build/floor")
}

// twoPatches change two separate units (fs/proc/cmdline.c and
// fs/proc/meminfo.c): two unrelated fixes built by two users at once.
var twoPatches = []string{
	filepath.Join("..", "..", "e2e", "kernel", "testdata", "patches", "01-cmdline-string.patch"),
	filepath.Join("..", "..", "e2e", "kernel", "testdata", "patches", "02-meminfo-inlined-helper.patch"),
}

// BenchmarkParallelBuilds measures two separate BuildPair runs on the
// shared tree started at once against the same two one after the other,
// in the same iteration: with private views the second compiles while
// the first does (par/seq near 0.5 on two idle cores); in place
// (LIVEFIX_PRIVATE_TREE=0, measured too) they queue on the tree lock
// (inplace/seq near 1). The metrics are seconds per pair of builds and
// the ratios.
func BenchmarkParallelBuilds(b *testing.B) {
	tgt := kerneltest.RequireTarget(b)
	ctx := context.Background()
	tr, err := kbuild.Prepare(ctx, tgt, nil)
	if err != nil {
		b.Fatal(err)
	}
	build := func(p string) error {
		_, err := tr.BuildPair(ctx, []string{p}, b.TempDir(), nil)
		return err
	}
	atOnce := func() time.Duration {
		t0 := time.Now()
		errs := make(chan error, len(twoPatches))
		for _, p := range twoPatches {
			go func() { errs <- build(p) }()
		}
		for range twoPatches {
			if err := <-errs; err != nil {
				b.Fatal(err)
			}
		}
		return time.Since(t0)
	}
	if err := build(twoPatches[0]); err != nil { // warm the page cache and kbuild's prerequisites
		b.Fatal(err)
	}
	var seq, par, inPlace time.Duration
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		for _, p := range twoPatches {
			if err := build(p); err != nil {
				b.Fatal(err)
			}
		}
		seq += time.Since(t0)
		par += atOnce()
		b.Setenv("LIVEFIX_PRIVATE_TREE", "0")
		inPlace += atOnce()
		b.Setenv("LIVEFIX_PRIVATE_TREE", "")
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(seq.Seconds()/n, "seq-s/op")
	b.ReportMetric(par.Seconds()/n, "par-s/op")
	b.ReportMetric(inPlace.Seconds()/n, "inplace-s/op")
	b.ReportMetric(par.Seconds()/seq.Seconds(), "par/seq")
	b.ReportMetric(inPlace.Seconds()/seq.Seconds(), "inplace/seq")
}
