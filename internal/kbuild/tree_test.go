package kbuild

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// A fake kernel source: its Makefile records olddefconfig and prepare, and
// compiles %.o from %.c with KCFLAGS, which is all Prepare and BuildPair
// rely on. A source containing SLOW makes the compile hang, NAP makes it
// sleep a few seconds; both first create a file saying so in
// $LIVEFIX_TEST_MEET. A source containing MEETx creates MEETx there and
// waits until another compile has created its MEETy: it fails unless two
// builds compile at once.
var fakeKernel = map[string]string{
	"Makefile": `olddefconfig:
	@echo olddefconfig >> calls
prepare:
	@echo prepare >> calls
%.o: %.c
	@if grep -q SLOW $<; then touch $(LIVEFIX_TEST_MEET)/slow-started; sleep 60; fi
	@if grep -q NAP $<; then touch $(LIVEFIX_TEST_MEET)/nap-started; sleep 4; fi
	@if grep -q MEET $<; then \
		touch $(LIVEFIX_TEST_MEET)/$$(grep -o 'MEET[a-z]*' $< | head -1); i=0; \
		while [ $$(ls $(LIVEFIX_TEST_MEET) | grep -c '^MEET') -lt 2 ]; do \
			i=$$((i+1)); if [ $$i -gt 600 ]; then echo "error: no other build compiled meanwhile" >&2; exit 1; fi; sleep 0.1; \
		done; fi
	gcc $(KCFLAGS) -c -o $@ $<
`,
	"fs/a.c": "int a(void) { return 1; }\n",
	"fs/b.c": "const char *b(void) { return \"b\"; }\n",
	"fs/h.h": "#define H 1\n",
}

