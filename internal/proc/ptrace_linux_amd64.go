package proc

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// AttachOptions tunes Attach.
type AttachOptions struct {
	// Timeout bounds every wait for the target: threads reaching a stop
	// and an injected syscall completing. Zero means 2s.
	Timeout time.Duration
	// NoBoost keeps the tracer thread at normal priority. By default it
	// runs under SCHED_FIFO at the lowest real-time priority, else (not
	// permitted) at nice -20, to keep stop-the-world pauses short when
	// the target has more runnable threads than there are CPUs (see
	// boostTracer).
	NoBoost bool
	// OneThread makes the attach stop only one thread (see StopOne); the
	// others are seized but keep running.
	OneThread bool
}

const (
	defaultTimeout = 2 * time.Second
	// maxRescans bounds the "list threads, seize new ones" loop against a
	// target that creates threads faster than we can stop them.
	maxRescans  = 100
	siginfoSize = 128
	waitFlags   = unix.WALL | unix.WNOTHREAD | unix.WNOHANG
)

// heldSignal is a signal whose delivery-stop we left without injecting it;
// it is re-delivered on Resume or Detach.
type heldSignal struct {
	sig  unix.Signal
	info [siginfoSize]byte
}

type thread struct {
	tid     int
	stopped bool // in a ptrace-stop (that we can operate on), not yet restarted
	// Meaningful while stopped:
	eventStop bool        // PTRACE_EVENT_STOP; otherwise a signal-delivery-stop
	sig       unix.Signal // the stop's signal
	info      [siginfoSize]byte
	ourTrap   bool // the signal-delivery-stop is our own single-step SIGTRAP
	sysStop   bool // a syscall-enter or -exit stop of PTRACE_SYSCALL (no signal)
	// group is the stop signal if the thread is in group-stop (the process
	// was stopped by SIGSTOP & co. before or while we were attached).
	group unix.Signal
	held  []heldSignal
	// waitMark is the thread's run delay just before the stop's
	// interrupts (marked: it was read), owed how much it grew until the
	// thread stopped: how long it had been waiting for a CPU
	// (restart_linux_amd64.go).
	waitMark, owed uint64
	marked         bool
}

// Process is a process under ptrace control. Create it with Attach. All
// methods are safe for concurrent use; ptrace requests are serialised onto
// one OS thread.
type Process struct {
	pid  int
	opts AttachOptions
	reqs chan func()
	done chan struct{} // closed when the worker has exited
	// worker is the tracer thread's tid while the worker runs, else 0.
	worker atomic.Int32

	mem *os.File // /proc/PID/mem, opened O_RDWR while seized
	// task, if not 0, is the live thread whose /proc/PID/task/TID entries
	// stand for the process (the main thread has exited).
	task int

	mu        sync.Mutex // guards the fields below
	tids      []int
	stopped   bool
	partial   bool // the stop holds one thread only (StopOne)
	detached  bool
	stopStart time.Time
	lastPause time.Duration

	// Owned by the worker goroutine.
	threads   map[int]*thread
	zombies   map[int]bool // threads found dead but still listed
	running   bool
	exit      bool
	sigc      chan struct{} // SIGCHLD arrived: a tracee may have stopped
	site      uint64        // address of a `syscall` instruction in the target
	scratch   uint64        // the scratch mapping (scratch_linux_amd64.go), or 0
	bootstrap bool          // creating it: inject through site
	noScratch bool          // it cannot be created: inject through site
	preMaps   []Mapping     // the maps before the attach, to find the scratch mapping
	seccomp   bool          // the process runs under seccomp: suspend it around injections
	mapsCache []Mapping     // valid while stopped and unchanged by us
	mapsFile  *os.File      // /proc/PID/maps for PROCMAP_QUERY, or nil
	noQuery   bool          // PROCMAP_QUERY is not available
	// noSiteSearch (tests) forces the write-at-rip syscall fallback.
	noSiteSearch bool
	// realtime: the tracer thread runs under SCHED_FIFO (boostTracer), so
	// its waits sleep instead of yielding.
	realtime bool
	// schedFiles are the open schedstat files of threads (runDelay).
	schedFiles map[int]int
}

