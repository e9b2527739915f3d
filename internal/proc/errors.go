package proc

import (
	"errors"
	"syscall"

	"github.com/livefix/livefix/buildid"
)

// Sentinel errors; match them with errors.Is.
var (
	// ErrNoProcess: the process (or the thread) does not exist or has exited.
	ErrNoProcess = errors.New("no such process")
	// ErrPermission: the kernel refused access to the process.
	ErrPermission = errors.New("permission denied")
	// ErrNotMapped: no object with the requested build-id is mapped.
	ErrNotMapped = errors.New("object not mapped")
	// ErrNoBuildID: the ELF file carries no GNU build-id note.
	ErrNoBuildID = buildid.ErrNotFound
	// ErrTimeout: a thread did not reach the expected stop in time.
	ErrTimeout = errors.New("timed out waiting for the target")
	// ErrDetached: the Process was already detached (or lost).
	ErrDetached = errors.New("process is detached")
	// ErrRunning: the operation needs the process stopped; call Stop first.
	ErrRunning = errors.New("process is running (call Stop first)")
	// ErrNoGap: no free address range within rel32 reach was found.
	ErrNoGap = errors.New("no free address range within reach")
)

func isESRCH(err error) bool { return errors.Is(err, syscall.ESRCH) }
