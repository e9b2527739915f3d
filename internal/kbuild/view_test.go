package kbuild

import (
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

// The test binary doubles as a build that gets killed: with
// LIVEFIX_KBUILD_HELPER set it runs one BuildPair on the fake tree named
// by the environment and exits.
func TestMain(m *testing.M) {
	if os.Getenv("LIVEFIX_KBUILD_HELPER") != "" {
		os.Exit(helperBuild())
	}
	os.Exit(m.Run())
}

func helperBuild() int {
	tgt := Target{Release: os.Getenv("LIVEFIX_HELPER_RELEASE"), Config: os.Getenv("LIVEFIX_HELPER_CONFIG"), Source: os.Getenv("LIVEFIX_HELPER_SOURCE")}
	tr, err := Prepare(context.Background(), tgt, os.Stderr)
	if err == nil {
		_, err = tr.BuildPair(context.Background(), []string{os.Getenv("LIVEFIX_HELPER_PATCH")}, os.Getenv("LIVEFIX_HELPER_OUT"), os.Stderr)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// patchOf returns a patch file replacing fs/a.c or fs/b.c's one line
// with body.
func patchOf(t *testing.T, file, body string) string {
	t.Helper()
	old := strings.TrimSuffix(fakeKernel[file], "\n")
	return writePatch(t, "p.patch", fmt.Sprintf("--- a/%s\n+++ b/%s\n@@ -1 +1 @@\n-%s\n+%s\n", file, file, old, body))
}

// noViews fails the test if a private view or its lock is left under
// the tree's builds directory, or if the shared tree holds an object.
func noViews(t *testing.T, tr *Tree) {
	t.Helper()
	entries, _ := os.ReadDir(filepath.Join(tr.root, buildsName))
	for _, e := range entries {
		t.Errorf("left in builds/: %s", e.Name())
	}
	for _, o := range []string{"fs/a.o", "fs/b.o"} {
		if _, err := os.Stat(filepath.Join(tr.Dir, o)); err == nil {
			t.Errorf("%s written into the shared tree", o)
		}
	}
}

// requireRoot keeps the private-view tests to machines where overlayfs
// can be mounted; make test runs as root, where skipping is a failure.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("LIVEFIX_REQUIRE_VM") == "1" {
			t.Fatal("private views need root to mount overlayfs")
		}
		t.Skip("private views need root to mount overlayfs")
	}
}

func waitFile(t *testing.T, path string, d time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(path); err == nil {
			return
		}
	}
	t.Fatalf("%s did not appear in %v", path, d)
}

// objectHas fails the test unless the object file contains want.
func objectHas(t *testing.T, obj, want string) {
	t.Helper()
	data, err := os.ReadFile(obj)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(data, []byte(want)) {
		t.Errorf("%s does not contain %q", obj, want)
	}
}

// Two builds of one tree compile at the same time: each patched compile
// waits (MEET) for the other's, which never comes if the builds queue.
func TestPrivateViewsBuildAtOnce(t *testing.T) {
	requireRoot(t)
	tgt := fakeTarget(t)
	ctx := context.Background()
	tr, err := Prepare(ctx, tgt, nil)
	if err != nil {
		t.Fatal(err)
	}
	patches := []string{
		patchOf(t, "fs/a.c", `int a(void) { return 41; } /* MEETa */`),
		patchOf(t, "fs/b.c", `const char *b(void) { return "bee"; } /* MEETb */`),
	}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	outs := []string{t.TempDir(), t.TempDir()}
	logs := make([]bytes.Buffer, 2)
	for i := range patches {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = tr.BuildPair(ctx, patches[i:i+1], outs[i], &logs[i])
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("build %d: %v\n%s", i, err, logs[i].String())
		}
		if !strings.Contains(logs[i].String(), "building in a private overlay view") {
			t.Errorf("build %d did not say it used a private view:\n%s", i, logs[i].String())
		}
	}
	if t.Failed() {
		return
	}
	objectHas(t, filepath.Join(outs[1], "patched/fs/b.o"), "bee")
	for i, side := range []string{"orig", "patched"} {
		if _, err := os.Stat(filepath.Join(outs[0], side, "fs/a.o")); err != nil {
			t.Errorf("build 0, object %d: %v", i, err)
		}
	}
	pristine(t, tr)
	noViews(t, tr)
}