// SIGCHLD fan-out: one process-wide subscription, so attaching and
// detaching never pay for signal.Notify/signal.Stop.
var sigchld struct {
	once     sync.Once
	mu       sync.Mutex
	watchers map[chan struct{}]bool
}

func watchSIGCHLD(c chan struct{}) {
	sigchld.once.Do(func() {
		sigchld.watchers = map[chan struct{}]bool{}
		in := make(chan os.Signal, 1)
		signal.Notify(in, unix.SIGCHLD)
		go func() {
			for range in {
				sigchld.mu.Lock()
				for w := range sigchld.watchers {
					select {
					case w <- struct{}{}:
					default:
					}
				}
				sigchld.mu.Unlock()
			}
		}()
	})
	sigchld.mu.Lock()
	sigchld.watchers[c] = true
	sigchld.mu.Unlock()
}

func unwatchSIGCHLD(c chan struct{}) {
	sigchld.mu.Lock()
	delete(sigchld.watchers, c)
	sigchld.mu.Unlock()
}

// Attach seizes every thread of pid and stops them all. On any failure
// nothing stays attached or stopped.
func Attach(pid int, opts AttachOptions) (*Process, error) {
	return AttachRun(pid, opts, nil)
}

// AttachRun is Attach followed by f in the same request to the tracer
// thread (see Run), so that the work of the first stop costs no hand-off
// between threads. If the attach fails, f is not called and nothing stays
// attached. If f fails, its error is returned together with the Process,
// left as f left it (stopped, running or detached), for the caller to
// clean up.
func AttachRun(pid int, opts AttachOptions, f func(*Process) error) (*Process, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("attach to pid %d: %w", pid, ErrNoProcess)
	}
	if pid == os.Getpid() {
		return nil, fmt.Errorf("attach to pid %d: cannot attach to ourselves", pid)
	}
	if opts.Timeout <= 0 {
		opts.Timeout = defaultTimeout
	}
	p := &Process{
		pid:     pid,
		opts:    opts,
		reqs:    make(chan func()),
		done:    make(chan struct{}),
		threads: map[int]*thread{},
		zombies: map[int]bool{},
	}
	// Read while the process runs: where an earlier livefix left the
	// scratch mapping (see scratch_linux_amd64.go).
	p.preMaps, _ = ReadMaps(pid)
	p.seccomp = seccompMode(pid) != 0
	go p.loop()
	var ferr error
	err := p.do(func() error {
		if err := p.attach(); err != nil {
			return err
		}
		if f != nil {
			ferr = f(p)
		}
		return nil
	})
	if err != nil {
		p.do(func() error { p.release(); return nil })
		<-p.done
		return nil, err
	}
	return p, ferr
}

// loop is the ptrace worker. It locks itself to its OS thread, the tracer
// of every seized thread, and never unlocks: when it returns, the thread
// exits and the kernel detaches any tracee that is somehow still attached.
func (p *Process) loop() {
	runtime.LockOSThread()
	defer close(p.done)
	// The goroutine owns this thread, so a matching tid identifies it;
	// cleared before the thread exits and its tid can be reused.
	p.worker.Store(int32(unix.Gettid()))
	defer p.worker.Store(0)
	if !p.opts.NoBoost {
		p.realtime = boostTracer()
	}
	// Short sleeps in waitFor should be short: the default 50µs timer
	// slack would add to every wait. Per thread, and this thread dies with
	// the goroutine.
	unix.Prctl(unix.PR_SET_TIMERSLACK, 1, 0, 0, 0)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !p.exit {
		if p.running {
			// While the target runs attached, service its stops
			// promptly (signal-delivery-stops, group-stops).
			select {
			case f := <-p.reqs:
				f()
			case <-p.sigc:
				p.collect()
			case <-tick.C:
				p.collect()
			}
			continue
		}
		f := <-p.reqs
		f()
	}
}

