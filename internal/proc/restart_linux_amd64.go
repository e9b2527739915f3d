package proc

import (
	"bytes"
	"fmt"
	"sort"
	"strconv"

	"golang.org/x/sys/unix"
)

// The order in which a stop restarts the threads.
//
// With more runnable threads than CPUs, each thread of the target waits
// its turn for a CPU; the longest a thread waits between two time slices
// is the gap a user of the target sees. A stop of every thread empties
// the run queues and restarting them fills them again, in the order the
// threads are woken. Restarted in an arbitrary order, a thread that was
// next in line when the stop began can lose its place and wait a whole
// round again: its gap becomes the time it had already waited, plus the
// stop, plus another round.
//
// Which order keeps the round was measured, not derived: with 8 busy
// threads on 2 CPUs (Linux 6.18, EEVDF), the thread woken first was the
// one with the longest gap in most applies when the longest-waiting
// thread was restarted first; restarted last, it was not, and the
// longest gaps over 88 applies fell from a median of 24.1 ms (and 24.0
// ms in map order) to 20.1 ms (BENCHMARKS.md). That fits how the fair
// schedulers place a woken thread: relative to the threads already
// queued on its CPU (EEVDF keeps its lag only against a non-empty queue;
// CFS keeps its vruntime, and a woken thread far behind the running one
// preempts it). So the threads that had just run are restarted first and
// the one that had waited longest last, and it lands ahead of them.
//
// How long a thread had waited is read from the kernel's scheduler
// statistics (/proc/PID/task/TID/schedstat: the time on a CPU, the time
// waiting on a run queue, the slices run): the waiting time only grows
// when a waiting thread gets a CPU, so its growth between just before the
// interrupts and the end of the stop is, for each thread, the wait that
// the stop ended (a thread that was running when interrupted grew by
// nothing).

// runDelay returns the time thread tid has waited on a run queue so far
// (ns), or false. The file is kept open for the next stop.
func (p *Process) runDelay(tid int) (uint64, bool) {
	fd, ok := p.schedFiles[tid]
	if !ok {
		var err error
		fd, err = unix.Open(fmt.Sprintf("/proc/%d/task/%d/schedstat", p.pid, tid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return 0, false
		}
		if p.schedFiles == nil {
			p.schedFiles = map[int]int{}
		}
		p.schedFiles[tid] = fd
	}
	var buf [96]byte
	n, err := unix.Pread(fd, buf[:], 0)
	if err != nil || n <= 0 {
		// The thread exited; a later thread with its tid gets a new file.
		unix.Close(fd)
		delete(p.schedFiles, tid)
		return 0, false
	}
	return parseRunDelay(buf[:n])
}

// closeSchedFiles closes what runDelay opened.
func (p *Process) closeSchedFiles() {
	for tid, fd := range p.schedFiles {
		unix.Close(fd)
		delete(p.schedFiles, tid)
	}
}

// parseRunDelay returns the second field of a schedstat line
// ("RUN WAIT SLICES\n").
func parseRunDelay(b []byte) (uint64, bool) {
	f := bytes.Fields(b)
	if len(f) != 3 {
		return 0, false
	}
	v, err := strconv.ParseUint(string(f[1]), 10, 64)
	return v, err == nil
}

// markWaits records every running thread's run delay, just before a stop's
// interrupts.
func (p *Process) markWaits() {
	for _, t := range p.threads {
		t.waitMark, t.marked = 0, false
		if !t.stopped {
			t.waitMark, t.marked = p.runDelay(t.tid)
		}
	}
}

// measureWaits sets each thread's owed: how much its run delay grew since
// markWaits, once every thread has stopped.
func (p *Process) measureWaits() {
	for _, t := range p.threads {
		t.owed = 0
		if !t.marked {
			continue
		}
		if v, ok := p.runDelay(t.tid); ok && v > t.waitMark {
			t.owed = v - t.waitMark
		}
		t.marked = false
	}
}

// restartOrder returns the threads in the order to restart them: those
// that had waited longest for a CPU when the stop began last (then by
// tid).
func (p *Process) restartOrder() []*thread {
	ts := make([]*thread, 0, len(p.threads))
	for _, t := range p.threads {
		ts = append(ts, t)
	}
	sortRestart(ts)
	return ts
}

func sortRestart(ts []*thread) {
	sort.Slice(ts, func(i, j int) bool {
		if ts[i].owed != ts[j].owed {
			return ts[i].owed < ts[j].owed
		}
		return ts[i].tid < ts[j].tid
	})
}
