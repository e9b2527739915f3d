package kernelpatch

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/livefix/livefix/hoststate"
)

// managed is a fake kernel with a Manager whose state lives in stateRoot.
func managed(t *testing.T, stateRoot, bootID string) (*fakeKernel, *Manager) {
	t.Helper()
	k := newFakeKernel(t)
	if err := os.MkdirAll(filepath.Join(k.root, "proc/sys/kernel/random"), 0o755); err != nil {
		t.Fatal(err)
	}
	k.write("proc/sys/kernel/random/boot_id", bootID+"\n")
	m := NewManager(k.sys, stateRoot)
	m.LockTimeout = 200 * time.Millisecond
	return k, m
}

func levelMeta(name string, level int) map[string]any {
	return map[string]any{"name": name, "release": fakeRelease, "build_id": fakeBuildID, "level": level,
		"cves": []string{"CVE-2026-0001"}, "summary": "test fix"}
}

func mustState(t *testing.T, m *Manager) *hoststate.State {
	t.Helper()
	st, err := m.State.Load(fakeBuildID)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestManagerLevels(t *testing.T) {
	state := t.TempDir()
	k, m := managed(t, state, "boot-1")
	dir := t.TempDir()
	ctx := context.Background()
	l1 := writeModule(t, dir, "lf_l1_replace", true, levelMeta("lf_l1_replace", 1))
	l2 := writeModule(t, dir, "lf_l2_replace", true, levelMeta("lf_l2_replace", 2))

	if st := m.Status(ctx, "", Options{}); st.Code != StatusNothing {
		t.Fatalf("status before anything: %+v", st)
	}
	if _, err := m.Apply(ctx, l1, ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	if st := mustState(t, m); st.Applied == nil || st.Applied.Level != 1 || st.Pending != nil || st.Applied.BootID != "boot-1" {
		t.Fatalf("state after level 1: %+v", st)
	}
	if _, err := m.Apply(ctx, l2, ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	st := mustState(t, m)
	if st.Applied == nil || st.Applied.Name != "lf_l2_replace" || st.Applied.Level != 2 {
		t.Fatalf("state after level 2: %+v", st)
	}
	objs, _ := os.ReadDir(filepath.Join(state, "kernel", fakeBuildID, "objects"))
	if len(objs) != 2 {
		t.Errorf("objects after level 2: %d files, want the .ko and .json of level 2 only", len(objs))
	}
	if err := m.State.VerifyObject(fakeBuildID, st.Applied.Module, ".ko"); err != nil {
		t.Error(err)
	}
	if s := m.Status(ctx, "", Options{}); s.Code != StatusApplied || s.Version != fakeRelease+"+livefix2" {
		t.Errorf("status after level 2: %+v", s)
	}
	info, err := m.Info()
	if err != nil || len(info) != 1 || info[0].Level != 2 || len(info[0].CVEs) != 1 || info[0].CVEs[0] != "CVE-2026-0001" || info[0].Summary != "test fix" {
		t.Errorf("info: %+v %v", info, err)
	}

	// A lower level is refused with nothing touched.
	before, _ := os.ReadFile(m.State.StatePath(fakeBuildID))
	l1b := writeModule(t, t.TempDir(), "lf_l1b_replace", true, levelMeta("lf_l1b_replace", 1))
	res, err := m.Apply(ctx, l1b, ApplyOptions{})
	var dg *DowngradeError
	if !errors.As(err, &dg) || res.Outcome != Unchanged || k.loaded("lf_l1b_replace") {
		t.Fatalf("downgrade: %v outcome %v", err, res.Outcome)
	}
	if after, _ := os.ReadFile(m.State.StatePath(fakeBuildID)); string(after) != string(before) {
		t.Errorf("a refused downgrade changed the state file")
	}
	if _, err := m.Apply(ctx, l1b, ApplyOptions{Downgrade: true}); err != nil {
		t.Fatalf("--downgrade: %v", err)
	}
	if st := mustState(t, m); st.Applied.Level != 1 {
		t.Errorf("after --downgrade: level %d", st.Applied.Level)
	}

	// unload removes the record; unload --all then has nothing to do.
	if _, err := m.Unload(ctx, "lf_l1b_replace", Options{}); err != nil {
		t.Fatal(err)
	}
	if st := mustState(t, m); st.Applied != nil || st.Pending != nil {
		t.Errorf("after unload: %+v", st)
	}
	if res, _, err := m.UnloadAll(ctx, Options{}); err != nil || len(res) != 0 {
		t.Errorf("unload --all: %v %v", res, err)
	}
}

func TestManagerNoPersistAndMismatch(t *testing.T) {
	_, m := managed(t, t.TempDir(), "boot-1")
	ctx := context.Background()
	dir := t.TempDir()
	p := writeModule(t, dir, "lf_np", true, levelMeta("lf_np", 1))
	if _, err := m.Apply(ctx, p, ApplyOptions{NoPersist: true}); err != nil {
		t.Fatal(err)
	}
	if st := mustState(t, m); st.Applied != nil || st.Pending != nil {
		t.Errorf("--no-persist recorded: %+v", st)
	}
	bad := writeModule(t, dir, "lf_other", true, levelMeta("lf_not_this_one", 2))
	res, err := m.Apply(ctx, bad, ApplyOptions{})
	if err == nil || !strings.Contains(err.Error(), "do not belong together") || res.Outcome != Unchanged {
		t.Errorf("mismatched pair: %v %v", res.Outcome, err)
	}
}

func TestManagerLockTimeout(t *testing.T) {
	_, m := managed(t, t.TempDir(), "boot-1")
	lk, err := m.State.Lock(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer lk.Unlock()
	p := writeModule(t, t.TempDir(), "lf_x", true, levelMeta("lf_x", 1))
	start := time.Now()
	res, err := m.Apply(context.Background(), p, ApplyOptions{})
	var le *hoststate.LockedError
	if !errors.As(err, &le) || le.PID != os.Getpid() || !strings.Contains(err.Error(), "pid ") || res.Outcome != Unchanged {
		t.Fatalf("got %v", err)
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Errorf("gave up after %s, before the lock timeout", d)
	}
}

func TestReconcile(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		// setup leaves the system as a killed command would.
		setup      func(t *testing.T, k *fakeKernel, m *Manager, l2 string)
		wantLevel  int
		wantReport string
	}{
		{"load killed before finit_module", func(t *testing.T, k *fakeKernel, m *Manager, l2 string) {
			setPending(t, m, "lf_l2_replace", 2, "boot-1")
		}, 1, "had not loaded anything"},
		{"load killed after its transition completed", func(t *testing.T, k *fakeKernel, m *Manager, l2 string) {
			setPending(t, m, "lf_l2_replace", 2, "boot-1")
			if _, err := k.sys.Load(ctx, l2, Options{}); err != nil {
				t.Fatal(err)
			}
		}, 2, "transition had completed"},
		{"load killed during its transition", func(t *testing.T, k *fakeKernel, m *Manager, l2 string) {
			setPending(t, m, "lf_l2_replace", 2, "boot-1")
			if err := k.sys.LoadModule(mustOpen(t, l2), ""); err != nil {
				t.Fatal(err)
			}
		}, 2, "transition completed now"},
		{"load killed while its transition hangs", func(t *testing.T, k *fakeKernel, m *Manager, l2 string) {
			setPending(t, m, "lf_l2_replace", 2, "boot-1")
			k.mu.Lock()
			k.stuck[true] = true
			k.mu.Unlock()
			if err := k.sys.LoadModule(mustOpen(t, l2), ""); err != nil {
				t.Fatal(err)
			}
		}, 1, "reversed it"},
		{"load from an earlier boot", func(t *testing.T, k *fakeKernel, m *Manager, l2 string) {
			setPending(t, m, "lf_l2_replace", 2, "boot-0")
		}, 1, "earlier boot"},
		{"record without module", func(t *testing.T, k *fakeKernel, m *Manager, l2 string) {
			if _, err := k.sys.Unload(ctx, "lf_l1_replace", Options{}); err != nil {
				t.Fatal(err)
			}
		}, 0, "no longer in the kernel"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, m := managed(t, t.TempDir(), "boot-1")
			dir := t.TempDir()
			l1 := writeModule(t, dir, "lf_l1_replace", true, levelMeta("lf_l1_replace", 1))
			l2 := writeModule(t, dir, "lf_l2_replace", true, levelMeta("lf_l2_replace", 2))
			if _, err := m.Apply(ctx, l1, ApplyOptions{}); err != nil {
				t.Fatal(err)
			}
			tt.setup(t, k, m, l2)
			report, locked, err := m.Reconcile(ctx, true, Options{Timeout: 300 * time.Millisecond})
			if err != nil || !locked {
				t.Fatalf("reconcile: %v (locked %v)", err, locked)
			}
			if !strings.Contains(report, tt.wantReport) || !strings.HasPrefix(report, "repaired: ") || strings.Contains(report, "\n") {
				t.Errorf("report %q, want one line with %q", report, tt.wantReport)
			}
			st := mustState(t, m)
			got := 0
			if st.Applied != nil {
				got = st.Applied.Level
			}
			if got != tt.wantLevel || st.Pending != nil {
				t.Errorf("recorded level %d pending %+v, want level %d", got, st.Pending, tt.wantLevel)
			}
			// The kernel agrees with the record.
			_, level, _ := k.sys.Version()
			if tt.wantLevel != 0 && level != tt.wantLevel {
				t.Errorf("kernel level %d, record %d", level, tt.wantLevel)
			}
			if again, _, _ := m.Reconcile(ctx, true, Options{}); again != "" {
				t.Errorf("second reconcile repaired again: %q", again)
			}
		})
	}
}

func setPending(t *testing.T, m *Manager, name string, level int, bootID string) {
	t.Helper()
	st := mustState(t, m)
	st.Pending = &hoststate.Pending{Op: hoststate.OpLoad, Target: hoststate.Level{Name: name, Level: level, Module: "00"}, PID: 4242, BootID: bootID}
	if err := m.State.Save(st); err != nil {
		t.Fatal(err)
	}
}

func mustOpen(t *testing.T, p string) *os.File {
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestBoot(t *testing.T) {
	ctx := context.Background()
	state := t.TempDir()
	_, m := managed(t, state, "boot-1")
	dir := t.TempDir()
	l2 := writeModule(t, dir, "lf_l2_replace", true, levelMeta("lf_l2_replace", 2))
	if _, err := m.Apply(ctx, l2, ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(l2); err != nil { // boot must use the stored copy
		t.Fatal(err)
	}

	// Reboot: a fresh kernel, the same state directory.
	k2, m2 := managed(t, state, "boot-2")
	if s := m2.Status(ctx, "", Options{}); s.Code != StatusFailed || s.State != "not applied" {
		t.Errorf("status after reboot, before boot: %+v", s)
	}
	if r, err := m2.Boot(ctx, BootOptions{Off: "livefix=off on the kernel command line"}); err != nil || r.Outcome != BootOff || k2.loaded("lf_l2_replace") {
		t.Fatalf("boot with off switch: %+v %v", r, err)
	}
	if s := m2.Status(ctx, "livefix=off on the kernel command line", Options{}); s.Code != StatusOff {
		t.Errorf("status with off switch: %+v", s)
	}
	r, err := m2.Boot(ctx, BootOptions{})
	if err != nil || r.Outcome != BootApplied || !k2.loaded("lf_l2_replace") {
		t.Fatalf("boot: %+v %v", r, err)
	}
	if st := mustState(t, m2); st.Boot.InProgress != nil || st.Applied.BootID != "boot-2" {
		t.Errorf("state after boot: %+v", st)
	}
	if r, err := m2.Boot(ctx, BootOptions{}); err != nil || r.Outcome != BootAlreadyApplied {
		t.Errorf("second boot: %+v %v", r, err)
	}

	// A boot that died while loading: the mark is still set.
	k3, m3 := managed(t, state, "boot-3")
	st := mustState(t, m3)
	st.Boot.InProgress = &hoststate.Mark{Name: "lf_l2_replace", Level: 2, BootID: "boot-2"}
	if err := m3.State.Save(st); err != nil {
		t.Fatal(err)
	}
	r, err = m3.Boot(ctx, BootOptions{})
	if !errors.Is(err, ErrSkipped) || r.Outcome != BootSkipped || k3.loaded("lf_l2_replace") ||
		!strings.Contains(r.Message, "level 2 skipped: the previous boot did not finish loading it") {
		t.Fatalf("boot after a crash: %+v %v", r, err)
	}
	// It stays skipped, and status says so, until --retry.
	k4, m4 := managed(t, state, "boot-4")
	if r, err := m4.Boot(ctx, BootOptions{}); !errors.Is(err, ErrSkipped) || k4.loaded("lf_l2_replace") {
		t.Fatalf("boot after a skipped boot: %+v %v", r, err)
	}
	if s := m4.Status(ctx, "", Options{}); s.Code != StatusFailed || s.State != "skipped" || !strings.Contains(s.Message, "did not finish loading it") {
		t.Errorf("status when skipped: %+v", s)
	}
	if r, err := m4.Boot(ctx, BootOptions{Retry: true}); err != nil || r.Outcome != BootApplied || !k4.loaded("lf_l2_replace") {
		t.Fatalf("boot --retry: %+v %v", r, err)
	}
	if s := m4.Status(ctx, "", Options{}); s.Code != StatusApplied {
		t.Errorf("status after --retry: %+v", s)
	}
}

func TestBootOtherKernel(t *testing.T) {
	state := t.TempDir()
	other := &hoststate.State{BuildID: strings.Repeat("ab", 20), Release: "6.1.0-1-amd64",
		Applied: &hoststate.Level{Name: "lf_old", Level: 3, Module: "00"}}
	if err := hoststate.Open(state).Save(other); err != nil {
		t.Fatal(err)
	}
	_, m := managed(t, state, "boot-1")
	r, err := m.Boot(context.Background(), BootOptions{})
	if err != nil || r.Outcome != BootOtherKernel || !strings.Contains(r.Message, "belongs to another kernel") || !strings.Contains(r.Message, "kept") {
		t.Fatalf("%+v %v", r, err)
	}
	if _, err := os.Stat(hoststate.Open(state).StatePath(other.BuildID)); err != nil {
		t.Errorf("the other kernel's record is gone: %v", err)
	}
}