// do runs f on the worker thread and returns its error; called on the
// worker thread (inside Run), it calls f directly.
func (p *Process) do(f func() error) error {
	if w := p.worker.Load(); w != 0 && w == int32(unix.Gettid()) {
		if p.exit {
			return fmt.Errorf("pid %d: %w", p.pid, ErrDetached)
		}
		return f()
	}
	errc := make(chan error, 1)
	select {
	case p.reqs <- func() { errc <- f() }:
		return <-errc
	case <-p.done:
		return fmt.Errorf("pid %d: %w", p.pid, ErrDetached)
	}
}

// Run calls f on the tracer thread and returns its error. The methods of
// p that f calls run directly on that thread, so a sequence of steps
// inside one pause (stop, inspect, write, resume or detach) costs no
// hand-off between threads; on a loaded machine each hand-off waits for
// the scheduler and can cost more than the work. While f runs, stops of
// the running target are not serviced: f must not wait on other
// goroutines that use p, nor keep the process running for long.
func (p *Process) Run(f func() error) error {
	return p.do(f)
}

// Pid returns the process id.
func (p *Process) Pid() int { return p.pid }

// Threads returns the ids of the threads under control, ascending.
func (p *Process) Threads() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]int(nil), p.tids...)
}

// Stopped reports whether all threads are currently stopped (not so in a
// stop of one thread, StopOne).
func (p *Process) Stopped() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stopped && !p.detached && !p.partial
}

// StoppedFor returns, while stopped, the time since the stop began (the
// first interrupt); once resumed or detached, and during a stop of one
// thread alone (StopOne, DetachAllBut), the length of the last stop that
// ended (first interrupt to last thread restarted).
func (p *Process) StoppedFor() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped && !p.detached && !p.partial {
		return time.Since(p.stopStart)
	}
	return p.lastPause
}

func (p *Process) syncThreads() {
	tids := make([]int, 0, len(p.threads))
	for tid := range p.threads {
		tids = append(tids, tid)
	}
	sort.Ints(tids)
	p.mu.Lock()
	p.tids = tids
	p.mu.Unlock()
}

func (p *Process) beginStop() {
	p.mu.Lock()
	p.stopStart = time.Now()
	p.mu.Unlock()
}

func (p *Process) endStop(detached bool) {
	p.mu.Lock()
	if p.stopped {
		p.lastPause = time.Since(p.stopStart)
	}
	p.stopped = false
	p.partial = false
	p.detached = p.detached || detached
	p.mu.Unlock()
}

// ---- raw ptrace ----

