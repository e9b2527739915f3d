package ulp

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"

	"golang.org/x/sys/unix"
)

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
// nice needs CAP_SYS_NICE). The watcher calls it: it must handle a new
// process within 200 ms of its exec on a loaded host. A patch command
// does not: outside its stops it is not urgent, and inside them its
// tracer thread runs real-time (internal/proc).
func RaisePriority(nice int) { setAll(nice) }

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
// process's affinity is left, best effort. A patch command's tracer
// thread is real-time: on a CPU a target thread is running on, each of
// its wake-ups preempts that target thread, which the target sees as a
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
