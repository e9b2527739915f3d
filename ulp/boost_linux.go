package ulp

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// boost runs the calling goroutine on its own OS thread at the highest
// priority until the returned function is called. Every step of a patch
// is a request to the proc tracer thread (which boosts itself) and back;
// on a loaded machine an unboosted requester waits for a time slice at
// each hand-off, which stretches the target's pause.
func boost() func() {
	raise()
	runtime.LockOSThread()
	tid := unix.Gettid()
	old, err := unix.Getpriority(unix.PRIO_PROCESS, tid)
	if err != nil || unix.Setpriority(unix.PRIO_PROCESS, tid, -20) != nil {
		runtime.UnlockOSThread()
		return func() {}
	}
	return func() {
		// getpriority returns 20-nice; after settle, the nice the
		// process had before RaisePriority.
		nice := 20 - old
		prio.mu.Lock()
		if prio.set && !prio.raised {
			nice = prio.orig
		}
		prio.mu.Unlock()
		unix.Setpriority(unix.PRIO_PROCESS, tid, nice)
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
func RaisePriority(nice int) { raisePriority(nice, false) }

// RaisePriorityUntilCommit is RaisePriority for a patch command: the
// raise lasts until a commit has ended its stop (settle). Then the
// target's threads are runnable again and must get their CPUs back at
// once: a command still at nice -20 on the CPU a woken thread last ran
// on delays it (with 2 CPUs, by up to a millisecond and more: the tail of
// the gap the target sees after PTRACE_DETACH), while what the command
// does after the commit (record the patch, print) is not urgent. The
// next Apply or Unpatch of the same command (--all) raises again.
func RaisePriorityUntilCommit(nice int) { raisePriority(nice, true) }

func raisePriority(nice int, untilCommit bool) {
	prio.mu.Lock()
	defer prio.mu.Unlock()
	prio.untilCommit = untilCommit
	if !prio.set {
		// getpriority returns 20-nice.
		if v, err := unix.Getpriority(unix.PRIO_PROCESS, 0); err == nil {
			prio.orig = 20 - v
		}
	}
	prio.set, prio.nice = true, nice
	setAll(nice)
	prio.raised = true
}

// prio is what RaisePriority asked for.
var prio struct {
	mu     sync.Mutex
	set    bool // RaisePriority was called
	nice   int  // what it asked for
	orig   int  // the nice before it
	raised bool // the threads are at nice now
	// untilCommit: settle after each commit (RaisePriorityUntilCommit)
	untilCommit bool
}

// raise sets the threads to RaisePriority's nice again after a settle.
func raise() {
	prio.mu.Lock()
	defer prio.mu.Unlock()
	if prio.set && !prio.raised {
		setAll(prio.nice)
		prio.raised = true
	}
}

// settle returns the threads to the nice the process had before
// RaisePriority, if it was called.
func settle() {
	prio.mu.Lock()
	defer prio.mu.Unlock()
	if prio.set && prio.raised && prio.untilCommit {
		setAll(prio.orig)
		prio.raised = false
	}
}

// setAll sets every thread of this process to nice, best effort.
func setAll(nice int) {
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

// AvoidCPUsOf moves every thread of this process off the CPUs on which
// pid's threads are running right now, when at least one CPU of this
// process's affinity is left, best effort. A patch command runs at nice
// -20: on a CPU a target thread is running on, each wake-up of one of
// its threads preempts that target thread, which the target sees as a
// gap before the stop. On two CPUs with one busy worker this halves the
// longest gap the worker sees (BENCHMARKS.md). When the target keeps
// every CPU busy nothing changes. Threads created later inherit the
// affinity.
func AvoidCPUsOf(pid int) {
	var cur unix.CPUSet
	if unix.SchedGetaffinity(0, &cur) != nil {
		return
	}
	want := cur
	for _, cpu := range runningCPUs(pid) {
		want.Clear(cpu)
	}
	if want.Count() == 0 || want == cur {
		return
	}
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return
	}
	for _, e := range ents {
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			unix.SchedSetaffinity(tid, &want)
		}
	}
}

// runningCPUs returns the CPUs of pid's threads that are running or
// runnable (state R), from /proc/PID/task/TID/stat.
func runningCPUs(pid int) []int {
	dir := filepath.Join("/proc", strconv.Itoa(pid), "task")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var cpus []int
	for _, e := range ents {
		stat, err := os.ReadFile(filepath.Join(dir, e.Name(), "stat"))
		if err != nil {
			continue
		}
		if state, cpu, ok := parseTaskStat(stat); ok && state == 'R' {
			cpus = append(cpus, cpu)
		}
	}
	return cpus
}

// parseTaskStat returns the state (field 3) and the CPU last run on
// (field 39) of a /proc/PID/task/TID/stat line. The command name (field
// 2) may hold spaces and parentheses, so fields are counted after its
// last ')'.
func parseTaskStat(stat []byte) (state byte, cpu int, ok bool) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := bytes.Fields(stat[i+1:])
	if len(f) < 37 || len(f[0]) != 1 {
		return 0, 0, false
	}
	cpu, err := strconv.Atoi(string(f[36]))
	if err != nil || cpu < 0 {
		return 0, 0, false
	}
	return f[0][0], cpu, true
}
