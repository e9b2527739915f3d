package kbuild_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/livefix/livefix/internal/kbuild"
	"github.com/livefix/livefix/internal/kerneltest"
)

// cmdlinePatch changes the string cmdline_proc_show prints.
const cmdlinePatch = `--- a/fs/proc/cmdline.c
+++ b/fs/proc/cmdline.c
@@ -6,7 +6,7 @@
 
 static int cmdline_proc_show(struct seq_file *m, void *v)
 {
-	seq_puts(m, saved_command_line);
+	seq_puts(m, "livefix was here");
 	seq_putc(m, '\n');
 	return 0;
 }
`

type logWriter struct{ t testing.TB }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func fileSum(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

func TestBuildPairDebianKernel(t *testing.T) {
	tgt := kerneltest.RequireTarget(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()

	start := time.Now()
	tr, err := kbuild.Prepare(ctx, tgt, logWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Prepare: %.1fs", time.Since(start).Seconds())
	src := filepath.Join(tr.Dir, "fs/proc/cmdline.c")
	before := fileSum(t, src)

	patch := filepath.Join(t.TempDir(), "cmdline.patch")
	if err := os.WriteFile(patch, []byte(cmdlinePatch), 0o644); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	start = time.Now()
	pairs, err := tr.BuildPair(ctx, []string{patch}, out, logWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("BuildPair: %.1fs", time.Since(start).Seconds())
	if err := tr.Check(ctx, logWriter{t}); err != nil {
		t.Errorf("tree check: %v", err)
	}
	if err := tr.CheckCompiler(ctx, pairs[0].Orig); err != nil {
		t.Errorf("compiler check: %v", err)
	}
	if fileSum(t, src) != before {
		t.Fatal("fs/proc/cmdline.c differs after BuildPair; the cached tree is no longer pristine")
	}
	if len(pairs) != 1 || pairs[0].Source != "fs/proc/cmdline.c" {
		t.Fatalf("pairs = %+v", pairs)
	}
	p := pairs[0]
	if p.Orig != filepath.Join(out, "orig/fs/proc/cmdline.o") || p.Patched != filepath.Join(out, "patched/fs/proc/cmdline.o") {
		t.Errorf("object paths %s, %s", p.Orig, p.Patched)
	}
	orig, err := os.ReadFile(p.Orig)
	if err != nil {
		t.Fatal(err)
	}
	patched, err := os.ReadFile(p.Patched)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(orig, patched) {
		t.Fatal("orig and patched objects are identical")
	}
	if bytes.Contains(orig, []byte("livefix was here")) || !bytes.Contains(patched, []byte("livefix was here")) {
		t.Error("the new string is not exactly in the patched object")
	}
	for _, obj := range []string{p.Orig, p.Patched} {
		f, err := elf.Open(obj)
		if err != nil {
			t.Fatal(err)
		}
		if f.Type != elf.ET_REL || f.Machine != elf.EM_X86_64 {
			t.Errorf("%s: %v %v, want x86-64 ET_REL", obj, f.Type, f.Machine)
		}
		var names []string
		for _, s := range f.Sections {
			names = append(names, s.Name)
		}
		f.Close()
		all := strings.Join(names, " ")
		for _, want := range []string{".text.cmdline_proc_show", "__mcount_loc", ".orc_unwind"} {
			if !strings.Contains(all, want) {
				t.Errorf("%s has no %s section (sections: %s)", obj, want, all)
			}
		}
	}
}
