package proc

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// A tracer killed while a thread runs an injected syscall must not kill
// the target. Two things could: a pending single-step SIGTRAP (delivered
// when the tracer is gone) and the thread resuming with the injected
// registers. So injected syscalls are traced with PTRACE_SYSCALL (its
// stops queue no signal) and run from a scratch mapping that livefix
// creates once per process and keeps: its code page holds
//
//	syscall
//	pop r15 ... pop r8, pop rdi, rsi, rbp, rbx, rdx, rcx, rax
//	popfq
//	pop rsp
//	jmp *saved_rip(%rip)
//
// and before each injection the thread's own registers are written to a
// save area on the mapping's stack pages, where the injected rsp points.
// While livefix lives it restores the registers itself after the
// syscall-exit stop; if it dies at any instant after the registers were
// set, the kernel lets the thread go, the thread finishes the syscall and
// the stub puts every register back and jumps to where the thread was (an
// interrupted syscall of the thread is restarted the way the kernel
// would). The stack pages (64 KiB) also take a signal frame should a
// handler run in between.
//
// The scratch mapping itself is made by two injections through an
// existing syscall instruction (mmap, mprotect); those two, once in a
// process's life, are the only injected syscalls a killed livefix could
// leave half done.

const (
	scratchCode  = pageSize
	scratchStack = 16 * pageSize
	scratchSize  = scratchCode + scratchStack
	// The save area sits at the top of the stack pages.
	scratchSave  = scratchSize - 0x100
	scratchMagic = "livefix scratch\x00"
	magicOff     = pageSize - len(scratchMagic)
)

// scratchStub returns the code page's stub; saveAt is the save area's
// address relative to the page start.
func scratchStub() []byte {
	b := []byte{0x0f, 0x05} // syscall
	for r := byte(7); ; r-- {
		b = append(b, 0x41, 0x58+r) // pop r15..r8
		if r == 0 {
			break
		}
	}
	b = append(b, 0x5f, 0x5e, 0x5d, 0x5b, 0x5a, 0x59, 0x58) // pop rdi rsi rbp rbx rdx rcx rax
	b = append(b, 0x9d, 0x5c)                               // popfq; pop rsp
	end := len(b) + 6
	slot := scratchSave + 17*8
	b = append(b, 0xff, 0x25) // jmp *disp32(%rip)
	return binary.LittleEndian.AppendUint32(b, uint32(slot-end))
}

// saveArea is what the stub pops: the registers of the thread as they
// must be when it goes on without us.
func saveArea(r *unix.PtraceRegs) []byte {
	c := *r
	restartFixup(&c)
	rip, rax := c.Rip, c.Rax
	var b []byte
	for _, v := range []uint64{r.R15, r.R14, r.R13, r.R12, r.R11, r.R10, r.R9, r.R8,
		r.Rdi, r.Rsi, r.Rbp, r.Rbx, r.Rdx, r.Rcx, rax, r.Eflags, r.Rsp, rip} {
		b = binary.LittleEndian.AppendUint64(b, v)
	}
	return b
}

// findScratch looks for a scratch mapping an earlier livefix left in maps
// (read while the process ran) and checks its magic and stub in memory.
// The kernel may have merged its pages with adjacent anonymous mappings
// of the same protection, so the code page is taken as the last page of
// an anonymous r-x mapping followed at once by an anonymous rw- one of at
// least the stack's size.
func (p *Process) findScratch(maps []Mapping) uint64 {
	want := scratchStub()
	for i, m := range maps {
		if m.Perm != "r-xp" || m.Inode != 0 || m.Path != "" || m.Size() < scratchCode || i+1 >= len(maps) {
			continue
		}
		n := maps[i+1]
		if n.Start != m.End || n.Size() < scratchStack || n.Perm != "rw-p" || n.Inode != 0 || n.Path != "" {
			continue
		}
		page := m.End - scratchCode
		var got [len(scratchMagic)]byte
		if _, err := p.mem.ReadAt(got[:], int64(page)+int64(magicOff)); err != nil || string(got[:]) != scratchMagic {
			continue
		}
		stub := make([]byte, len(want))
		if _, err := p.mem.ReadAt(stub, int64(page)); err == nil && bytes.Equal(stub, want) {
			return page
		}
	}
	return 0
}

// setupScratch creates the scratch mapping (worker thread, stopped t).
func (p *Process) setupScratch(t *thread) error {
	p.bootstrap = true
	defer func() { p.bootstrap = false }()
	a, err := p.syscall(t, unix.SYS_MMAP, 0, scratchSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uint64(0), 0)
	p.mapsCache = nil
	if err != nil {
		return fmt.Errorf("map the scratch page: %w", err)
	}
	page := make([]byte, pageSize)
	copy(page, scratchStub())
	copy(page[magicOff:], scratchMagic)
	if _, err := p.mem.WriteAt(page, int64(a)); err != nil {
		p.syscall(t, unix.SYS_MUNMAP, a, scratchSize)
		return fmt.Errorf("write the scratch page: %w", err)
	}
	if _, err := p.syscall(t, unix.SYS_MPROTECT, a, scratchCode, unix.PROT_READ|unix.PROT_EXEC); err != nil {
		p.syscall(t, unix.SYS_MUNMAP, a, scratchSize)
		return fmt.Errorf("protect the scratch page: %w", err)
	}
	p.scratch = a
	return nil
}

// Scratch returns the address of the process's scratch mapping (0 if
// none yet), for tests and reports.
func (p *Process) Scratch() uint64 {
	var a uint64
	p.do(func() error { a = p.scratch; return nil })
	return a
}

// restartFixup does to the registers of a thread stopped inside a syscall
// what the kernel does on its way back to user space when no signal
// handler runs: an interrupted syscall that asked to be restarted is
// executed again. An injected syscall leaves the thread in a syscall
// stop, from which the kernel returns to user space without that step.
func restartFixup(r *unix.PtraceRegs) {
	if int64(r.Orig_rax) < 0 {
		return
	}
	switch int64(r.Rax) {
	case -512, -513, -514: // ERESTARTSYS, ERESTARTNOINTR, ERESTARTNOHAND
		r.Rip, r.Rax = r.Rip-2, r.Orig_rax
	case -516: // ERESTART_RESTARTBLOCK
		r.Rip, r.Rax = r.Rip-2, unix.SYS_RESTART_SYSCALL
	default:
		return
	}
	r.Orig_rax = ^uint64(0)
}

// seccompMode returns the Seccomp: field of /proc/PID/status (0 none,
// 1 strict, 2 filter).
func seccompMode(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Seccomp:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}

// suspendSeccomp turns the seccomp filter of thread tid off (on) for the
// injected syscall only: PTRACE_O_SUSPEND_SECCOMP, which the kernel
// grants a tracer with CAP_SYS_ADMIN (in the initial user namespace) that
// is not itself under seccomp; the target's own syscalls are filtered
// again as soon as the injected one has run.
func suspendSeccomp(tid int, on bool) error {
	opts := uintptr(unix.PTRACE_O_TRACESYSGOOD)
	if on {
		opts |= unix.PTRACE_O_SUSPEND_SECCOMP
	}
	if err := ptrace(unix.PTRACE_SETOPTIONS, tid, 0, opts); err != nil {
		if err == unix.EPERM {
			return fmt.Errorf("thread %d runs under seccomp; suspending its filter for the injected syscalls needs CAP_SYS_ADMIN in the initial user namespace and a livefix not itself under seccomp: %w", tid, err)
		}
		return fmt.Errorf("suspend seccomp of thread %d: %w", tid, err)
	}
	return nil
}