func ptrace(req int, tid int, addr, data uintptr) error {
	if trace.on.Load() {
		if n, ok := ptraceName[req]; ok {
			markf("%s %d", n, tid)
		}
	}
	_, _, e := unix.Syscall6(unix.SYS_PTRACE, uintptr(req), uintptr(tid), addr, data, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

func getSiginfo(tid int, info *[siginfoSize]byte) error {
	err := ptrace(unix.PTRACE_GETSIGINFO, tid, 0, uintptr(unsafe.Pointer(info)))
	runtime.KeepAlive(info)
	return err
}

func setSiginfo(tid int, info *[siginfoSize]byte) error {
	err := ptrace(unix.PTRACE_SETSIGINFO, tid, 0, uintptr(unsafe.Pointer(info)))
	runtime.KeepAlive(info)
	return err
}

func isStopSignal(s unix.Signal) bool {
	return s == unix.SIGSTOP || s == unix.SIGTSTP || s == unix.SIGTTIN || s == unix.SIGTTOU
}

// ---- attaching and stopping ----

func (p *Process) attach() error {
	p.sigc = make(chan struct{}, 1)
	watchSIGCHLD(p.sigc)
	// Open the memory and the maps before the pause begins (root may;
	// otherwise they are opened once seized, below).
	if f, err := os.OpenFile(fmt.Sprintf("/proc/%d/mem", p.pid), os.O_RDWR, 0); err == nil {
		p.mem = f
	}
	if f, err := os.Open(fmt.Sprintf("/proc/%d/maps", p.pid)); err == nil {
		p.mapsFile = f
	}
	tids, err := tasks(p.pid)
	if err != nil {
		return fmt.Errorf("attach: %w", err)
	}
	if p.opts.OneThread {
		// Seize them all, stop one (Resume ends it, Stop stops all).
		// Threads created meanwhile are seized by the next Stop.
		for _, tid := range tids {
			if _, err := p.seize(tid, false); err != nil {
				return err
			}
		}
		p.syncThreads()
		if p.mem != nil && p.threads[p.pid] != nil {
			return p.stopOne()
		}
		// Rare (the memory could not be opened before seizing, or the
		// main thread has exited): the general path, all threads stopped.
		p.running = true
		if err := p.stopRunning(); err != nil {
			return err
		}
	} else {
		// Seize them all running, then stop them as any later stop does
		// (their waits marked first, for the restart order).
		for _, tid := range tids {
			if _, err := p.seize(tid, false); err != nil {
				return err
			}
		}
		p.running = true
		if err := p.stopRunning(); err != nil {
			return err
		}
	}
	if p.mem == nil || p.threads[p.pid] == nil {
		// Open the memory through a live seized thread: if the main
		// thread has exited (pthread_exit), /proc/PID/mem has no mm
		// behind it.
		t, err := p.syscallThread()
		if err != nil {
			return fmt.Errorf("attach: %w", err)
		}
		mem, err := os.OpenFile(fmt.Sprintf("/proc/%d/task/%d/mem", p.pid, t.tid), os.O_RDWR, 0)
		if err != nil {
			return fmt.Errorf("attach: %w", procErr(p.pid, "open memory", err))
		}
		if p.mem != nil {
			p.mem.Close()
		}
		p.mem = mem
		if t.tid != p.pid {
			p.task = t.tid
			if p.mapsFile != nil {
				p.mapsFile.Close()
			}
			p.mapsFile, _ = os.Open(fmt.Sprintf("/proc/%d/task/%d/maps", p.pid, t.tid))
		}
	}
	p.mu.Lock()
	p.stopped = true
	p.mu.Unlock()
	return nil
}

// seize attaches to one thread and, if stop, asks it to stop. A thread
// that exits first is skipped; added reports whether the thread is now
// ours.
func (p *Process) seize(tid int, stop bool) (added bool, err error) {
	if p.zombies[tid] {
		return false, nil
	}
	err = ptrace(unix.PTRACE_SEIZE, tid, 0, unix.PTRACE_O_TRACESYSGOOD)
	switch {
	case err == nil:
	case err == unix.ESRCH:
		return false, nil // exited since we listed it
	case err == unix.EPERM:
		if threadGone(p.pid, tid) {
			// A zombie (e.g. a main thread that called pthread_exit):
			// it cannot and need not be stopped.
			p.zombies[tid] = true
			return false, nil
		}
		return false, p.permissionError(tid)
	default:
		return false, fmt.Errorf("attach to thread %d of pid %d: %w", tid, p.pid, err)
	}
	p.threads[tid] = &thread{tid: tid}
	if !stop {
		return true, nil
	}
	if err := ptrace(unix.PTRACE_INTERRUPT, tid, 0, 0); err != nil {
		delete(p.threads, tid) // died between the two calls
		return false, nil
	}
	return true, nil
}

// threadGone reports whether the thread no longer exists or is a zombie.
func threadGone(pid, tid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/stat", pid, tid))
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return true
	}
	return s[i+2] == 'Z' || s[i+2] == 'X'
}

func (p *Process) permissionError(tid int) error {
	hint := "run as root or with CAP_SYS_PTRACE, and check /proc/sys/kernel/yama/ptrace_scope"
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.pid)); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "TracerPid:"); ok {
				if v = strings.TrimSpace(v); v != "0" {
					hint = fmt.Sprintf("it is already traced by pid %s (a debugger?); detach that first", v)
				}
			}
		}
	}
	return fmt.Errorf("attach to thread %d of pid %d: %w: %s", tid, p.pid, ErrPermission, hint)
}