// A build cancelled while it compiles does not hold up another that
// starts meanwhile, and leaves nothing behind.
func TestPrivateViewCancelledBesideAnother(t *testing.T) {
	requireRoot(t)
	tgt := fakeTarget(t)
	tr, err := Prepare(context.Background(), tgt, nil)
	if err != nil {
		t.Fatal(err)
	}
	slowCtx, cancelSlow := context.WithCancel(context.Background())
	defer cancelSlow()
	slowErr := make(chan error, 1)
	go func() {
		_, err := tr.BuildPair(slowCtx, []string{patchOf(t, "fs/a.c", "int a(void) { return 1; } /* SLOW */")}, t.TempDir(), nil)
		slowErr <- err
	}()
	waitFile(t, filepath.Join(os.Getenv("LIVEFIX_TEST_MEET"), "slow-started"), time.Minute)

	// The slow build sleeps 60 s in its compile; queued behind it, this
	// one would miss its 30 s deadline.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out := t.TempDir()
	var log bytes.Buffer
	if _, err := tr.BuildPair(ctx, []string{writePatch(t, "a.patch", patchA)}, out, &log); err != nil {
		t.Fatalf("build beside a slow one: %v\n%s", err, log.String())
	}
	select {
	case err := <-slowErr:
		t.Fatalf("the slow build ended before it was cancelled: %v", err)
	default:
	}
	objectHas(t, filepath.Join(out, "patched/fs/a.o"), "a")
	cancelSlow()
	if err := <-slowErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("slow build: %v, want context.Canceled", err)
	}
	pristine(t, tr)
	noViews(t, tr)
}

// A build killed in the middle of a compile leaves only its private
// directory: no mount (it lived in the build's mount namespace) and no
// change to the shared tree. The directory stays while a compiler the
// build started still runs, and the next build removes it after that.
func TestKilledBuildIsCleanedUp(t *testing.T) {
	requireRoot(t)
	tgt := fakeTarget(t)
	ctx := context.Background()
	tr, err := Prepare(ctx, tgt, nil)
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "LIVEFIX_KBUILD_HELPER=1",
		"LIVEFIX_HELPER_RELEASE="+tgt.Release, "LIVEFIX_HELPER_CONFIG="+tgt.Config, "LIVEFIX_HELPER_SOURCE="+tgt.Source,
		"LIVEFIX_HELPER_PATCH="+patchOf(t, "fs/a.c", "int a(void) { return 5; } /* NAP */"), "LIVEFIX_HELPER_OUT="+t.TempDir())
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFile(t, filepath.Join(os.Getenv("LIVEFIX_TEST_MEET"), "nap-started"), time.Minute)
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	t.Logf("killed build's output:\n%s", stderr.String())

	builds := filepath.Join(tr.root, buildsName)
	entries, err := os.ReadDir(builds)
	if err != nil {
		t.Fatal(err)
	}
	var id string
	for _, e := range entries {
		if e.IsDir() {
			id = e.Name()
		}
	}
	if id == "" {
		t.Fatalf("no private view left by the killed build: %v", entries)
	}
	// The NAP compile sleeps on (4 s) and holds the view's lock: a
	// cleaner must leave the view alone.
	tr.cleanBuilds(logWriter{t})
	if _, err := os.Stat(filepath.Join(builds, id)); err != nil {
		t.Fatalf("the view of a build whose compiler still runs was removed: %v", err)
	}
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
		if f, ok := tryLock(filepath.Join(builds, id+".lock")); ok {
			f.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the killed build's compiler never finished")
		}
	}
	if m := mountsOf(t, filepath.Join(builds, id)); m != "" {
		t.Errorf("a mount of the killed build is left: %s", m)
	}
	pristine(t, tr)

	var log bytes.Buffer
	if _, err := tr.BuildPair(ctx, []string{writePatch(t, "a.patch", patchA)}, t.TempDir(), &log); err != nil {
		t.Fatalf("next build: %v\n%s", err, log.String())
	}
	if !strings.Contains(log.String(), "removing the private view of a build that died ("+id+")") {
		t.Errorf("next build did not remove the dead view %s:\n%s", id, log.String())
	}
	pristine(t, tr)
	noViews(t, tr)
}

