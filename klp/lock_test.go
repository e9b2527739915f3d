package klp

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"
)

// The kallsyms boot is serialised across processes by lockFile: a second
// caller waits while the first holds the lock, gives up with its context,
// and gets the lock once the first releases it.
func TestLockFileWaitsForHolder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "kallsyms.lock")
	unlock, err := lockFile(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if _, err := lockFile(ctx, path); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second lock while held: err = %v, want deadline exceeded", err)
	}
	unlock()
	unlock2, err := lockFile(context.Background(), path)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	unlock2()
}
