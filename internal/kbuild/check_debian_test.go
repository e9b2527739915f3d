package kbuild_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/livefix/livefix/internal/kbuild"
	"github.com/livefix/livefix/internal/kerneltest"
)

// TestTreeChecksDebian runs the checks against the packaged kernel: the
// real image and source agree, and an object whose .comment names another
// compiler is refused.
func TestTreeChecksDebian(t *testing.T) {
	tgt := kerneltest.RequireTarget(t)
	ctx := context.Background()
	img, err := kbuild.ImageVersion(tgt.Vmlinuz)
	if err != nil {
		t.Fatal(err)
	}
	src, err := kbuild.SourceVersion(ctx, tgt.Source)
	if err != nil || src != img {
		t.Fatalf("source version %q, %v; image version %q", src, err, img)
	}
	if _, err := kbuild.SourceVersion(ctx, t.TempDir()); err == nil {
		t.Error("SourceVersion of a directory no package owns succeeded")
	}

	dir := t.TempDir()
	c := filepath.Join(dir, "x.c")
	if err := os.WriteFile(c, []byte("int x(void) { return 1; }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	obj := filepath.Join(dir, "x.o")
	if b, err := exec.Command("gcc", "-c", "-o", obj, c).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, b)
	}
	tr := &kbuild.Tree{Target: tgt}
	// The local gcc is the one Debian builds its kernel with (make setup).
	if err := tr.CheckCompiler(ctx, obj); err != nil {
		t.Errorf("CheckCompiler of a local object: %v", err)
	}
	comment := filepath.Join(dir, "comment")
	if err := os.WriteFile(comment, []byte("\x00GCC: (Debian 11.3.0-1) 11.3.0\x00"), 0o644); err != nil {
		t.Fatal(err)
	}
	forged := filepath.Join(dir, "forged.o")
	if b, err := exec.Command("objcopy", "--remove-section=.comment", "--add-section", ".comment="+comment, obj, forged).CombinedOutput(); err != nil {
		t.Fatalf("objcopy: %v\n%s", err, b)
	}
	err = tr.CheckCompiler(ctx, forged)
	var me *kbuild.MismatchError
	if !errors.As(err, &me) || me.What != "compiler" || !strings.Contains(err.Error(), "11.3.0") {
		t.Errorf("CheckCompiler of an object from another compiler: %v", err)
	}
}

// BenchmarkTreeChecks measures what the tree checks add to every build:
// the source and image versions, the config comparison and the compiler
// comparison against a shipped module.
func BenchmarkTreeChecks(b *testing.B) {
	tgt := kerneltest.RequireTarget(b)
	ctx := context.Background()
	dir := b.TempDir()
	c := filepath.Join(dir, "x.c")
	if err := os.WriteFile(c, []byte("int x(void) { return 1; }\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	obj := filepath.Join(dir, "x.o")
	if out, err := exec.Command("gcc", "-c", "-o", obj, c).CombinedOutput(); err != nil {
		b.Fatalf("gcc: %v\n%s", err, out)
	}
	cfg, err := os.ReadFile(tgt.Config)
	if err != nil {
		b.Fatal(err)
	}
	tr := &kbuild.Tree{Target: tgt}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		img, err := kbuild.ImageVersion(tgt.Vmlinuz)
		if err != nil {
			b.Fatal(err)
		}
		if src, err := kbuild.SourceVersion(ctx, tgt.Source); err != nil || src != img {
			b.Fatal(src, img, err)
		}
		if err := kbuild.CheckConfig(cfg, cfg); err != nil {
			b.Fatal(err)
		}
		if err := tr.CheckCompiler(ctx, obj); err != nil {
			b.Fatal(err)
		}
	}
}