// mountsOf returns a mountinfo line of any process that mentions dir.
func mountsOf(t *testing.T, dir string) string {
	t.Helper()
	infos, _ := filepath.Glob("/proc/[0-9]*/mountinfo")
	for _, p := range infos {
		data, err := os.ReadFile(p)
		if err != nil {
			continue // the process ended
		}
		for _, l := range strings.Split(string(data), "\n") {
			if strings.Contains(l, dir) {
				return p + ": " + l
			}
		}
	}
	return ""
}

// Without overlayfs a build patches the shared tree in place, says so,
// and waits for the private builds reading the tree to finish first.
func TestInPlaceFallback(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mount  string // replaces mount(8)
		env    string // LIVEFIX_PRIVATE_TREE
		reason string
	}{
		{name: "mount fails", mount: "false", reason: "overlayfs mount failed"},
		{name: "turned off", env: "0", reason: "LIVEFIX_PRIVATE_TREE=0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tgt := fakeTarget(t)
			ctx := context.Background()
			tr, err := Prepare(ctx, tgt, nil)
			if err != nil {
				t.Fatal(err)
			}
			// A private build reading the tree while the in-place one
			// starts (when this machine can make one at all).
			private := os.Geteuid() == 0
			slowErr := make(chan error, 1)
			if private {
				go func() {
					_, err := tr.BuildPair(ctx, []string{patchOf(t, "fs/b.c", `const char *b(void) { return "b"; } /* NAP */`)}, t.TempDir(), nil)
					slowErr <- err
				}()
				waitFile(t, filepath.Join(os.Getenv("LIVEFIX_TEST_MEET"), "nap-started"), time.Minute)
			}
			if tc.env != "" {
				t.Setenv("LIVEFIX_PRIVATE_TREE", tc.env)
			}
			inPlace, err := Prepare(ctx, tgt, nil)
			if err != nil {
				t.Fatal(err)
			}
			inPlace.mountProgram = tc.mount
			out := t.TempDir()
			var log bytes.Buffer
			pairs, err := inPlace.BuildPair(ctx, []string{writePatch(t, "a.patch", patchA)}, out, &log)
			if err != nil {
				t.Fatalf("%v\n%s", err, log.String())
			}
			t.Log(log.String())
			if !strings.Contains(log.String(), "in place, one build at a time (no private view: "+tc.reason) {
				t.Errorf("the log does not say the build ran in place because of %q:\n%s", tc.reason, log.String())
			}
			if private {
				if !strings.Contains(log.String(), "waiting for the livefix builds reading") {
					t.Errorf("the in-place build did not wait for the private one:\n%s", log.String())
				}
				if err := <-slowErr; err != nil {
					t.Errorf("private build: %v", err)
				}
			}
			if len(pairs) != 1 {
				t.Fatalf("pairs = %+v", pairs)
			}
			o, _ := os.ReadFile(pairs[0].Orig)
			n, _ := os.ReadFile(pairs[0].Patched)
			if len(o) == 0 || bytes.Equal(o, n) {
				t.Error("orig and patched objects missing or identical")
			}
			pristine(t, tr)
			noViews(t, tr)
		})
	}
}

// The liveness lock is what tells a dead build from a live one.
func TestCleanBuildsKeepsLiveViews(t *testing.T) {
	tgt := fakeTarget(t)
	tr, err := Prepare(context.Background(), tgt, nil)
	if err != nil {
		t.Fatal(err)
	}
	builds := filepath.Join(tr.root, buildsName)
	if err := os.MkdirAll(builds, 0o755); err != nil {
		t.Fatal(err)
	}
	live, liveID, err := newLiveLock(builds)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	dead, deadID, err := newLiveLock(builds)
	if err != nil {
		t.Fatal(err)
	}
	dead.Close() // as if its process died
	for _, id := range []string{liveID, deadID, "orphan"} {
		if err := os.MkdirAll(filepath.Join(builds, id, "upper", "fs"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// A lock file that never got renamed, long ago.
	stale := filepath.Join(builds, ".new-123.lock")
	if err := os.WriteFile(stale, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(stale, old, old); err != nil {
		t.Fatal(err)
	}
	tr.cleanBuilds(logWriter{t})
	var left []string
	entries, _ := os.ReadDir(builds)
	for _, e := range entries {
		left = append(left, e.Name())
	}
	if want := []string{liveID, liveID + ".lock"}; strings.Join(left, " ") != strings.Join(want, " ") {
		t.Errorf("left %v, want %v", left, want)
	}
}
