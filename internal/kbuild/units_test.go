package kbuild

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func writeTree(t *testing.T, files map[string]string) *Tree {
	t.Helper()
	dir := t.TempDir()
	for p, c := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return &Tree{Dir: dir}
}

func TestUnitsOf(t *testing.T) {
	tr := writeTree(t, map[string]string{
		"kernel/sched/Makefile":       "obj-y += core.o fair.o\nobj-y += build_policy.o\n",
		"kernel/sched/build_policy.c": "#include \"idle.c\"\n# include \"rt.c\"\n",
		"kernel/sched/rt.c":           "int x;\n",
		"kernel/sched/fair.c":         "int y;\n",
		"kernel/sched/orphan.c":       "int z;\n",
		"fs/xfs/Makefile":             "xfs-y += libxfs/xfs_ag.o \\\n\tlibxfs/xfs_alloc.o\n",
		"fs/xfs/libxfs/xfs_alloc.c":   "int a;\n",
		"fs/xfs/libxfs/xfs_other.c":   "#include \"xfs_alloc.c\"\n",
	})
	tests := []struct{ src, want string }{
		{"kernel/sched/fair.c", "kernel/sched/fair.c"},
		{"kernel/sched/rt.c", "kernel/sched/build_policy.c"},
		{"kernel/sched/orphan.c", "kernel/sched/orphan.c"},
		// Named by the parent directory's Makefile: a unit of its own,
		// although another file includes it.
		{"fs/xfs/libxfs/xfs_alloc.c", "fs/xfs/libxfs/xfs_alloc.c"},
	}
	for _, tc := range tests {
		if got := tr.unitsOf(tc.src); !slices.Equal(got, []string{tc.want}) {
			t.Errorf("unitsOf(%s) = %v, want [%s]", tc.src, got, tc.want)
		}
	}
}

func TestRecordedObject(t *testing.T) {
	tr := writeTree(t, map[string]string{
		"fs/.binfmt_misc.o.cmd":          "cmd_fs/binfmt_misc.o := gcc -Wp,-MMD,fs/.binfmt_misc.o.d -nostdinc -DMODULE -DKBUILD_BASENAME='\"binfmt_misc\"' -DKBUILD_MODNAME='\"binfmt_misc\"' -D__KBUILD_MODNAME=kmod_binfmt_misc -c -o fs/binfmt_misc.o fs/binfmt_misc.c\n\nsource_fs/binfmt_misc.o := fs/binfmt_misc.c\n",
		"fs/xfs/libxfs/.xfs_alloc.o.cmd": "cmd_fs/xfs/libxfs/xfs_alloc.o := gcc -nostdinc -DMODULE -DKBUILD_BASENAME='\"xfs_alloc\"' -DKBUILD_MODNAME='\"xfs\"' -c -o x.o x.c\n",
		"fs/proc/.cmdline.o.cmd":         "cmd_fs/proc/cmdline.o := gcc -nostdinc -DKBUILD_BASENAME='\"cmdline\"' -DKBUILD_MODNAME='\"cmdline\"' -c -o fs/proc/cmdline.o fs/proc/cmdline.c\n",
		"net/.x-y.o.cmd":                 "cmd_net/x-y.o := gcc -DMODULE -DKBUILD_MODNAME='\"x-y\"' -c\n",
	})
	for src, want := range map[string]string{
		"fs/binfmt_misc.c":          "binfmt_misc",
		"fs/xfs/libxfs/xfs_alloc.c": "xfs",
		"fs/proc/cmdline.c":         "vmlinux",
		"net/x-y.c":                 "x_y",
		"fs/none.c":                 "",
	} {
		if got := recordedObject(tr.Dir, src); got != want {
			t.Errorf("recordedObject(%s) = %q, want %q", src, got, want)
		}
	}
}