// settle waits for every known thread to stop, then lists the threads
// again and seizes any it has not seen, until the set is stable.
func (p *Process) settle() error {
	for round := 0; ; round++ {
		if round == maxRescans {
			return fmt.Errorf("stop pid %d: threads keep appearing after %d rescans", p.pid, round)
		}
		if err := p.waitAllStopped(); err != nil {
			return err
		}
		tids, err := tasks(p.pid)
		if err != nil {
			return fmt.Errorf("stop: %w", err)
		}
		fresh := 0
		for _, tid := range tids {
			if p.threads[tid] != nil {
				continue
			}
			added, err := p.seize(tid, true)
			if err != nil {
				return err
			}
			if added {
				fresh++
			}
		}
		if fresh == 0 {
			if len(p.threads) == 0 {
				return fmt.Errorf("stop pid %d: %w", p.pid, ErrNoProcess)
			}
			p.syncThreads()
			return nil
		}
	}
}

func (p *Process) waitAllStopped() error {
	return p.waitFor(func() bool {
		for _, t := range p.threads {
			if !t.stopped {
				return false
			}
		}
		return true
	}, "threads to stop")
}

// waitFor collects ptrace events until cond holds, all threads are gone,
// or the timeout expires.
func (p *Process) waitFor(cond func() bool, what string) error {
	start := time.Now()
	deadline := start.Add(p.opts.Timeout)
	sleep := time.Duration(0)
	for {
		if err := p.collect(); err != nil {
			return err
		}
		if cond() {
			return nil
		}
		if len(p.threads) == 0 {
			return fmt.Errorf("pid %d: waiting for %s: %w", p.pid, what, ErrNoProcess)
		}
		now := time.Now()
		if now.After(deadline) {
			var late []string
			for tid, t := range p.threads {
				if !t.stopped {
					late = append(late, fmt.Sprint(tid))
				}
			}
			return fmt.Errorf("pid %d: waiting for %s (threads %s): %w after %v",
				p.pid, what, strings.Join(late, ","), ErrTimeout, p.opts.Timeout)
		}
		// Stops normally arrive within microseconds: yield (letting
		// target threads on this CPU run) for a while, then back off
		// up to 1ms so a slow target does not cost a busy core. A
		// real-time tracer's yield lets no target thread run, so it
		// sleeps from the start. While it holds several threads (a stop
		// of every thread), at most 100µs at a time: each wake preempts
		// a target thread only for the check. While it holds one thread
		// or none (StopOne, a syscall injected in a one-thread stop),
		// the others run and the awaited thread may wait milliseconds
		// for a CPU on a busy machine: up to 1ms, as each wake costs a
		// context switch and CPU taken from the target (polling every
		// 100µs there cost 3.6 ms of CPU per command with 8 busy
		// target threads on 2 CPUs).
		longest := time.Millisecond
		if p.realtime {
			if p.holding() > 1 {
				longest = 100 * time.Microsecond
			}
		} else if now.Sub(start) < 200*time.Microsecond {
			unix.RawSyscall(unix.SYS_SCHED_YIELD, 0, 0, 0)
			continue
		}
		sleep = min(max(2*sleep, 10*time.Microsecond), longest)
		ts := unix.NsecToTimespec(sleep.Nanoseconds())
		unix.Nanosleep(&ts, nil)
	}
}

// holding returns how many threads are stopped.
func (p *Process) holding() int {
	n := 0
	for _, t := range p.threads {
		if t.stopped {
			n++
		}
	}
	return n
}

