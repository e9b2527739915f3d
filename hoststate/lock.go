package hoststate

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// LockedError is returned when another process holds the lock longer
// than the caller waits.
type LockedError struct {
	Path   string
	PID    int // the holder, 0 when it could not be read
	Waited time.Duration
}

func (e *LockedError) Error() string {
	holder := "another process"
	if e.PID > 0 {
		holder = "another livefix (pid " + strconv.Itoa(e.PID) + ")"
	}
	return fmt.Sprintf("%s holds the lock %s; gave up after waiting %s; nothing was changed; wait for it to finish or raise --lock-timeout",
		holder, e.Path, e.Waited.Round(time.Millisecond))
}

// Lock is a held lock; Unlock releases it. The kernel releases it too
// when the process dies, so a killed command never leaves it held.
type Lock struct {
	f *os.File
}

// LockPath is the lock file of the state directory.
func (d *Dir) LockPath() string { return d.Root + "/lock" }

// Lock takes the state directory's lock, waiting up to timeout (0: do not
// wait). The holder's pid is written into the lock file so that a waiter
// can name it.
func (d *Dir) Lock(ctx context.Context, timeout time.Duration) (*Lock, error) {
	if err := os.MkdirAll(d.Root, 0o755); err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	path := d.LockPath()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	start := time.Now()
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if time.Since(start) >= timeout {
			f.Close()
			return nil, &LockedError{Path: path, PID: HolderPID(path), Waited: time.Since(start)}
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	// The pid is informative only: the flock is the lock.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &Lock{f: f}, nil
}

// HolderPID reads the pid written by the lock's last holder.
func HolderPID(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// Unlock releases the lock.
func (l *Lock) Unlock() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close() // closing the only descriptor releases the flock
	l.f = nil
	return err
}