func fakeTarget(t *testing.T) Target {
	t.Helper()
	for _, tool := range []string{"gcc", "make"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("LIVEFIX_REQUIRE_VM") == "1" { // make test: never skip
				t.Fatalf("%s is required: %v", tool, err)
			}
			t.Skipf("%s not installed", tool)
		}
	}
	dir := t.TempDir()
	t.Setenv("LIVEFIX_CACHE", filepath.Join(dir, "cache"))
	t.Setenv("LIVEFIX_TEST_MEET", filepath.Join(dir, "meet"))
	if err := os.Mkdir(filepath.Join(dir, "meet"), 0o755); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, body := range fakeKernel {
		hdr := &tar.Header{Name: "linux-source-6.1/" + name, Mode: 0o644, Size: int64(len(body)), ModTime: time.Unix(1e9, 0)}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	tgt := Target{Release: "6.1.0-1-fake", Config: filepath.Join(dir, "config"), Source: filepath.Join(dir, "src.tar")}
	if err := os.WriteFile(tgt.Source, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tgt.Config, []byte("CONFIG_LIVEPATCH=y\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return tgt
}

func writePatch(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const patchA = `--- a/fs/a.c
+++ b/fs/a.c
@@ -1 +1 @@
-int a(void) { return 1; }
+int a(void) { return 2; }
`

// pristine fails the test unless every fake source file in the tree is
// byte-identical to the original and no marker or backup is left.
func pristine(t *testing.T, tr *Tree) {
	t.Helper()
	for name, body := range fakeKernel {
		got, err := os.ReadFile(filepath.Join(tr.Dir, name))
		if err != nil || string(got) != body {
			t.Errorf("%s not pristine: %q, %v", name, got, err)
		}
	}
	for _, n := range []string{markerName, backupName} {
		if _, err := os.Stat(filepath.Join(tr.root, n)); err == nil {
			t.Errorf("%s left behind", n)
		}
	}
}

type logWriter struct{ t testing.TB }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func TestPrepareCachesAndRedoes(t *testing.T) {
	tgt := fakeTarget(t)
	ctx := context.Background()
	tr, err := Prepare(ctx, tgt, logWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(filepath.Base(tr.root), "6.1.0-1-fake-") || len(filepath.Base(tr.root)) != len("6.1.0-1-fake-")+12 {
		t.Errorf("tree root %s is not RELEASE-HASH12", tr.root)
	}
	calls := func() string {
		b, _ := os.ReadFile(filepath.Join(tr.Dir, "calls"))
		return string(b)
	}
	if got := calls(); got != "olddefconfig\nprepare\n" {
		t.Fatalf("make calls = %q", got)
	}
	cfg, _ := os.ReadFile(filepath.Join(tr.Dir, ".config"))
	if !strings.HasPrefix(string(cfg), "CONFIG_LIVEPATCH=y\n") {
		t.Errorf(".config = %q", cfg)
	}
	// A second Prepare reuses the tree.
	if _, err := Prepare(ctx, tgt, logWriter{t}); err != nil {
		t.Fatal(err)
	}
	if got := calls(); got != "olddefconfig\nprepare\n" {
		t.Fatalf("complete tree prepared again: calls = %q", got)
	}
	// An interrupted prepare (no stamp) is redone without re-extracting.
	if err := os.Remove(filepath.Join(tr.root, preparedName)); err != nil {
		t.Fatal(err)
	}
	if _, err := Prepare(ctx, tgt, logWriter{t}); err != nil {
		t.Fatal(err)
	}
	if got := calls(); got != "olddefconfig\nprepare\nolddefconfig\nprepare\n" {
		t.Fatalf("incomplete tree: calls = %q", got)
	}
	// A new source package (different size or mtime) means a new extraction.
	if err := os.Chtimes(tgt.Source, time.Now(), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := Prepare(ctx, tgt, logWriter{t}); err != nil {
		t.Fatal(err)
	}
	if got := calls(); got != "olddefconfig\nprepare\n" {
		t.Fatalf("changed source not extracted again: calls = %q", got)
	}
	// A different config is a different tree.
	if err := os.WriteFile(tgt.Config, []byte("CONFIG_LIVEPATCH=n\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tr2, err := Prepare(ctx, tgt, logWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	if tr2.Dir == tr.Dir {
		t.Errorf("config change reused %s", tr.Dir)
	}
}

func TestPrepareErrors(t *testing.T) {
	tgt := fakeTarget(t)
	bad := tgt
	bad.Source = filepath.Join(t.TempDir(), "missing.tar.xz")
	if _, err := Prepare(context.Background(), bad, nil); err == nil || !strings.Contains(err.Error(), "make setup") {
		t.Errorf("missing source: %v", err)
	}
	bad = tgt
	bad.Config = filepath.Join(t.TempDir(), "missing-config")
	if _, err := Prepare(context.Background(), bad, nil); err == nil || !strings.Contains(err.Error(), "config") {
		t.Errorf("missing config: %v", err)
	}
	bad = tgt
	bad.Source = writePatch(t, "notatar.tar", "this is not a tarball")
	if _, err := Prepare(context.Background(), bad, nil); err == nil || !strings.Contains(err.Error(), "extract") {
		t.Errorf("broken tarball: %v", err)
	}
}

func TestBuildPairFake(t *testing.T) {
	tgt := fakeTarget(t)
	ctx := context.Background()
	tr, err := Prepare(ctx, tgt, logWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	patchB := writePatch(t, "b.patch", "--- a/fs/b.c\n+++ b/fs/b.c\n@@ -1 +1 @@\n-const char *b(void) { return \"b\"; }\n+const char *b(void) { return \"B\"; }\n")
	out := t.TempDir()
	pairs, err := tr.BuildPair(ctx, []string{writePatch(t, "a.patch", patchA), patchB}, out, logWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	if len(pairs) != 2 || pairs[0].Source != "fs/a.c" || pairs[1].Source != "fs/b.c" {
		t.Fatalf("pairs = %+v", pairs)
	}
	for _, p := range pairs {
		if want := filepath.Join(out, "orig", strings.TrimSuffix(p.Source, ".c")+".o"); p.Orig != want {
			t.Errorf("Orig = %s, want %s", p.Orig, want)
		}
		o, err1 := os.ReadFile(p.Orig)
		n, err2 := os.ReadFile(p.Patched)
		if err1 != nil || err2 != nil {
			t.Fatalf("objects missing: %v %v", err1, err2)
		}
		if bytes.Equal(o, n) {
			t.Errorf("%s: orig and patched objects are identical", p.Source)
		}
		if !bytes.Contains(o, []byte(".text."+strings.TrimSuffix(filepath.Base(p.Source), ".c"))) {
			t.Errorf("%s: no per-function section; KCFLAGS not passed?", p.Source)
		}
	}
	pristine(t, tr)
}

func TestBuildPairRefusesAndReports(t *testing.T) {
	tgt := fakeTarget(t)
	ctx := context.Background()
	tr, err := Prepare(ctx, tgt, nil)
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	header := writePatch(t, "h.patch", "--- a/fs/h.h\n+++ b/fs/h.h\n@@ -1 +1 @@\n-#define H 1\n+#define H 2\n")
	if _, err := tr.BuildPair(ctx, []string{header}, out, nil); err == nil || !strings.Contains(err.Error(), "fs/h.h") {
		t.Errorf("header patch: %v", err)
	}
	newFile := writePatch(t, "n.patch", "--- /dev/null\n+++ b/fs/n.c\n@@ -0,0 +1 @@\n+int n;\n")
	if _, err := tr.BuildPair(ctx, []string{newFile}, out, nil); err == nil || !strings.Contains(err.Error(), "fs/n.c") {
		t.Errorf("new file: %v", err)
	}
	stale := writePatch(t, "s.patch", "--- a/fs/a.c\n+++ b/fs/a.c\n@@ -1 +1 @@\n-int a(void) { return 7; }\n+int a(void) { return 8; }\n")
	if _, err := tr.BuildPair(ctx, []string{stale}, out, nil); err == nil || !strings.Contains(err.Error(), "apply") {
		t.Errorf("patch that does not apply: %v", err)
	}
	pristine(t, tr)

	broken := writePatch(t, "x.patch", "--- a/fs/a.c\n+++ b/fs/a.c\n@@ -1 +1 @@\n-int a(void) { return 1; }\n+int a(void) { return undeclared_thing; }\n")
	_, err = tr.BuildPair(ctx, []string{broken}, out, nil)
	if err == nil {
		t.Fatal("compile error not reported")
	}
	msg := err.Error()
	t.Logf("compile error message:\n%s", msg)
	if !strings.Contains(msg, "fs/a.c:1:") || !strings.Contains(msg, "undeclared_thing") || strings.Count(msg, "\n") > 16 {
		t.Errorf("compile error is not a short message naming the file and the error:\n%s", msg)
	}
	pristine(t, tr)
}

func TestBuildPairCancelReverts(t *testing.T) {
	tgt := fakeTarget(t)
	tr, err := Prepare(context.Background(), tgt, nil)
	if err != nil {
		t.Fatal(err)
	}
	slow := writePatch(t, "slow.patch", "--- a/fs/a.c\n+++ b/fs/a.c\n@@ -1 +1 @@\n-int a(void) { return 1; }\n+int a(void) { return 1; } /* SLOW */\n")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	_, err = tr.BuildPair(ctx, []string{slow}, t.TempDir(), nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("cancel took %v", d)
	}
	pristine(t, tr)
}

func TestCrashedPatchIsRevertedByPrepare(t *testing.T) {
	tgt := fakeTarget(t)
	ctx := context.Background()
	tr, err := Prepare(ctx, tgt, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Do what BuildPair does up to a crash in the middle of patching.
	if err := tr.saveAndMark([]string{"fs/a.c", "fs/new.c"}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tr.Dir, "fs/a.c"), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tr.Dir, "fs/new.c"), []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Prepare(ctx, tgt, logWriter{t}); err != nil {
		t.Fatal(err)
	}
	pristine(t, tr)
	if fi, err := os.Stat(filepath.Join(tr.Dir, "fs/a.c")); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("mode not restored: %v %v", fi, err)
	}
	if _, err := os.Stat(filepath.Join(tr.Dir, "fs/new.c")); err == nil {
		t.Error("file created by the patch not removed")
	}

	// A marker that cannot be honoured makes Prepare start over.
	if err := os.WriteFile(filepath.Join(tr.root, markerName), []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tr.Dir, "fs/b.c"), []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Prepare(ctx, tgt, logWriter{t}); err != nil {
		t.Fatal(err)
	}
	pristine(t, tr)
}

func TestConcurrentBuildPairs(t *testing.T) {
	tgt := fakeTarget(t)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr, err := Prepare(context.Background(), tgt, nil)
			if err != nil {
				errs[i] = err
				return
			}
			body := strings.Replace(patchA, "return 2", fmt.Sprintf("return %d", 10+i), 1)
			pairs, err := tr.BuildPair(context.Background(), []string{writePatch(t, "p.patch", body)}, t.TempDir(), nil)
			if err == nil && len(pairs) != 1 {
				err = fmt.Errorf("pairs = %v", pairs)
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("caller %d: %v", i, err)
		}
	}
	tr, err := Prepare(context.Background(), tgt, nil)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(tr.Dir, "calls")); string(b) != "olddefconfig\nprepare\n" {
		t.Errorf("concurrent callers prepared %q", b)
	}
	pristine(t, tr)
}

func TestBuildPairBasePatches(t *testing.T) {
	tgt := fakeTarget(t)
	ctx := context.Background()
	tr, err := Prepare(ctx, tgt, logWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	// The base patch changes fs/b.c, which the patch changes further, and
	// fs/a.c, which the patch leaves alone: both sides carry both.
	base := writePatch(t, "base.patch", "--- a/fs/b.c\n+++ b/fs/b.c\n@@ -1 +1 @@\n-const char *b(void) { return \"b\"; }\n+const char *b(void) { return \"base-b\"; }\n"+
		"--- a/fs/a.c\n+++ b/fs/a.c\n@@ -1 +1 @@\n-int a(void) { return 1; }\n+int a(void) { return 1; } const char *a_base = \"base-a\";\n")
	fix := writePatch(t, "fix.patch", "--- a/fs/b.c\n+++ b/fs/b.c\n@@ -1 +1 @@\n-const char *b(void) { return \"base-b\"; }\n+const char *b(void) { return \"fixed-b\"; }\n")
	tr.BasePatches = []string{base}
	out := t.TempDir()
	pairs, err := tr.BuildPair(ctx, []string{fix}, out, logWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	if len(pairs) != 1 || pairs[0].Source != "fs/b.c" {
		t.Fatalf("pairs = %+v, want fs/b.c only (a base patch adds no unit)", pairs)
	}
	o, err1 := os.ReadFile(pairs[0].Orig)
	n, err2 := os.ReadFile(pairs[0].Patched)
	if err1 != nil || err2 != nil {
		t.Fatalf("objects missing: %v %v", err1, err2)
	}
	if !bytes.Contains(o, []byte("base-b")) || bytes.Contains(o, []byte("fixed-b")) {
		t.Error("the pristine object was not built with the base patch alone")
	}
	if !bytes.Contains(n, []byte("fixed-b")) || bytes.Contains(n, []byte("base-b")) {
		t.Error("the patched object was not built with the base patch and the patch")
	}
	pristine(t, tr)

	// The fix does not apply without its base: the base is really applied
	// first, and a failure still reverts it.
	tr.BasePatches = nil
	if _, err := tr.BuildPair(ctx, []string{fix}, out, nil); err == nil || !strings.Contains(err.Error(), "apply") {
		t.Errorf("fix without its base patch: %v", err)
	}
	stale := writePatch(t, "stale.patch", "--- a/fs/a.c\n+++ b/fs/a.c\n@@ -1 +1 @@\n-int a(void) { return 7; }\n+int a(void) { return 8; }\n")
	tr.BasePatches = []string{base, stale}
	if _, err := tr.BuildPair(ctx, []string{fix}, out, nil); err == nil || !strings.Contains(err.Error(), "base patch") {
		t.Errorf("base patch that does not apply: %v", err)
	}
	pristine(t, tr)

	// Cancelled while the base patch is applied (its change makes the
	// pristine compile hang): reverted.
	slow := writePatch(t, "slow.patch", "--- a/fs/b.c\n+++ b/fs/b.c\n@@ -1 +1 @@\n-const char *b(void) { return \"b\"; }\n+const char *b(void) { return \"base-b\"; } /* SLOW */\n")
	fixSlow := writePatch(t, "fixslow.patch", "--- a/fs/b.c\n+++ b/fs/b.c\n@@ -1 +1 @@\n-const char *b(void) { return \"base-b\"; } /* SLOW */\n+const char *b(void) { return \"fixed-b\"; }\n")
	tr.BasePatches = []string{slow}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := tr.BuildPair(cctx, []string{fixSlow}, out, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want deadline exceeded", err)
	}
	pristine(t, tr)
}

func TestBasePatchIsInTheMarker(t *testing.T) {
	// The marker is the in-place path's; a private view's base patch
	// never reaches the shared tree (TestBasePatchStaysInTheView).
	t.Setenv("LIVEFIX_PRIVATE_TREE", "0")
	tgt := fakeTarget(t)
	ctx := context.Background()
	tr, err := Prepare(ctx, tgt, nil)
	if err != nil {
		t.Fatal(err)
	}
	// While the pristine side compiles (made slow by the base patch), the
	// crash-recovery marker already names the base patch's files, so a
	// crash here is repaired by the next user of the tree.
	base := writePatch(t, "base.patch", "--- a/fs/b.c\n+++ b/fs/b.c\n@@ -1 +1 @@\n-const char *b(void) { return \"b\"; }\n+const char *b(void) { return \"b\"; } /* SLOW */\n"+
		"--- a/fs/a.c\n+++ b/fs/a.c\n@@ -1 +1 @@\n-int a(void) { return 1; }\n+int a(void) { return 3; }\n")
	fix := writePatch(t, "fix.patch", "--- a/fs/b.c\n+++ b/fs/b.c\n@@ -1 +1 @@\n-const char *b(void) { return \"b\"; } /* SLOW */\n+const char *b(void) { return \"B\"; }\n")
	tr.BasePatches = []string{base}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := tr.BuildPair(cctx, []string{fix}, t.TempDir(), nil)
		done <- err
	}()
	var m []byte
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		b, _ := os.ReadFile(filepath.Join(tr.Dir, "fs/b.c"))
		if bytes.Contains(b, []byte("SLOW")) {
			m, err = os.ReadFile(filepath.Join(tr.root, markerName))
			break
		}
	}
	cancel()
	if berr := <-done; !errors.Is(berr, context.Canceled) {
		t.Errorf("BuildPair: %v, want canceled", berr)
	}
	if err != nil || !bytes.Contains(m, []byte(`"fs/a.c"`)) || !bytes.Contains(m, []byte(`"fs/b.c"`)) {
		t.Errorf("marker while the base patch is applied = %s (%v), want fs/a.c (the base patch's only) and fs/b.c", m, err)
	}
	pristine(t, tr)
}

// In a private view the base patch is applied to the view only: while the
// pristine side compiles (made slow by the base patch) the shared tree
// has neither the change nor a marker.
func TestBasePatchStaysInTheView(t *testing.T) {
	requireRoot(t)
	tgt := fakeTarget(t)
	ctx := context.Background()
	tr, err := Prepare(ctx, tgt, nil)
	if err != nil {
		t.Fatal(err)
	}
	tr.BasePatches = []string{writePatch(t, "base.patch", "--- a/fs/b.c\n+++ b/fs/b.c\n@@ -1 +1 @@\n-const char *b(void) { return \"b\"; }\n+const char *b(void) { return \"b\"; } /* SLOW */\n")}
	fix := writePatch(t, "fix.patch", "--- a/fs/b.c\n+++ b/fs/b.c\n@@ -1 +1 @@\n-const char *b(void) { return \"b\"; } /* SLOW */\n+const char *b(void) { return \"B\"; }\n")
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := tr.BuildPair(cctx, []string{fix}, t.TempDir(), nil)
		done <- err
	}()
	waitFile(t, filepath.Join(os.Getenv("LIVEFIX_TEST_MEET"), "slow-started"), time.Minute)
	pristine(t, tr) // the compile of the base-patched fs/b.c is under way
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("BuildPair: %v, want canceled", err)
	}
	pristine(t, tr)
	noViews(t, tr)
}
