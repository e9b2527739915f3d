package kbuild_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/livefix/livefix/internal/kbuild"
	"github.com/livefix/livefix/internal/kerneltest"
)

// TestHeaderUnitsDebian finds the includers of real headers of the Debian
// tree: fs/proc/internal.h is read by the procfs units this .config
// builds (not task_nommu.c, which needs CONFIG_MMU=n) and by
// fs/proc_namespace.c; include/linux/drbd_genl.h, reached only through
// an #include of a macro, by drbd_nl.c; include/linux/kernel.h is refused
// with its count.
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

	// include/linux/drbd_genl.h is read only through a macro: drbd_genl_api.h
	// defines GENL_MAGIC_INCLUDE_FILE to it, and genl_magic_func.h
	// #includes GENL_MAGIC_INCLUDE_FILE.
	units, _, err = tr.HeaderUnits(ctx, []string{"include/linux/drbd_genl.h"}, logWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(units, "drivers/block/drbd/drbd_nl.c") {
		t.Errorf("include/linux/drbd_genl.h: units %v lack drivers/block/drbd/drbd_nl.c (reached through #include GENL_MAGIC_INCLUDE_FILE)", units)
	}

	tr.MaxHeaderUnits = 100
	_, _, err = tr.HeaderUnits(ctx, []string{"include/linux/kernel.h"}, logWriter{t})
	var he *kbuild.HeaderUnitsError
	if !errors.As(err, &he) || !errors.Is(err, kbuild.ErrTooManyUnits) || he.Units <= 100 {
		t.Fatalf("include/linux/kernel.h: got %v, want a HeaderUnitsError over the limit of 100", err)
	}
	t.Logf("refusal: %v", err)
}

// asmHeaderPatch changes arch/x86/entry/calling.h, which only assembly
// units read (entry_64.S and others): with a comment the preprocessed
// assembly is unchanged, with an instruction in CLEAR_REGS it is not.
func asmHeaderPatch(line string) string {
	return "--- a/arch/x86/entry/calling.h\n+++ b/arch/x86/entry/calling.h\n" +
		"@@ -97,6 +97,7 @@\n .endm\n \n .macro CLEAR_REGS\n+" + line + "\n \t/*\n \t * Sanitize registers of values that a speculation attack might\n \t * otherwise want to exploit. The lower registers are likely clobbered\n"
}

// TestHeaderAssemblyDebian: a header read only by assembly units is
// preprocessed before and after; a changed text is refused by name, an
// unchanged one is "no unit to build".
func TestHeaderAssemblyDebian(t *testing.T) {
	tgt := kerneltest.RequireTarget(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	tr, err := kbuild.Prepare(ctx, tgt, logWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, line string
		want       error
	}{
		{"comment", "\t/* livefix: a comment only */", kbuild.ErrNoUnits},
		{"instruction", "\tnop", kbuild.ErrAssemblyChanged},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			patch := filepath.Join(t.TempDir(), "calling.patch")
			if err := os.WriteFile(patch, []byte(asmHeaderPatch(tt.line)), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := tr.BuildPair(ctx, []string{patch}, t.TempDir(), logWriter{t})
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			var ae *kbuild.AssemblyChangedError
			if errors.As(err, &ae) && !slices.Contains(ae.Units, "arch/x86/entry/entry_64.S") {
				t.Errorf("refusal names %v, want arch/x86/entry/entry_64.S among them", ae.Units)
			}
			t.Logf("%v", err)
		})
	}
	data, err := os.ReadFile(filepath.Join(tr.Dir, "arch/x86/entry/calling.h"))
	if err != nil || strings.Contains(string(data), "livefix") || strings.Contains(string(data), "CLEAR_REGS\n\tnop") {
		t.Fatalf("calling.h was not restored (%v)", err)
	}
}

// TestCompiledUnitsDebian asks which units this configuration compiles
// for real files: the file itself (amdgpu's, whose parent
// drivers/gpu/drm/amd has no Makefile of its own; lib/seq_buf.c of
// lib/Makefile's lib-y), the file that
// includes it (kernel/sched/rt.c), or none (fs/proc/task_nommu.c).
func TestCompiledUnitsDebian(t *testing.T) {
	tgt := kerneltest.RequireTarget(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	tr, err := kbuild.Prepare(ctx, tgt, logWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		file string
		want []string
	}{
		{"fs/proc/cmdline.c", []string{"fs/proc/cmdline.c"}},
		{"drivers/gpu/drm/amd/amdgpu/amdgpu_display.c", []string{"drivers/gpu/drm/amd/amdgpu/amdgpu_display.c"}},
		{"kernel/sched/rt.c", []string{"kernel/sched/build_policy.c"}},
		{"lib/seq_buf.c", []string{"lib/seq_buf.c"}}, // lib-y, already prefixed by Makefile.lib
		{"fs/proc/task_nommu.c", nil},
	} {
		got, err := tr.CompiledUnits(ctx, c.file)
		if err != nil {
			t.Errorf("%s: %v", c.file, err)
			continue
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("%s: compiled units %v, want %v", c.file, got, c.want)
		}
	}
}
