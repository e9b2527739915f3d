// Package proc controls running processes for userspace live patching:
// it finds mapped objects by build-id, stops all threads of a process,
// reads and writes its memory, runs system calls inside it (mmap, munmap,
// mprotect) and lets it go again.
//
// # Model
//
// The portable part reads /proc: ParseMaps/ReadMaps parse /proc/PID/maps,
// ReadBuildID reads the GNU build-id note of an ELF file, Objects and
// FindObject identify mapped ELF files by build-id (opening them through
// /proc/PID/map_files so that deleted or replaced files are still read
// exactly as mapped) and compute their load bias, and MappingProcesses
// finds every process mapping a given build-id.
//
// The control part (linux/amd64) is built on PTRACE_SEIZE. Attach seizes
// every thread listed in /proc/PID/task, interrupts it with
// PTRACE_INTERRUPT, waits for the stop, and lists the threads again until
// no new thread appears. A Process is then either stopped (every thread in
// a ptrace-stop) or running attached (after Resume); Stop returns it to the
// stopped state, also seizing threads created meanwhile, and Detach ends
// the session.
//
// All ptrace requests and waits for one Process run on a single goroutine
// locked to its OS thread (the tracer); the exported methods send closures
// to it and may be called from any goroutine. Waits use
// wait4(-1, __WALL|__WNOTHREAD|WNOHANG) on that thread, so they see only
// this Process's tracees and never reap other children of the program.
// Memory is accessed through /proc/PID/mem (which can write read-only text
// while attached), with PTRACE_PEEKDATA/POKEDATA as a fallback.
//
// Syscall runs one system call on a stopped thread. The first one in a
// process's life creates a scratch mapping (scratch_linux_amd64.go: a
// stub that runs the syscall, restores every register from a save area
// and jumps back) through an existing `syscall` instruction (vdso or
// libc; only as a last resort are two bytes written at rip and
// restored); later ones, and those of later livefix commands, which find
// the mapping by its magic, write the thread's registers to the save area
// first and run from the stub. The syscall is traced with PTRACE_SYSCALL
// (no single-step: its SIGTRAP would kill the target if the tracer died
// then); at the exit stop rax is read and every register restored, with
// the thread's own interrupted syscall set to restart as the kernel
// would. A tracer killed at any instant leaves the thread to finish the
// syscall and return through the stub. Under seccomp the injected thread
// gets PTRACE_O_SUSPEND_SECCOMP around the injected syscall only.
//
// ListenEvents subscribes to the kernel's process-event connector (exec
// and fork of every process), for watching new processes.
//
// # Safety rules
//
//   - Every failure path detaches: if Attach fails, already seized threads
//     are detached; if Stop, Resume or a broken Syscall fails, the Process
//     detaches everything and reports the error. Nothing is left stopped.
//     As a last resort the tracer OS thread exits, and the kernel detaches
//     whatever it still traces.
//   - Every wait is bounded by AttachOptions.Timeout; a timeout is an error
//     (ErrTimeout), never a hang.
//   - The target's signals are never swallowed. A signal whose
//     delivery-stop we see while stopping, or that gets in the way of an
//     injected syscall, is re-injected with its original siginfo on Resume
//     or Detach. While running attached, signal-delivery-stops are passed
//     on at once. A process stopped by SIGSTOP (group-stop) stays stopped
//     (PTRACE_LISTEN on Resume; the kernel restores the stop on Detach).
//   - Threads that exit while attached are dropped; an exiting thread
//     during Attach is skipped.
//   - A program that is the parent of the target must not wait for it
//     (exec.Cmd.Wait) while it is attached: such a wait from another
//     thread of the program can consume ptrace stops.
//
// Pause times: StoppedFor measures from the first PTRACE_INTERRUPT to the
// last thread restarted. Per stop the work is one PTRACE_INTERRUPT, one
// wait and one restart per thread plus one read of /proc/PID/task.
// /proc/PID/mem and /proc/PID/maps are opened before the first stop.
//
// Keeping pauses short: every method is a request to the tracer thread,
// and on a loaded machine each hand-off between threads waits for the
// scheduler. Run executes a caller's function on the tracer thread, where
// the methods it calls run directly, so a whole stop (StopStacks, checks,
// writes, Resume or Detach) costs no hand-off. Stacks and StopStacks read
// every thread's rip and stack in one request; the end of the stack
// mapping comes from the PROCMAP_QUERY ioctl (Linux 6.11+) rather than
// from formatting and parsing all of /proc/PID/maps (the fallback).
// MmapNearIn takes the free gaps from a snapshot of the maps read while
// the process ran; MAP_FIXED_NOREPLACE makes a stale snapshot harmless.
package proc