// collect handles every ptrace event already reported by our tracees.
// It waits only for the worker thread's own tracees (__WNOTHREAD), so it
// never reaps children that belong to the rest of the program.
func (p *Process) collect() error {
	for {
		var ws unix.WaitStatus
		tid, err := unix.Wait4(-1, &ws, waitFlags, nil)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.ECHILD:
			return nil
		case err != nil:
			return fmt.Errorf("wait for pid %d: %w", p.pid, err)
		case tid <= 0:
			return nil
		}
		p.event(tid, ws)
	}
}

// event updates the thread state for one wait status. While the target is
// running attached, stops are serviced at once so the target never hangs
// on us: signals are delivered, group-stops kept with PTRACE_LISTEN.
func (p *Process) event(tid int, ws unix.WaitStatus) {
	t := p.threads[tid]
	if t == nil {
		return // a thread we already dropped; its exit is now reaped
	}
	if ws.Exited() || ws.Signaled() {
		delete(p.threads, tid)
		p.syncThreads()
		return
	}
	if !ws.Stopped() {
		return
	}
	sig := ws.StopSignal()
	ev := (uint32(ws) >> 16) & 0xff
	if p.running {
		var err error
		switch {
		case ev == unix.PTRACE_EVENT_STOP && isStopSignal(sig):
			err = ptrace(unix.PTRACE_LISTEN, tid, 0, 0)
		case ev == 0:
			err = ptrace(unix.PTRACE_CONT, tid, 0, uintptr(sig))
		default:
			err = ptrace(unix.PTRACE_CONT, tid, 0, 0)
		}
		if err == unix.ESRCH {
			delete(p.threads, tid)
			p.syncThreads()
		}
		return
	}
	markf("stopped %d", tid)
	t.stopped = true
	t.sig = sig
	t.ourTrap = false
	t.group = 0
	t.sysStop = false
	if sig == unix.SIGTRAP|0x80 {
		// A syscall stop of an injected syscall: no signal to deliver.
		t.sysStop, t.eventStop, t.sig = true, false, 0
		return
	}
	if ev == unix.PTRACE_EVENT_STOP {
		t.eventStop = true
		if isStopSignal(sig) {
			t.group = sig // group-stop, reported as an event stop under SEIZE
		}
		return
	}
	t.eventStop = ev != 0 // other ptrace events are not enabled; treat as event stops
	if ev == 0 {
		t.info = [siginfoSize]byte{}
		if err := getSiginfo(tid, &t.info); err != nil {
			t.info = [siginfoSize]byte{}
		}
	}
}

// restart leaves the current stop of t, re-delivering the signals the
// target is owed, by PTRACE_CONT (or PTRACE_LISTEN for a group-stopped
// thread) or PTRACE_DETACH.
func (p *Process) restart(t *thread, detach bool) error {
	req := unix.PTRACE_CONT
	if detach {
		req = unix.PTRACE_DETACH
	}
	var owed []heldSignal
	if !t.eventStop && !t.ourTrap && t.sig != 0 {
		owed = append(owed, heldSignal{sig: t.sig, info: t.info})
	}
	owed = append(owed, t.held...)
	t.held = nil
	var sig unix.Signal
	if len(owed) > 0 {
		if !t.eventStop {
			// A signal-delivery-stop: inject the first owed signal with
			// its original siginfo.
			if owed[0].sig != t.sig || t.ourTrap {
				info := owed[0].info
				if err := setSiginfo(t.tid, &info); err != nil && err != unix.ESRCH {
					return fmt.Errorf("restore signal %v of thread %d: %w", owed[0].sig, t.tid, err)
				}
			}
			sig = owed[0].sig
			owed = owed[1:]
		}
		// Signals cannot be injected from other stops; queue the rest
		// again (their siginfo becomes ours).
		for _, h := range owed {
			if err := unix.Tgkill(p.pid, t.tid, h.sig); err != nil && err != unix.ESRCH {
				return fmt.Errorf("re-queue signal %v to thread %d: %w", h.sig, t.tid, err)
			}
		}
	} else if t.group != 0 && !detach {
		// The process was stopped by a stop signal: keep it stopped.
		if t.eventStop {
			req = unix.PTRACE_LISTEN
		} else {
			sig = t.group // after our syscall: re-enter the group-stop
		}
	}
	if err := ptrace(req, t.tid, 0, uintptr(sig)); err != nil {
		if err == unix.ESRCH {
			delete(p.threads, t.tid)
			return nil
		}
		return fmt.Errorf("restart thread %d of pid %d: %w", t.tid, p.pid, err)
	}
	t.stopped = false
	t.ourTrap = false
	return nil
}

