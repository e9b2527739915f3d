package ulp

import (
	"os"
	"runtime"
	"runtime/debug"
	"strconv"

	"golang.org/x/sys/unix"
)

// boost runs the calling goroutine on its own OS thread at the highest
// priority until the returned function is called. Every step of a patch
// is a request to the proc tracer thread (which boosts itself) and back;
// on a loaded machine an unboosted requester waits for a time slice at
// each hand-off, which stretches the target's pause.
func boost() func() {
	runtime.LockOSThread()
	tid := unix.Gettid()
	old, err := unix.Getpriority(unix.PRIO_PROCESS, tid)
	if err != nil || unix.Setpriority(unix.PRIO_PROCESS, tid, -20) != nil {
		runtime.UnlockOSThread()
		return func() {}
	}
	return func() {
		// getpriority returns 20-nice.
		unix.Setpriority(unix.PRIO_PROCESS, tid, 20-old)
		runtime.UnlockOSThread()
	}
}

// quietGC keeps the garbage collector from running until the returned
// function is called. Loading a patch and the target's symbols allocates
// a lot just before the first stop; a collection then running in the
// background would compete with the tracer inside the pause. Disabling
// the collector first waits for a cycle in progress to finish, outside
// any stop; the stops themselves allocate little.
func quietGC() func() {
	old := debug.SetGCPercent(-1)
	return func() { debug.SetGCPercent(old) }
}

// RaisePriority sets every thread of this process to nice (threads
// created later inherit it from their creator), best effort (lowering
// nice needs CAP_SYS_NICE). A patch command calls it first: the target's
// threads compete for the CPUs with it, and with 8 busy workers on 2
// cores a command at nice 0 gets a fifth of a CPU for the work it does
// before and between the stops (reading the patch, the target's ELF
// files and unwind tables, linking).
func RaisePriority(nice int) {
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return
	}
	for _, e := range ents {
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			unix.Setpriority(unix.PRIO_PROCESS, tid, nice)
		}
	}
}
