package kbuild_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/livefix/livefix/internal/kbuild"
	"github.com/livefix/livefix/internal/kerneltest"
)

// TestHeaderUnitsDebian finds the includers of real headers of the Debian
// tree: fs/proc/internal.h is read by the procfs units this .config
// builds (not task_nommu.c, which needs CONFIG_MMU=n) and by
// fs/proc_namespace.c; include/linux/kernel.h is refused with its count.
func TestHeaderUnitsDebian(t *testing.T) {
	tgt := kerneltest.RequireTarget(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	tr, err := kbuild.Prepare(ctx, tgt, logWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	units, asm, err := tr.HeaderUnits(ctx, []string{"fs/proc/internal.h"}, logWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("fs/proc/internal.h: %d units in %.1fs: %v", len(units), time.Since(start).Seconds(), units)
	for _, want := range []string{"fs/proc/base.c", "fs/proc/fd.c", "fs/proc/inode.c", "fs/proc_namespace.c"} {
		if !slices.Contains(units, want) {
			t.Errorf("units lack %s", want)
		}
	}
	for _, not := range []string{"fs/proc/task_nommu.c", "fs/proc/internal.h"} {
		if slices.Contains(units, not) {
			t.Errorf("units include %s, which this configuration does not compile", not)
		}
	}
	if len(units) < 20 || len(units) > 50 || len(asm) != 0 {
		t.Errorf("%d C units and %d assembly units; want 20-50 and none", len(units), len(asm))
	}

	tr.MaxHeaderUnits = 100
	_, _, err = tr.HeaderUnits(ctx, []string{"include/linux/kernel.h"}, logWriter{t})
	var he *kbuild.HeaderUnitsError
	if !errors.As(err, &he) || !errors.Is(err, kbuild.ErrTooManyUnits) || he.Units <= 100 {
		t.Fatalf("include/linux/kernel.h: got %v, want a HeaderUnitsError over the limit of 100", err)
	}
	t.Logf("refusal: %v", err)
}
