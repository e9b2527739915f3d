package hoststate

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const id = "0011223344556677889900112233445566778899"

func TestSaveLoadAndObjects(t *testing.T) {
	d := Open(t.TempDir())
	st, err := d.Load(id)
	if err != nil || st.Applied != nil || st.BuildID != id {
		t.Fatalf("empty load: %+v %v", st, err)
	}
	sum1, err := d.PutObject(id, []byte("module one"), ".ko")
	if err != nil {
		t.Fatal(err)
	}
	sum2, _ := d.PutObject(id, []byte("module two"), ".ko")
	st.Applied = &Level{Name: "lf_a", Level: 1, Module: sum1}
	if err := d.Save(st); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(d.ObjectPath(id, sum2, ".ko")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("an object the state does not name survived Save: %v", err)
	}
	if err := d.VerifyObject(id, sum1, ".ko"); err != nil {
		t.Error(err)
	}
	if err := os.WriteFile(d.ObjectPath(id, sum1, ".ko"), []byte("tampered"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := d.VerifyObject(id, sum1, ".ko"); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Errorf("tampered object: %v", err)
	}
	got, err := d.Load(id)
	if err != nil || got.Applied == nil || got.Applied.Name != "lf_a" {
		t.Fatalf("reload: %+v %v", got, err)
	}
	// No temporary files are left behind.
	entries, _ := os.ReadDir(filepath.Dir(d.StatePath(id)))
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp") {
			t.Errorf("left %s", e.Name())
		}
	}
}

func TestLoadRefusesBadFiles(t *testing.T) {
	d := Open(t.TempDir())
	for name, content := range map[string]string{
		"torn":         `{"format":1,"build_id":"` + id + `","applied":{"na`,
		"other format": `{"format":9,"build_id":"` + id + `"}`,
		"other kernel": `{"format":1,"build_id":"ff"}`,
	} {
		if err := WriteFile(d.StatePath(id), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := d.Load(id); err == nil {
			t.Errorf("%s: loaded", name)
		}
	}
	if _, err := d.Load("../etc"); err == nil {
		t.Errorf("a build-id with a path in it was accepted")
	}
}

func TestLock(t *testing.T) {
	d := Open(t.TempDir())
	l, err := d.Lock(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = d.Lock(context.Background(), 150*time.Millisecond)
	var le *LockedError
	if !errors.As(err, &le) || le.PID != os.Getpid() || time.Since(start) < 150*time.Millisecond {
		t.Fatalf("second lock: %v", err)
	}
	if !strings.Contains(err.Error(), "pid ") || !strings.Contains(err.Error(), "--lock-timeout") {
		t.Errorf("message: %v", err)
	}
	if err := l.Unlock(); err != nil {
		t.Fatal(err)
	}
	l2, err := d.Lock(context.Background(), 0)
	if err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	l2.Unlock()
}

func TestRoot(t *testing.T) {
	t.Setenv(EnvRoot, "")
	if Root("") != DefaultRoot || Root("/x") != "/x" {
		t.Error("defaults")
	}
	t.Setenv(EnvRoot, "/env")
	if Root("") != "/env" || Root("/x") != "/x" {
		t.Error("env")
	}
}