// Resume lets all threads run while staying attached. Signals that arrived
// while stopped are delivered; a process stopped by SIGSTOP stays stopped.
func (p *Process) Resume() error {
	return p.do(func() error {
		if p.running {
			return nil
		}
		var errs []error
		for _, t := range p.restartOrder() {
			if t.stopped {
				if err := p.restart(t, false); err != nil {
					errs = append(errs, err)
				}
			}
		}
		p.syncThreads()
		p.running = true
		p.mapsCache = nil
		p.endStop(false)
		if len(errs) > 0 {
			// Something is wrong with the target; leave nothing behind.
			p.release()
			return fmt.Errorf("resume: %w", errors.Join(errs...))
		}
		return nil
	})
}

// Stop interrupts all threads again, including threads created while the
// process was running. On failure the process is detached.
func (p *Process) Stop() error {
	return p.do(func() error {
		if !p.running {
			return nil
		}
		if err := p.stopRunning(); err != nil {
			p.release()
			return err
		}
		return nil
	})
}

func (p *Process) stopRunning() error {
	p.collect() // service stops that are already reported
	p.running = false
	p.markWaits()
	p.beginStop()
	for tid, t := range p.threads {
		if !t.stopped {
			if err := ptrace(unix.PTRACE_INTERRUPT, tid, 0, 0); err != nil {
				delete(p.threads, tid)
			}
		}
	}
	if err := p.settle(); err != nil {
		return err
	}
	p.measureWaits()
	p.mu.Lock()
	p.stopped = true
	p.mu.Unlock()
	return nil
}

// StopOne stops a single thread of the running process: one that sleeps
// in the kernel if there is one (the main thread preferred), else the
// main thread. The others keep running. That is enough for injected
// syscalls (Syscall, MmapNearIn, Munmap ...) that no other thread needs
// to be held for: mapping memory nothing refers to yet, unmapping memory
// nothing refers to any more. Resume ends the stop; Stop (or StopStacks)
// stops every thread. On failure the process is detached.
func (p *Process) StopOne() error {
	return p.do(func() error {
		if !p.running {
			return nil
		}
		if err := p.stopOne(); err != nil {
			p.release()
			return err
		}
		return nil
	})
}

func (p *Process) stopOne() error {
	p.collect()
	t := p.threads[quietThread(p.pid, p.Threads())]
	if t == nil {
		return p.stopRunning()
	}
	p.running = false
	p.beginStop()
	if !t.stopped {
		if err := ptrace(unix.PTRACE_INTERRUPT, t.tid, 0, 0); err != nil {
			delete(p.threads, t.tid)
			p.syncThreads()
			return fmt.Errorf("stop thread %d of pid %d: %w", t.tid, p.pid, ErrNoProcess)
		}
	}
	if err := p.waitFor(func() bool { return t.stopped || p.threads[t.tid] == nil }, "a thread to stop"); err != nil {
		return err
	}
	if p.threads[t.tid] == nil {
		p.syncThreads()
		return fmt.Errorf("stop thread %d of pid %d: %w", t.tid, p.pid, ErrNoProcess)
	}
	p.mu.Lock()
	p.stopped, p.partial = true, true
	p.mu.Unlock()
	return nil
}

