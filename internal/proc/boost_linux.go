package proc

import "golang.org/x/sys/unix"

// boostTracer raises the calling thread (the tracer, locked to its OS
// thread for good) to SCHED_FIFO at priority 1, the lowest real-time
// priority, and reports whether it did; if that is not permitted (no
// CAP_SYS_NICE, RLIMIT_RTPRIO 0, a cgroup without real-time runtime) it
// falls back to nice -20, best effort.
//
// Why real time: with more runnable target threads than CPUs, a tracer
// under the fair scheduler, even at nice -20, waits up to a tick (4ms at
// HZ=250) for a CPU each time it wakes (a request to handle, a stop
// reported) and is preempted by the target threads it restarts, with the
// other threads still stopped: measured on two CPUs with 8 busy target
// threads, the detach of a commit stop stretched from 0.1ms to 7ms that
// way. A real-time tracer takes a CPU from a fair-scheduled target at
// once and keeps it until it sleeps. It never spins: its waits sleep
// (waitFor), and it works only inside stops and short requests, so the
// target loses no more CPU than under nice -20. Any process priority of
// a real-time target above 1 still wins.
//
// SCHED_RESET_ON_FORK: a thread that the Go runtime happens to clone from
// this one starts under the normal policy.
func boostTracer() bool {
	tid := unix.Gettid()
	err := unix.SchedSetAttr(tid, &unix.SchedAttr{
		Size:     unix.SizeofSchedAttr,
		Policy:   unix.SCHED_FIFO,
		Priority: 1,
		Flags:    unix.SCHED_FLAG_RESET_ON_FORK,
	}, 0)
	if err == nil {
		return true
	}
	unix.Setpriority(unix.PRIO_PROCESS, tid, -20)
	return false
}
