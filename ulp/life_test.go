package ulp_test

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/livefix/livefix/ulp"
)

func findRecord(t *testing.T, state string, pid int) *ulp.Record {
	t.Helper()
	recs, err := ulp.List(state)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.Pid == pid {
			return r
		}
	}
	return nil
}

func hasPatch(r *ulp.Record, name string) bool {
	if r == nil {
		return false
	}
	for _, a := range r.Patches {
		if a.Name == name {
			return true
		}
	}
	return false
}

// TestLifecycle: the records follow the process through fork, exec and
// a change of its code behind livefix's back (issue 10, acceptance 6).
func TestLifecycle(t *testing.T) {
	requireHost(t)
	work, state := t.TempDir(), t.TempDir()
	res := buildPatch(t, testdata(t, "life"), testdata(t, "patches", "life.patch"), "make -s", "life", work, 1)
	tg := start(t, nil, res.OrigTarget)
	opts := ulp.Options{StateDir: state, Timeout: 5 * time.Second}
	var notes []string
	opts.Notify = func(pid int, n string) { notes = append(notes, n) }
	if got := tg.ask("v"); got != "16" {
		t.Fatalf("v = %s", got)
	}
	if _, err := ulp.Apply(tg.pid, res.Patch, opts); err != nil {
		t.Fatal(err)
	}
	if got := tg.ask("v"); got != "17" {
		t.Fatalf("patched: v = %s", got)
	}

	t.Run("fork", func(t *testing.T) {
		tg.t = t
		child, err := strconv.Atoi(tg.ask("f"))
		if err != nil {
			t.Fatal(err)
		}
		if got := tg.ask("c"); got != "17" {
			t.Fatalf("the child runs %s, want the patched 17", got)
		}
		r := findRecord(t, state, child)
		if !hasPatch(r, "life") {
			t.Fatalf("the forked child %d is not listed as patched: %+v", child, r)
		}
		if !strings.Contains(strings.Join(r.Notes, " "), "inherited by fork") {
			t.Fatalf("notes: %q", r.Notes)
		}
		ctg := &target{t: t, pid: child}
		at := r.Patches[0].Funcs[0].At
		t.Logf("child entry before: % x", ctg.memory(at, 5))
		ur, err := ulp.Unpatch(child, "", opts)
		if err != nil {
			t.Fatalf("unpatch the child: %v", err)
		}
		t.Logf("unpatch: %+v; child entry after: % x, parent % x", ur[0], ctg.memory(at, 5), tg.memory(at, 5))
		if got := tg.ask("c"); got != "16" {
			t.Fatalf("unpatched child runs %s", got)
		}
		if got := tg.ask("v"); got != "17" {
			t.Fatalf("the parent lost its patch: v = %s", got)
		}
		if hasPatch(findRecord(t, state, child), "life") {
			t.Fatal("the unpatched child is still listed")
		}
		// Patched again from the file's original bytes.
		if _, err := ulp.Apply(child, res.Patch, opts); err != nil {
			t.Fatalf("re-patch the child: %v", err)
		}
		if got := tg.ask("c"); got != "17" {
			t.Fatalf("re-patched child runs %s", got)
		}
		tg.ask("k")
		if findRecord(t, state, child) != nil {
			t.Fatal("the killed child is still listed")
		}
	})

	t.Run("changed-behind-our-back", func(t *testing.T) {
		tg.t = t
		r := findRecord(t, state, tg.pid)
		if !hasPatch(r, "life") {
			t.Fatalf("record: %+v", r)
		}
		// Someone else puts the original bytes back.
		f := r.Patches[0].Funcs[0]
		mem, err := os.OpenFile("/proc/"+itoa(tg.pid)+"/mem", os.O_RDWR, 0)
		// Harmless to the running threads: the original code again.
		if err != nil {
			t.Fatal(err)
		}
		if _, err := mem.WriteAt(f.Orig, int64(f.At)); err != nil {
			t.Fatal(err)
		}
		mem.Close()
		r = findRecord(t, state, tg.pid)
		if r == nil || hasPatch(r, "life") || !strings.Contains(strings.Join(r.Notes, " "), "no longer in memory") {
			t.Fatalf("list did not report the disagreement: %+v", r)
		}
		if got := tg.ask("v"); got != "16" {
			t.Fatalf("v = %s", got)
		}
		if _, err := ulp.Unpatch(tg.pid, "", opts); !errors.Is(err, ulp.ErrNotApplied) {
			t.Fatalf("unpatch: %v", err)
		}
		if _, err := ulp.Apply(tg.pid, res.Patch, opts); err != nil {
			t.Fatalf("apply again: %v", err)
		}
		// A jump livefix has no record of (here: the same patch applied
		// with another state directory, as after a lost /run): refused,
		// because the original bytes come from the file.
		if _, err := ulp.Unpatch(tg.pid, "", opts); err != nil {
			t.Fatal(err)
		}
		other := ulp.Options{StateDir: t.TempDir()}
		if _, err := ulp.Apply(tg.pid, res.Patch, other); err != nil {
			t.Fatal(err)
		}
		if _, err := ulp.Apply(tg.pid, res.Patch, opts); err == nil || !strings.Contains(err.Error(), "has no record of") {
			t.Fatalf("apply over an unknown jump: %v", err)
		}
		if got := tg.ask("v"); got != "17" {
			t.Fatalf("v = %s", got)
		}
		if _, err := ulp.Unpatch(tg.pid, "", other); err != nil {
			t.Fatal(err)
		}
		if _, err := ulp.Apply(tg.pid, res.Patch, opts); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("exec", func(t *testing.T) {
		tg.t = t
		if got := tg.ask("e"); got != "ready" {
			t.Fatalf("exec: %q", got)
		}
		if got := tg.ask("v"); got != "16" {
			t.Fatalf("after exec v = %s", got)
		}
		notes = nil
		if _, err := ulp.Unpatch(tg.pid, "", opts); !errors.Is(err, ulp.ErrNotApplied) {
			t.Fatalf("unpatch after exec: %v", err)
		}
		if !strings.Contains(strings.Join(notes, " "), "no longer in memory") {
			t.Fatalf("notes: %q", notes)
		}
		if _, err := ulp.Apply(tg.pid, res.Patch, opts); err != nil {
			t.Fatalf("patch the new image: %v", err)
		}
		if got := tg.ask("v"); got != "17" {
			t.Fatalf("v = %s", got)
		}
		if _, err := ulp.Unpatch(tg.pid, "", opts); err != nil {
			t.Fatal(err)
		}
		if got := tg.ask("v"); got != "16" {
			t.Fatalf("v = %s", got)
		}
	})
}