// quietThread picks among tids the thread to stop alone: the main thread
// (pid) if it sleeps, else the lowest sleeping one, else the main thread,
// else the lowest. Stopping a sleeping thread costs the others nothing
// and that thread only the delay of its wake-up.
func quietThread(pid int, tids []int) int {
	if len(tids) == 0 {
		return 0
	}
	best, main := 0, false
	for _, tid := range tids {
		if tid == pid {
			main = true
		}
		if sleeping(pid, tid) && (best == 0 || tid == pid || best != pid && tid < best) {
			best = tid
		}
	}
	switch {
	case best != 0:
		return best
	case main:
		return pid
	}
	return tids[0]
}

// sleeping reports whether the thread sleeps in the kernel (state S or D
// in /proc/PID/task/TID/stat).
func sleeping(pid, tid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/stat", pid, tid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && (s[i+2] == 'S' || s[i+2] == 'D')
}

// DetachAllBut ends the stop of every thread but tid (the main thread if
// tid is not a stopped thread), detaching them, and keeps tid stopped
// alone: a one-thread stop as StopOne makes, for injected syscalls that
// need no other thread held (unmapping code nothing refers to any more),
// which Detach ends. StoppedFor then reports the stop that ended for the
// others. Signals owed to the detached threads are delivered.
func (p *Process) DetachAllBut(tid int) error {
	return p.do(func() error {
		if p.running {
			return fmt.Errorf("pid %d: %w", p.pid, ErrRunning)
		}
		keep := p.threads[tid]
		if keep == nil || !keep.stopped {
			var err error
			if keep, err = p.syscallThread(); err != nil {
				return err
			}
		}
		var errs []error
		for _, t := range p.restartOrder() {
			if t == keep || !t.stopped {
				continue
			}
			if err := p.restart(t, true); err != nil {
				errs = append(errs, err)
			}
			delete(p.threads, t.tid)
		}
		p.syncThreads()
		p.endStop(false)
		p.mu.Lock()
		p.stopStart = time.Now()
		p.stopped, p.partial = true, true
		p.mu.Unlock()
		if len(errs) > 0 {
			p.release()
			return fmt.Errorf("detach: %w", errors.Join(errs...))
		}
		return nil
	})
}

// Detach detaches from all threads and leaves the process running (or
// stopped, if it was stopped by a stop signal). Owed signals are delivered.
func (p *Process) Detach() error {
	return p.do(func() error {
		var err error
		if p.running {
			if err = p.stopRunning(); err != nil {
				err = fmt.Errorf("detach: %w", err)
			}
		}
		if err2 := p.release(); err == nil {
			err = err2
		}
		return err
	})
}

// release detaches every thread it can and makes the worker exit; threads
// that could not be detached are detached by the kernel when the worker's
// OS thread exits.
func (p *Process) release() error {
	var errs []error
	p.collect()
	for _, t := range p.threads {
		if !t.stopped {
			// PTRACE_DETACH needs a stopped tracee; give it a short chance.
			ptrace(unix.PTRACE_INTERRUPT, t.tid, 0, 0)
		}
	}
	// Each thread is detached as soon as it is stopped: a thread that
	// was running is held for its own interrupt only, not until every
	// other thread has stopped too.
	deadline := time.Now().Add(p.opts.Timeout / 4)
	order := p.restartOrder() // no thread is added below
	for {
		for _, t := range order {
			if !t.stopped || p.threads[t.tid] != t {
				continue
			}
			if err := p.restart(t, true); err != nil {
				errs = append(errs, err)
			}
			delete(p.threads, t.tid)
		}
		if len(p.threads) == 0 || time.Now().After(deadline) {
			break
		}
		ts := unix.NsecToTimespec((20 * time.Microsecond).Nanoseconds())
		unix.Nanosleep(&ts, nil)
		p.collect()
	}
	p.endStop(true) // the pause ends with the last thread restarted
	p.threads = map[int]*thread{}
	p.syncThreads()
	p.running = false
	p.exit = true
	if p.sigc != nil {
		unwatchSIGCHLD(p.sigc)
	}
	if p.mem != nil {
		p.mem.Close()
	}
	if p.mapsFile != nil {
		p.mapsFile.Close()
	}
	p.closeSchedFiles()
	return errors.Join(errs...)
}
