package proc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// stoppedThread returns the thread tid if the process is stopped.
func (p *Process) stoppedThread(tid int) (*thread, error) {
	if p.running {
		return nil, fmt.Errorf("pid %d: %w", p.pid, ErrRunning)
	}
	t := p.threads[tid]
	if t == nil || !t.stopped {
		return nil, fmt.Errorf("thread %d of pid %d: %w", tid, p.pid, ErrNoProcess)
	}
	return t, nil
}

// syscallThread picks the thread that runs injected syscalls: the main
// thread if it is still there, otherwise the lowest tid.
func (p *Process) syscallThread() (*thread, error) {
	if p.running {
		return nil, fmt.Errorf("pid %d: %w", p.pid, ErrRunning)
	}
	if t := p.threads[p.pid]; t != nil && t.stopped {
		return t, nil
	}
	var best *thread
	for _, t := range p.threads {
		if t.stopped && (best == nil || t.tid < best.tid) {
			best = t
		}
	}
	if best == nil {
		return nil, fmt.Errorf("pid %d: no stopped thread: %w", p.pid, ErrNoProcess)
	}
	return best, nil
}

// Regs returns the registers of a stopped thread.
func (p *Process) Regs(tid int) (*unix.PtraceRegs, error) {
	var regs unix.PtraceRegs
	err := p.do(func() error {
		if _, err := p.stoppedThread(tid); err != nil {
			return err
		}
		if err := unix.PtraceGetRegs(tid, &regs); err != nil {
			return fmt.Errorf("get registers of thread %d: %w", tid, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &regs, nil
}

// SetRegs sets the registers of a stopped thread.
func (p *Process) SetRegs(tid int, regs *unix.PtraceRegs) error {
	if regs == nil {
		return errors.New("set registers: nil registers")
	}
	r := *regs
	return p.do(func() error {
		if _, err := p.stoppedThread(tid); err != nil {
			return err
		}
		if err := unix.PtraceSetRegs(tid, &r); err != nil {
			return fmt.Errorf("set registers of thread %d: %w", tid, err)
		}
		return nil
	})
}

func checkRange(addr uint64, n int) error {
	if addr > 1<<63-1 || uint64(n) > 1<<63-1-addr {
		return fmt.Errorf("address range %#x+%d out of range", addr, n)
	}
	return nil
}

// ReadMem reads len(b) bytes at addr through /proc/PID/mem, falling back to
// PTRACE_PEEKDATA if that fails.
func (p *Process) ReadMem(addr uint64, b []byte) error {
	return p.memIO("read", addr, b, p.mem.ReadAt, unix.PtracePeekData, io.ErrUnexpectedEOF)
}

// WriteMem writes b at addr through /proc/PID/mem, which also works on
// read-only (e.g. text) mappings while attached; it falls back to
// PTRACE_POKEDATA if that fails (e.g. proc_mem.force_override=never).
func (p *Process) WriteMem(addr uint64, b []byte) error {
	markf("write %#x %d", addr, len(b))
	return p.memIO("write", addr, b, p.mem.WriteAt, unix.PtracePokeData, io.ErrShortWrite)
}

// memIO moves b to or from the target's memory: through /proc/PID/mem,
// else word by word with ptrace from the tracer thread.
func (p *Process) memIO(what string, addr uint64, b []byte,
	file func([]byte, int64) (int, error), word func(int, uintptr, []byte) (int, error), short error) error {
	if len(b) == 0 {
		return nil
	}
	if err := checkRange(addr, len(b)); err != nil {
		return fmt.Errorf("%s memory: %w", what, err)
	}
	_, err := file(b, int64(addr))
	if err == nil {
		return nil
	}
	if p.isDetached() {
		return fmt.Errorf("%s memory of pid %d: %w", what, p.pid, ErrDetached)
	}
	perr := p.do(func() error {
		t, err := p.syscallThread()
		if err != nil {
			return err
		}
		n, err := word(t.tid, uintptr(addr), b)
		if err == nil && n != len(b) {
			err = short
		}
		return err
	})
	if perr == nil {
		return nil
	}
	return fmt.Errorf("%s %d bytes at %#x in pid %d: %w (ptrace fallback: %v)", what, len(b), addr, p.pid, err, perr)
}

func (p *Process) isDetached() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.detached
}

// maps returns /proc/PID/maps, cached while the process stays stopped and
// we do not change its address space.
func (p *Process) maps() ([]Mapping, error) {
	if p.mapsCache == nil || p.running {
		var m []Mapping
		var err error
		if p.task == 0 {
			m, err = ReadMaps(p.pid)
		} else {
			// The main thread has exited: its maps are empty.
			var data []byte
			if data, err = os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/maps", p.pid, p.task)); err != nil {
				return nil, procErr(p.pid, "read maps", err)
			}
			m, err = ParseMaps(bytes.NewReader(data))
		}
		if err != nil {
			return nil, err
		}
		p.mapsCache = m
	}
	return p.mapsCache, nil
}

// Maps returns the current mappings of the process (cached while stopped).
func (p *Process) Maps() ([]Mapping, error) {
	var out []Mapping
	err := p.do(func() error {
		m, err := p.maps()
		out = append([]Mapping(nil), m...)
		return err
	})
	return out, err
}

// StackWords returns up to max 8-byte words from the stack of a stopped
// thread, starting at its rsp and bounded by the end of the mapping that
// holds rsp, for conservative return-address scanning.
func (p *Process) StackWords(tid int, max int) ([]uint64, error) {
	if max <= 0 {
		return nil, nil
	}
	var words []uint64
	err := p.do(func() error {
		if _, err := p.stoppedThread(tid); err != nil {
			return err
		}
		var regs unix.PtraceRegs
		if err := unix.PtraceGetRegs(tid, &regs); err != nil {
			return fmt.Errorf("get registers of thread %d: %w", tid, err)
		}
		var err error
		words, err = p.stackWords(tid, regs.Rsp, max)
		return err
	})
	return words, err
}

// ThreadStack is what a conservative stack scan needs of one stopped
// thread.
type ThreadStack struct {
	Tid           int
	Rip, Rsp, Rbp uint64
	// Words are up to max words of the stack from rsp on, as StackWords.
	Words []uint64
}

// WordsAt reads up to max words of a stopped process's memory from addr
// to the end of the mapping that holds addr (another stack than the
// thread's current one: the interrupted stack under a signal handler
// running on a sigaltstack). Cheap inside Run: no hand-off.
func (p *Process) WordsAt(addr uint64, max int) ([]uint64, error) {
	var words []uint64
	err := p.do(func() error {
		var err error
		words, err = p.stackWords(0, addr, max)
		return err
	})
	return words, err
}

// Stacks returns, in one request to the tracer thread, the rip and the
// stack words (as StackWords) of every stopped thread, ascending by tid.
// Threads that exited meanwhile are left out. Live patching calls it
// inside the pause, where every hand-off between threads counts.
func (p *Process) Stacks(max int) ([]ThreadStack, error) {
	var out []ThreadStack
	err := p.do(func() error {
		var err error
		out, err = p.stacks(max)
		return err
	})
	return out, err
}

// StopStacks is Stop followed by Stacks in the same request to the tracer
// thread, for a caller that checks the threads at every stop. On a
// failure to stop, the process is detached.
func (p *Process) StopStacks(max int) ([]ThreadStack, error) {
	var out []ThreadStack
	err := p.do(func() error {
		if p.running {
			if err := p.stopRunning(); err != nil {
				p.release()
				return err
			}
		}
		var err error
		out, err = p.stacks(max)
		return err
	})
	return out, err
}

// stacks is Stacks on the worker thread.
func (p *Process) stacks(max int) ([]ThreadStack, error) {
	if p.running {
		return nil, fmt.Errorf("pid %d: %w", p.pid, ErrRunning)
	}
	p.mu.Lock()
	tids := p.tids
	p.mu.Unlock()
	out := make([]ThreadStack, 0, len(tids))
	for _, tid := range tids {
		if t := p.threads[tid]; t == nil || !t.stopped {
			continue
		}
		var regs unix.PtraceRegs
		if err := unix.PtraceGetRegs(tid, &regs); err == unix.ESRCH {
			continue // killed while stopped
		} else if err != nil {
			return nil, fmt.Errorf("get registers of thread %d: %w", tid, err)
		}
		ts := ThreadStack{Tid: tid, Rip: regs.Rip, Rsp: regs.Rsp, Rbp: regs.Rbp}
		if max > 0 {
			w, err := p.stackWords(tid, regs.Rsp, max)
			if err != nil {
				return nil, err
			}
			ts.Words = w
		}
		out = append(out, ts)
	}
	return out, nil
}

// stackWords reads up to max words from sp to the end of its mapping.
// Worker thread only.
func (p *Process) stackWords(tid int, sp uint64, max int) ([]uint64, error) {
	end, err := p.mappingEnd(sp)
	if err != nil {
		return nil, err
	}
	if end == 0 {
		return nil, fmt.Errorf("thread %d: rsp %#x is not in any mapping", tid, sp)
	}
	n := min((end-sp)/8, uint64(max))
	buf := make([]byte, n*8)
	if _, err := p.mem.ReadAt(buf, int64(sp)); err != nil {
		return nil, fmt.Errorf("read stack of thread %d at %#x: %w", tid, sp, err)
	}
	words := make([]uint64, n)
	for i := range words {
		words[i] = binary.LittleEndian.Uint64(buf[i*8:])
	}
	return words, nil
}

// procmapQuery is struct procmap_query of <linux/fs.h> (Linux 6.11+).
type procmapQuery struct {
	Size, QueryFlags, QueryAddr                               uint64
	VMAStart, VMAEnd, VMAFlags, VMAPageSize, VMAOffset, Inode uint64
	DevMajor, DevMinor, VMANameSize, BuildIDSize              uint32
	VMANameAddr, BuildIDAddr                                  uint64
}

// procmapQueryIoctl is PROCMAP_QUERY, _IOWR('f', 17, struct procmap_query).
const procmapQueryIoctl = 0xc0686611

// mappingEnd returns the end of the mapping that holds addr, or 0 if none
// does. Where the kernel answers the PROCMAP_QUERY ioctl (Linux 6.11+) it
// asks for that one mapping instead of reading /proc/PID/maps: inside the
// pause, formatting and parsing every mapping costs far more than the
// stack read itself. Worker thread only.
func (p *Process) mappingEnd(addr uint64) (uint64, error) {
	if p.mapsFile != nil && !p.noQuery {
		q := procmapQuery{QueryAddr: addr}
		q.Size = uint64(unsafe.Sizeof(q))
		_, _, e := unix.Syscall(unix.SYS_IOCTL, p.mapsFile.Fd(), procmapQueryIoctl, uintptr(unsafe.Pointer(&q)))
		switch e {
		case 0:
			return q.VMAEnd, nil
		case unix.ENOENT:
			return 0, nil
		case unix.ENOTTY, unix.EINVAL, unix.EOPNOTSUPP:
			p.noQuery = true // an older kernel
		}
		// Otherwise (e.g. the file's mm is gone after an exec): read
		// the maps this time.
	}
	maps, err := p.maps()
	if err != nil {
		return 0, err
	}
	for _, m := range maps {
		if m.Contains(addr) {
			return m.End, nil
		}
	}
	return 0, nil
}

var syscallInsn = []byte{0x0f, 0x05}

// findSyscallInsn returns the address of a `syscall` instruction (0f 05)
// in the first limit bytes of m, or 0. Any occurrence will do: decoding
// starts at rip, so 0f 05 there is a syscall whatever surrounds it.
func (p *Process) findSyscallInsn(m Mapping, limit uint64) uint64 {
	const chunk = 256 << 10
	buf := make([]byte, min(m.Size(), chunk+1))
	for off := uint64(0); off < m.Size() && off < limit; off += chunk {
		n := min(m.Size()-off, chunk+1)
		b := buf[:n]
		if _, err := p.mem.ReadAt(b, int64(m.Start+off)); err != nil {
			return 0
		}
		if i := bytes.Index(b, syscallInsn); i >= 0 {
			return m.Start + off + uint64(i)
		}
	}
	return 0
}

// syscallSite returns an executable address holding a syscall instruction:
// one found in the vdso or libc, else two bytes temporarily written at the
// thread's rip (cleanup restores them).
func (p *Process) syscallSite(t *thread, regs *unix.PtraceRegs) (site uint64, cleanup func() error, err error) {
	if p.site != 0 {
		return p.site, nil, nil
	}
	maps, err := p.maps()
	if err != nil {
		return 0, nil, err
	}
	if p.site = p.searchSite(maps); p.site != 0 {
		return p.site, nil, nil
	}
	rip := regs.Rip
	var orig [2]byte
	if _, err := p.mem.ReadAt(orig[:], int64(rip)); err != nil {
		return 0, nil, fmt.Errorf("save code at rip %#x of thread %d: %w", rip, t.tid, err)
	}
	if _, err := p.mem.WriteAt(syscallInsn, int64(rip)); err != nil {
		return 0, nil, fmt.Errorf("place syscall at rip %#x of thread %d: %w", rip, t.tid, err)
	}
	return rip, func() error {
		if _, err := p.mem.WriteAt(orig[:], int64(rip)); err != nil {
			return fmt.Errorf("restore code at rip %#x of thread %d: %w", rip, t.tid, err)
		}
		return nil
	}, nil
}

// searchSite returns the address of a syscall instruction in the vdso or
// in libc among maps, or 0. The instruction is read from the process, so
// a listed mapping that is gone is not used.
func (p *Process) searchSite(maps []Mapping) uint64 {
	if p.noSiteSearch {
		return 0
	}
	for _, m := range maps {
		if m.Path == "[vdso]" && m.Executable() {
			if a := p.findSyscallInsn(m, 1<<20); a != 0 {
				return a
			}
		}
	}
	for _, m := range maps {
		if m.Executable() && m.FileBacked() && strings.HasPrefix(filepath.Base(m.FilePath()), "libc") {
			if a := p.findSyscallInsn(m, 16<<20); a != 0 {
				return a
			}
		}
	}
	return 0
}

// Syscall runs one system call inside the target on a stopped thread (the
// main thread if present) and restores that thread exactly. A negative
// return value comes back as the bare unix.Errno; other errors describe a
// failure to control the target (then the process may be detached).
func (p *Process) Syscall(nr uintptr, args ...uint64) (uint64, error) {
	var ret uint64
	err := p.do(func() error {
		t, err := p.syscallThread()
		if err != nil {
			return err
		}
		ret, err = p.syscall(t, nr, args...)
		p.mapsCache = nil // the syscall may have changed the address space
		return err
	})
	return ret, err
}

// SyscallOn is Syscall on a chosen thread.
func (p *Process) SyscallOn(tid int, nr uintptr, args ...uint64) (uint64, error) {
	var ret uint64
	err := p.do(func() error {
		t, err := p.stoppedThread(tid)
		if err != nil {
			return err
		}
		ret, err = p.syscall(t, nr, args...)
		p.mapsCache = nil
		return err
	})
	return ret, err
}

func (p *Process) syscall(t *thread, nr uintptr, args ...uint64) (uint64, error) {
	if len(args) > 6 {
		return 0, fmt.Errorf("syscall %d: %d arguments, at most 6", nr, len(args))
	}
	if p.scratch == 0 && p.preMaps != nil {
		p.scratch, p.preMaps = p.findScratch(p.preMaps), nil
	}
	if p.scratch == 0 && !p.bootstrap && !p.noScratch {
		if err := p.setupScratch(t); err != nil {
			// Go on through an existing syscall instruction (the window
			// a killed tracer could leave is then every injection).
			p.noScratch = true
		}
	}
	var saved unix.PtraceRegs
	if err := unix.PtraceGetRegs(t.tid, &saved); err != nil {
		return 0, fmt.Errorf("syscall %d: save registers of thread %d: %w", nr, t.tid, err)
	}
	var a [6]uint64
	copy(a[:], args)
	regs := saved
	var site uint64
	var cleanup func() error
	if p.scratch != 0 && !p.bootstrap {
		// The stub restores the thread by itself if we die from here on.
		site = p.scratch
		if _, err := p.mem.WriteAt(saveArea(&saved), int64(p.scratch+scratchSave)); err != nil {
			return 0, fmt.Errorf("syscall %d: save registers of thread %d in the scratch page: %w", nr, t.tid, err)
		}
		regs.Rsp = p.scratch + scratchSave
	} else {
		var err error
		if site, cleanup, err = p.syscallSite(t, &saved); err != nil {
			return 0, fmt.Errorf("syscall %d: %w", nr, err)
		}
	}
	regs.Rip = site
	regs.Rax = uint64(nr)
	// orig_rax = -1: if the thread stopped inside a syscall, the kernel
	// must not apply syscall-restart fixups (rip -= 2) to our registers.
	regs.Orig_rax = ^uint64(0)
	regs.Rdi, regs.Rsi, regs.Rdx, regs.R10, regs.R8, regs.R9 = a[0], a[1], a[2], a[3], a[4], a[5]
	group := t.group
	if p.seccomp {
		if err := suspendSeccomp(t.tid, true); err != nil {
			if cleanup != nil {
				cleanup()
			}
			return 0, fmt.Errorf("syscall %d: %w", nr, err)
		}
		defer suspendSeccomp(t.tid, false)
	}
	if err := unix.PtraceSetRegs(t.tid, &regs); err != nil {
		if cleanup != nil {
			cleanup()
		}
		return 0, fmt.Errorf("syscall %d: set registers of thread %d: %w", nr, t.tid, err)
	}
	if testHookInjected != nil {
		testHookInjected("set")
	}
	markf("inject syscall %d in %d", nr, t.tid)
	ret, err := p.stepSyscall(t, site)
	markf("injected syscall %d in %d", nr, t.tid)
	if err == nil {
		// From the syscall-exit stop the kernel goes back to user space
		// without restarting the thread's own interrupted syscall: do
		// it here, as the kernel would.
		back := saved
		restartFixup(&back)
		if err = unix.PtraceSetRegs(t.tid, &back); err != nil {
			err = fmt.Errorf("syscall %d: restore registers of thread %d: %w", nr, t.tid, err)
		}
		t.group = group
		if cleanup != nil {
			if cerr := cleanup(); err == nil {
				err = cerr
			}
		}
		if err == nil {
			if int64(ret) < 0 && int64(ret) > -4096 {
				return ret, unix.Errno(-int64(ret))
			}
			return ret, nil
		}
	} else if p.threads[t.tid] != nil {
		// Get the thread back into a stop and put it back as it was.
		if !t.stopped {
			ptrace(unix.PTRACE_INTERRUPT, t.tid, 0, 0)
			p.waitFor(func() bool { return t.stopped || p.threads[t.tid] == nil }, "interrupted syscall")
		}
		back := saved
		if t.sysStop {
			restartFixup(&back)
		}
		if t.stopped && unix.PtraceSetRegs(t.tid, &back) == nil {
			t.group = group
			if cleanup == nil || cleanup() == nil {
				return 0, fmt.Errorf("syscall %d: %w", nr, err)
			}
		}
	}
	if cleanup != nil {
		cleanup()
	}
	p.release()
	return 0, fmt.Errorf("syscall %d: %w (detached from pid %d)", nr, err, p.pid)
}

// testHookInjected (tests) is called at each point of an injection where
// a killed tracer must leave the target unharmed.
var testHookInjected func(point string)

// stepSyscall runs the thread over the syscall instruction at site with
// PTRACE_SYSCALL (its enter and exit stops queue no signal, unlike a
// single-step's SIGTRAP, which a dying tracer would leave to kill the
// target) and returns rax at the exit stop. Signals whose delivery-stops
// get in the way are held and re-delivered on resume.
func (p *Process) stepSyscall(t *thread, site uint64) (uint64, error) {
	deadline := time.Now().Add(p.opts.Timeout)
	entered := false
	for attempt := 0; attempt < 64 && time.Now().Before(deadline); attempt++ {
		if !t.eventStop && !t.ourTrap && t.sig != 0 {
			t.held = append(t.held, heldSignal{sig: t.sig, info: t.info})
		}
		t.sig, t.ourTrap = 0, false
		if err := ptrace(unix.PTRACE_SYSCALL, t.tid, 0, 0); err != nil {
			if err == unix.ESRCH {
				delete(p.threads, t.tid)
				p.syncThreads()
				return 0, fmt.Errorf("thread %d: %w", t.tid, ErrNoProcess)
			}
			return 0, fmt.Errorf("resume thread %d into the syscall: %w", t.tid, err)
		}
		t.stopped = false
		if err := p.waitFor(func() bool { return t.stopped || p.threads[t.tid] == nil }, "injected syscall"); err != nil {
			return 0, err
		}
		if p.threads[t.tid] == nil {
			p.syncThreads()
			return 0, fmt.Errorf("thread %d exited during syscall: %w", t.tid, ErrNoProcess)
		}
		if !t.sysStop {
			continue // another stop: go on from where it is
		}
		if !entered {
			entered = true
			if testHookInjected != nil {
				testHookInjected("enter")
			}
			continue
		}
		if testHookInjected != nil {
			testHookInjected("exit")
		}
		var regs unix.PtraceRegs
		if err := unix.PtraceGetRegs(t.tid, &regs); err != nil {
			return 0, fmt.Errorf("get registers of thread %d: %w", t.tid, err)
		}
		if regs.Rip != site+uint64(len(syscallInsn)) {
			return 0, fmt.Errorf("thread %d stopped at %#x after the injected syscall, not %#x", t.tid, regs.Rip, site+2)
		}
		t.sysStop = false
		return regs.Rax, nil
	}
	return 0, fmt.Errorf("thread %d did not complete the syscall: %w", t.tid, ErrTimeout)
}

// MmapNear maps size bytes (rounded up to pages) of private anonymous
// memory with protection prot at an address such that every byte of the
// new mapping is within rel32 reach of every byte of [lo, hi). It uses
// MAP_FIXED_NOREPLACE, trying further gaps if one was taken.
func (p *Process) MmapNear(lo, hi, size uint64, prot int) (uint64, error) {
	return p.mmapNear(nil, lo, hi, size, prot)
}

// MmapNearIn is MmapNear choosing among the free gaps of maps, a recent
// snapshot of the mappings (ReadMaps, e.g. while the process was
// running), instead of reading them inside the pause. A stale snapshot is
// safe: MAP_FIXED_NOREPLACE fails on a gap taken since, and the next one
// is tried.
func (p *Process) MmapNearIn(maps []Mapping, lo, hi, size uint64, prot int) (uint64, error) {
	if maps == nil {
		return 0, errors.New("mmap: no mappings given")
	}
	return p.mmapNear(maps, lo, hi, size, prot)
}

func (p *Process) mmapNear(snap []Mapping, lo, hi, size uint64, prot int) (uint64, error) {
	if size == 0 || size > 1<<40 {
		return 0, fmt.Errorf("mmap: bad size %d", size)
	}
	size = alignUp(size)
	var addr uint64
	err := p.do(func() error {
		t, err := p.syscallThread()
		if err != nil {
			return err
		}
		maps := snap
		if maps == nil {
			if maps, err = p.maps(); err != nil {
				return err
			}
		} else if p.site == 0 {
			p.site = p.searchSite(maps)
		}
		if p.scratch == 0 {
			p.scratch = p.findScratch(maps)
		}
		cands := gapCandidates(maps, lo, hi, size, 32)
		const flags = unix.MAP_PRIVATE | unix.MAP_ANONYMOUS | unix.MAP_FIXED_NOREPLACE
		for _, c := range cands {
			r, err := p.syscall(t, unix.SYS_MMAP, c, size, uint64(prot), flags, ^uint64(0), 0)
			p.mapsCache = nil
			if err == unix.EEXIST {
				continue
			}
			if err != nil {
				return fmt.Errorf("mmap %d bytes at %#x in pid %d: %w", size, c, p.pid, err)
			}
			if r != c {
				// A kernel older than 4.17 takes the address as a hint.
				p.syscall(t, unix.SYS_MUNMAP, r, size)
				continue
			}
			addr = r
			return nil
		}
		return fmt.Errorf("mmap %d bytes near %#x-%#x in pid %d: %w", size, lo, hi, p.pid, ErrNoGap)
	})
	return addr, err
}

// Mmap is MmapNear for a single target address.
func (p *Process) Mmap(near uint64, size uint64, prot int) (uint64, error) {
	return p.MmapNear(near, near+1, size, prot)
}

// Munmap unmaps [addr, addr+size) in the target.
func (p *Process) Munmap(addr, size uint64) error {
	if addr%pageSize != 0 || size == 0 {
		return fmt.Errorf("munmap %#x+%d: address must be page aligned and size non-zero", addr, size)
	}
	_, err := p.Syscall(unix.SYS_MUNMAP, addr, size)
	if err != nil {
		return fmt.Errorf("munmap %#x+%d in pid %d: %w", addr, size, p.pid, err)
	}
	return nil
}

// Mprotect changes the protection of [addr, addr+size) in the target.
func (p *Process) Mprotect(addr, size uint64, prot int) error {
	if addr%pageSize != 0 || size == 0 {
		return fmt.Errorf("mprotect %#x+%d: address must be page aligned and size non-zero", addr, size)
	}
	_, err := p.Syscall(unix.SYS_MPROTECT, addr, size, uint64(prot))
	if err != nil {
		return fmt.Errorf("mprotect %#x+%d in pid %d: %w", addr, size, p.pid, err)
	}
	return nil
}
