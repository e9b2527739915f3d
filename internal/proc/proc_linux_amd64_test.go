package proc

import (
	"bufio"
	"bytes"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// testBuildID is linked into the target so ReadBuildID has a known answer.
const testBuildID = "0123456789abcdef0123456789abcdef01234567"

// buildTarget compiles testdata/target.c into a temporary directory.
func buildTarget(tb testing.TB) string {
	tb.Helper()
	if _, err := exec.LookPath("gcc"); err != nil {
		if os.Getenv("LIVEFIX_REQUIRE_VM") == "1" { // make test: never skip
			tb.Fatalf("gcc is required to build the test target: %v", err)
		}
		tb.Skip("gcc not found")
	}
	bin := filepath.Join(tb.TempDir(), "target")
	out, err := exec.Command("gcc", "-O1", "-g", "-pthread", "-Wl,--build-id=0x"+testBuildID,
		"-o", bin, "testdata/target.c").CombinedOutput()
	if err != nil {
		tb.Fatalf("gcc: %v\n%s", err, out)
	}
	return bin
}

type target struct {
	tb         testing.TB
	bin        string
	cmd        *exec.Cmd
	stdin      io.WriteCloser
	lines      chan string
	pid        int
	valueAddr  uint64
	answerAddr uint64
	waitOnce   sync.Once
	waitErr    error
}

// startTarget runs the target and parses its "ready" line. Cleanup kills it.
func startTarget(tb testing.TB, bin string, args ...string) *target {
	tb.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tg := &target{tb: tb, bin: bin, cmd: cmd, stdin: stdin, lines: make(chan string, 64)}
	tb.Cleanup(func() {
		cmd.Process.Kill()
		tg.wait()
	})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			tg.lines <- sc.Text()
		}
		close(tg.lines)
	}()
	line := tg.next()
	if _, err := fmt.Sscanf(line, "ready pid=%d value=0x%x answer=0x%x", &tg.pid, &tg.valueAddr, &tg.answerAddr); err != nil {
		tb.Fatalf("bad ready line %q: %v", line, err)
	}
	if tg.pid != cmd.Process.Pid {
		tb.Fatalf("target says pid %d, started %d", tg.pid, cmd.Process.Pid)
	}
	return tg
}

func (tg *target) next() string {
	tg.tb.Helper()
	select {
	case l, ok := <-tg.lines:
		if !ok {
			tg.tb.Fatal("target closed its output")
		}
		return l
	case <-time.After(10 * time.Second):
		tg.tb.Fatal("timed out waiting for target output")
	}
	return ""
}

// ask sends one command and returns the answer line.
func (tg *target) ask(cmd string) string {
	tg.tb.Helper()
	if _, err := io.WriteString(tg.stdin, cmd+"\n"); err != nil {
		tg.tb.Fatalf("send %q: %v", cmd, err)
	}
	return tg.next()
}

// wait reaps the target. Only call it when not attached.
func (tg *target) wait() error {
	tg.waitOnce.Do(func() { tg.waitErr = tg.cmd.Wait() })
	return tg.waitErr
}

// threadStates returns the state letter of every thread of pid.
func threadStates(tb testing.TB, pid int) map[int]byte {
	tb.Helper()
	dir := fmt.Sprintf("/proc/%d/task", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		tb.Fatal(err)
	}
	states := map[int]byte{}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "stat"))
		if err != nil {
			continue // exited meanwhile
		}
		i := bytes.LastIndexByte(b, ')')
		tid, _ := strconv.Atoi(e.Name())
		states[tid] = b[i+2]
	}
	return states
}

func attach(tb testing.TB, pid int) *Process {
	tb.Helper()
	p, err := Attach(pid, AttachOptions{Timeout: 5 * time.Second})
	if err != nil {
		tb.Fatalf("attach: %v", err)
	}
	tb.Cleanup(func() { p.Detach() })
	return p
}

func mustDetach(tb testing.TB, p *Process) {
	tb.Helper()
	if err := p.Detach(); err != nil {
		tb.Fatalf("detach: %v", err)
	}
}

func TestReadBuildID(t *testing.T) {
	bin := buildTarget(t)
	id, err := ReadBuildID(bin)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprintf("%x", id) != testBuildID {
		t.Fatalf("build-id %x, want %s", id, testBuildID)
	}
	// Strip the section headers: the PT_NOTE path must still find it.
	stripped := filepath.Join(t.TempDir(), "stripped")
	if out, err := exec.Command("objcopy", "--strip-all", "--remove-section=.note.gnu.build-id", bin, stripped).CombinedOutput(); err == nil {
		if _, err := ReadBuildID(stripped); !errors.Is(err, ErrNoBuildID) {
			t.Errorf("without the note: err = %v, want ErrNoBuildID", err)
		}
	} else {
		t.Logf("objcopy unavailable: %v %s", err, out)
	}
	if _, err := ReadBuildID("testdata/target.c"); err == nil {
		t.Error("build-id of a C source: no error")
	}
	if _, err := ReadBuildID(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: err = %v", err)
	}
}

func TestFindObject(t *testing.T) {
	bin := buildTarget(t)
	tg := startTarget(t, bin, "1")
	id, err := ReadBuildID(bin)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := FindObject(tg.pid, id)
	if err != nil {
		t.Fatal(err)
	}
	if obj.Path != bin {
		t.Errorf("path %q, want %q", obj.Path, bin)
	}
	// Bias + symbol value must be the address the target printed.
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	syms, err := f.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(syms, func(s elf.Symbol) bool { return s.Name == "answer" })
	if i < 0 {
		t.Fatal("no symbol answer")
	}
	if got := obj.Bias + syms[i].Value; got != tg.answerAddr {
		t.Errorf("bias %#x + answer %#x = %#x, target says %#x", obj.Bias, syms[i].Value, got, tg.answerAddr)
	}

	pids, err := MappingProcesses(id)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(pids, tg.pid) {
		t.Errorf("MappingProcesses = %v, missing %d", pids, tg.pid)
	}
	if _, err := FindObject(tg.pid, []byte{1, 2, 3}); !errors.Is(err, ErrNotMapped) {
		t.Errorf("unknown build-id: err = %v, want ErrNotMapped", err)
	}
	if _, err := FindObject(1<<30, id); !errors.Is(err, ErrNoProcess) {
		t.Errorf("no such pid: err = %v, want ErrNoProcess", err)
	}
}

func TestFindObjectDeleted(t *testing.T) {
	bin := buildTarget(t)
	tg := startTarget(t, bin, "1")
	if err := os.Remove(bin); err != nil {
		t.Fatal(err)
	}
	id, _ := hexID(testBuildID)
	obj, err := FindObject(tg.pid, id)
	if err != nil {
		t.Fatal(err)
	}
	if !obj.Deleted() || !strings.HasSuffix(obj.Path, "(deleted)") {
		t.Errorf("object %q not reported deleted", obj.Path)
	}
}

func hexID(s string) ([]byte, error) { return hex.DecodeString(s) }

func TestAttachErrors(t *testing.T) {
	tests := []struct {
		name string
		pid  int
	}{
		{"zero", 0},
		{"negative", -5},
		{"nonexistent", 1 << 30},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Attach(tc.pid, AttachOptions{})
			if !errors.Is(err, ErrNoProcess) {
				t.Fatalf("err = %v, want ErrNoProcess", err)
			}
		})
	}
	t.Run("exited", func(t *testing.T) {
		cmd := exec.Command("true")
		if err := cmd.Run(); err != nil {
			t.Skip(err)
		}
		if _, err := Attach(cmd.Process.Pid, AttachOptions{}); !errors.Is(err, ErrNoProcess) {
			t.Fatalf("err = %v, want ErrNoProcess", err)
		}
	})
	t.Run("already traced", func(t *testing.T) {
		tg := startTarget(t, buildTarget(t), "2")
		p := attach(t, tg.pid)
		_, err := Attach(tg.pid, AttachOptions{})
		if !errors.Is(err, ErrPermission) || !strings.Contains(err.Error(), "already traced") {
			t.Fatalf("err = %v, want ErrPermission naming the tracer", err)
		}
		// The failed attach must not disturb the first one.
		if got := len(p.Threads()); got != 3 {
			t.Fatalf("threads = %d, want 3", got)
		}
		mustDetach(t, p)
		if tg.ask("ping") != "pong" {
			t.Fatal("target not responsive")
		}
	})
	t.Run("self", func(t *testing.T) {
		if _, err := Attach(os.Getpid(), AttachOptions{}); err == nil {
			t.Fatal("attached to ourselves")
		}
	})
}

func TestAttachStopsAllThreads(t *testing.T) {
	tg := startTarget(t, buildTarget(t), "8")
	p := attach(t, tg.pid)
	if got := len(p.Threads()); got != 9 {
		t.Fatalf("Threads() = %v, want 9 threads", p.Threads())
	}
	for tid, st := range threadStates(t, tg.pid) {
		if st != 't' {
			t.Errorf("thread %d state %c, want t", tid, st)
		}
	}
	if !p.Stopped() || p.StoppedFor() <= 0 {
		t.Errorf("Stopped() = %v, StoppedFor() = %v", p.Stopped(), p.StoppedFor())
	}

	buf := make([]byte, 8)
	if err := p.ReadMem(tg.valueAddr, buf); err != nil {
		t.Fatal(err)
	}
	if v := int64(le64(buf)); v != 7 {
		t.Fatalf("value = %d, want 7", v)
	}
	put64(buf, 12345)
	if err := p.WriteMem(tg.valueAddr, buf); err != nil {
		t.Fatal(err)
	}
	if err := p.ReadMem(0, buf); err == nil {
		t.Error("read at address 0 succeeded")
	}
	mustDetach(t, p)
	if got := tg.ask("value"); got != "value 12345" {
		t.Fatalf("after detach target says %q, want value 12345", got)
	}
	for tid, st := range threadStates(t, tg.pid) {
		if st == 't' || st == 'T' {
			t.Errorf("thread %d still stopped (%c) after detach", tid, st)
		}
	}
	if err := p.Resume(); !errors.Is(err, ErrDetached) {
		t.Errorf("Resume after Detach: err = %v, want ErrDetached", err)
	}
	if err := p.ReadMem(tg.valueAddr, buf); !errors.Is(err, ErrDetached) {
		t.Errorf("ReadMem after Detach: err = %v, want ErrDetached", err)
	}
}

func TestMemPtraceFallback(t *testing.T) {
	tg := startTarget(t, buildTarget(t), "2")
	p := attach(t, tg.pid)
	p.mem.Close() // every /proc/PID/mem access now fails
	buf := make([]byte, 8)
	if err := p.ReadMem(tg.valueAddr, buf); err != nil || le64(buf) != 7 {
		t.Fatalf("read value via ptrace: %d, %v", le64(buf), err)
	}
	// Odd length and unaligned: exercises the partial-word path.
	if err := p.WriteMem(tg.valueAddr+1, []byte{0x30, 0}); err != nil {
		t.Fatal(err)
	}
	if err := p.WriteMem(tg.answerAddr, []byte{0xb8, 42, 0, 0, 0, 0xc3}); err != nil {
		t.Fatalf("write text via ptrace: %v", err)
	}
	mustDetach(t, p)
	if got := tg.ask("value"); got != fmt.Sprintf("value %d", 0x3007) {
		t.Fatalf("target says %q", got)
	}
	if got := tg.ask("answer"); got != "answer 42" {
		t.Fatalf("target says %q", got)
	}
}

func le64(b []byte) uint64 {
	var v uint64
	for i := 7; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v
}

func put64(b []byte, v uint64) {
	for i := 0; i < 8; i++ {
		b[i] = byte(v >> (8 * i))
	}
}

func TestSyscall(t *testing.T) {
	tg := startTarget(t, buildTarget(t), "8")
	p := attach(t, tg.pid)
	pid, err := p.Syscall(unix.SYS_GETPID)
	if err != nil || int(pid) != tg.pid {
		t.Fatalf("getpid = %d, %v; want %d", pid, err, tg.pid)
	}
	// Every thread, whether it was spinning, sleeping in nanosleep or
	// blocked in read, can run a syscall and continue unharmed.
	for _, tid := range p.Threads() {
		got, err := p.SyscallOn(tid, unix.SYS_GETTID)
		if err != nil || int(got) != tid {
			t.Fatalf("gettid on %d = %d, %v", tid, got, err)
		}
	}
	before, _ := p.Regs(tg.pid)
	if _, err := p.Syscall(unix.SYS_CLOSE, 1<<20); err != unix.EBADF {
		t.Fatalf("close(bad fd): err = %v, want EBADF", err)
	}
	after, _ := p.Regs(tg.pid)
	if *before != *after {
		t.Fatalf("registers changed by Syscall:\n%+v\n%+v", before, after)
	}
	if _, err := p.Syscall(unix.SYS_GETPID, 1, 2, 3, 4, 5, 6, 7); err == nil {
		t.Fatal("7 arguments accepted")
	}
	mustDetach(t, p)
	if tg.ask("ping") != "pong" {
		t.Fatal("target not responsive after syscalls")
	}
}

func TestSyscallAtRipFallback(t *testing.T) {
	tg := startTarget(t, buildTarget(t), "4")
	p := attach(t, tg.pid)
	p.do(func() error { p.noSiteSearch = true; return nil })
	regs, err := p.Regs(tg.pid)
	if err != nil {
		t.Fatal(err)
	}
	code := make([]byte, 16)
	if err := p.ReadMem(regs.Rip, code); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		for _, tid := range p.Threads() {
			if got, err := p.SyscallOn(tid, unix.SYS_GETTID); err != nil || int(got) != tid {
				t.Fatalf("gettid on %d = %d, %v", tid, got, err)
			}
		}
	}
	after := make([]byte, 16)
	if err := p.ReadMem(regs.Rip, after); err != nil || !bytes.Equal(code, after) {
		t.Fatalf("code at rip not restored: % x -> % x (%v)", code, after, err)
	}
	mustDetach(t, p)
	if tg.ask("ping") != "pong" {
		t.Fatal("target not responsive")
	}
}

func TestMainThreadExited(t *testing.T) {
	tg := startTarget(t, buildTarget(t), "2", "mainexit")
	waitState(t, tg.pid, 'Z', 1) // the main thread is a zombie
	p := attach(t, tg.pid)
	if got := p.Threads(); len(got) != 3 || slices.Contains(got, tg.pid) {
		t.Fatalf("threads %v: want the 3 live threads", got)
	}
	buf := make([]byte, 8)
	if err := p.ReadMem(tg.valueAddr, buf); err != nil || le64(buf) != 7 {
		t.Fatalf("read value: %d, %v", le64(buf), err)
	}
	if pid, err := p.Syscall(unix.SYS_GETPID); err != nil || int(pid) != tg.pid {
		t.Fatalf("getpid = %d, %v", pid, err)
	}
	mustDetach(t, p)
	if tg.ask("ping") != "pong" {
		t.Fatal("target not responsive")
	}
}

func TestMmapMunmap(t *testing.T) {
	tg := startTarget(t, buildTarget(t), "2")
	id, _ := hexID(testBuildID)
	obj, err := FindObject(tg.pid, id)
	if err != nil {
		t.Fatal(err)
	}
	p := attach(t, tg.pid)
	const size = 3 * 4096
	addr, err := p.MmapNear(obj.Start(), obj.End(), size, unix.PROT_READ|unix.PROT_WRITE)
	if err != nil {
		t.Fatal(err)
	}
	for _, ref := range []uint64{obj.Start(), obj.End() - 1} {
		if d := int64(addr+size-1) - int64(ref); d > 1<<31 || d < -(1<<31) {
			t.Fatalf("mapping %#x is %d bytes from %#x", addr, d, ref)
		}
	}
	findMapping := func() *Mapping {
		maps, err := ReadMaps(tg.pid)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range maps {
			if m.Start <= addr && addr+size <= m.End {
				return &m
			}
		}
		return nil
	}
	m := findMapping()
	if m == nil || m.Perm != "rw-p" {
		t.Fatalf("new mapping at %#x not in maps (%v)", addr, m)
	}
	data := []byte("livefix")
	if err := p.WriteMem(addr+100, data); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(data))
	if err := p.ReadMem(addr+100, got); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back %q, %v", got, err)
	}
	if err := p.Mprotect(addr, size, unix.PROT_READ|unix.PROT_EXEC); err != nil {
		t.Fatal(err)
	}
	if m := findMapping(); m == nil || m.Perm != "r-xp" {
		t.Fatalf("after mprotect: %v", m)
	}
	addr2, err := p.Mmap(obj.Start(), 4096, unix.PROT_READ)
	if err != nil || addr2 == addr {
		t.Fatalf("second Mmap = %#x, %v", addr2, err)
	}
	if err := p.Munmap(addr, size); err != nil {
		t.Fatal(err)
	}
	if m := findMapping(); m != nil {
		t.Fatalf("mapping still there after munmap: %v", m)
	}
	if err := p.Munmap(addr+1, size); err == nil {
		t.Fatal("unaligned munmap accepted")
	}
	mustDetach(t, p)
	if tg.ask("ping") != "pong" {
		t.Fatal("target not responsive")
	}
}

func TestPatchText(t *testing.T) {
	tg := startTarget(t, buildTarget(t), "8")
	if got := tg.ask("answer"); got != "answer 1" {
		t.Fatalf("before patch: %q", got)
	}
	p := attach(t, tg.pid)
	// mov eax, 42; ret
	if err := p.WriteMem(tg.answerAddr, []byte{0xb8, 42, 0, 0, 0, 0xc3}); err != nil {
		t.Fatal(err)
	}
	if err := p.Resume(); err != nil {
		t.Fatal(err)
	}
	if got := tg.ask("answer"); got != "answer 42" {
		t.Fatalf("after patch: %q", got)
	}
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	mustDetach(t, p)
	if got := tg.ask("answer"); got != "answer 42" {
		t.Fatalf("after detach: %q", got)
	}
}

// waitUsr1 polls the target until its SIGUSR1 count is want.
func waitUsr1(tg *target, want int) string {
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := tg.ask("usr1")
		if got == fmt.Sprintf("usr1 %d", want) || time.Now().After(deadline) {
			return got
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestPendingSignalDelivered(t *testing.T) {
	bin := buildTarget(t)
	tests := []struct {
		name string
		run  func(t *testing.T, p *Process, tg *target)
	}{
		{"resume", func(t *testing.T, p *Process, tg *target) {
			if err := p.Resume(); err != nil {
				t.Fatal(err)
			}
			// Delivered while still attached.
			if got := waitUsr1(tg, 1); got != "usr1 1" {
				t.Fatalf("while attached after resume: %q", got)
			}
		}},
		{"detach", func(t *testing.T, p *Process, tg *target) {}},
		{"syscall then resume", func(t *testing.T, p *Process, tg *target) {
			// The syscall thread meets the signal first: it must be held
			// and re-injected.
			if _, err := p.Syscall(unix.SYS_GETPID); err != nil {
				t.Fatal(err)
			}
			if _, err := p.Syscall(unix.SYS_GETPID); err != nil {
				t.Fatal(err)
			}
			if err := p.Resume(); err != nil {
				t.Fatal(err)
			}
		}},
		{"resume stop syscall", func(t *testing.T, p *Process, tg *target) {
			if err := p.Resume(); err != nil {
				t.Fatal(err)
			}
			if err := p.Stop(); err != nil {
				t.Fatal(err)
			}
			if _, err := p.Syscall(unix.SYS_GETPID); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tg := startTarget(t, bin, "4")
			p := attach(t, tg.pid)
			if err := syscall.Kill(tg.pid, syscall.SIGUSR1); err != nil {
				t.Fatal(err)
			}
			time.Sleep(10 * time.Millisecond)
			tc.run(t, p, tg)
			mustDetach(t, p)
			if got := waitUsr1(tg, 1); got != "usr1 1" {
				t.Fatalf("signal lost: target says %q", got)
			}
		})
	}
	t.Run("while running attached", func(t *testing.T) {
		tg := startTarget(t, bin, "4")
		p := attach(t, tg.pid)
		if err := p.Resume(); err != nil {
			t.Fatal(err)
		}
		for i := 1; i <= 3; i++ {
			syscall.Kill(tg.pid, syscall.SIGUSR1)
			if got := waitUsr1(tg, i); got != fmt.Sprintf("usr1 %d", i) {
				t.Fatalf("signal %d: %q", i, got)
			}
		}
		mustDetach(t, p)
	})
}

func TestGroupStopPreserved(t *testing.T) {
	tg := startTarget(t, buildTarget(t), "2")
	syscall.Kill(tg.pid, syscall.SIGSTOP)
	waitState(t, tg.pid, 'T', 0)
	p := attach(t, tg.pid)
	if _, err := p.Syscall(unix.SYS_GETPID); err != nil {
		t.Fatal(err)
	}
	if err := p.Resume(); err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	mustDetach(t, p)
	waitState(t, tg.pid, 'T', 0)
	syscall.Kill(tg.pid, syscall.SIGCONT)
	if tg.ask("ping") != "pong" {
		t.Fatal("target not responsive after SIGCONT")
	}
}

// waitState waits until at least min threads of pid (all if min is 0) are
// in state st.
func waitState(t *testing.T, pid int, st byte, min int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := 0
		states := threadStates(t, pid)
		for _, s := range states {
			if s == st {
				n++
			}
		}
		if (min == 0 && n == len(states)) || (min > 0 && n >= min) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("thread states %v, want %c", states, st)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestThreadChurn(t *testing.T) {
	tg := startTarget(t, buildTarget(t), "2", "churn")
	for i := 0; i < 30; i++ {
		p, err := Attach(tg.pid, AttachOptions{Timeout: 5 * time.Second})
		if err != nil {
			t.Fatalf("attach %d: %v", i, err)
		}
		for tid, st := range threadStates(t, tg.pid) {
			if st != 't' && st != 'Z' && st != 'X' {
				t.Errorf("cycle %d: thread %d in state %c while attached", i, tid, st)
			}
		}
		for j := 0; j < 5; j++ {
			if err := p.Resume(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(200 * time.Microsecond)
			if err := p.Stop(); err != nil {
				t.Fatal(err)
			}
			if n := len(p.Threads()); n < 4 {
				t.Fatalf("only %d threads after stop", n)
			}
		}
		mustDetach(t, p)
	}
	if tg.ask("ping") != "pong" {
		t.Fatal("target not responsive")
	}
}

func TestStackWords(t *testing.T) {
	tg := startTarget(t, buildTarget(t), "2")
	p := attach(t, tg.pid)
	maps, err := p.Maps()
	if err != nil {
		t.Fatal(err)
	}
	for _, tid := range p.Threads() {
		words, err := p.StackWords(tid, 512)
		if err != nil {
			t.Fatal(err)
		}
		if len(words) == 0 || len(words) > 512 {
			t.Fatalf("thread %d: %d words", tid, len(words))
		}
		code := 0
		for _, w := range words {
			for _, m := range maps {
				if m.Executable() && m.Contains(w) {
					code++
				}
			}
		}
		if code == 0 {
			t.Errorf("thread %d: no return address among %d stack words", tid, len(words))
		}
	}
	if _, err := p.StackWords(1<<30, 8); !errors.Is(err, ErrNoProcess) {
		t.Errorf("unknown thread: %v", err)
	}
	if err := p.Resume(); err != nil {
		t.Fatal(err)
	}
	if _, err := p.StackWords(tg.pid, 8); !errors.Is(err, ErrRunning) {
		t.Errorf("running: err = %v, want ErrRunning", err)
	}
	if _, err := p.Syscall(unix.SYS_GETPID); !errors.Is(err, ErrRunning) {
		t.Errorf("running: err = %v, want ErrRunning", err)
	}
	mustDetach(t, p)
}

func TestDetachKeepsRunningAndExits(t *testing.T) {
	tg := startTarget(t, buildTarget(t), "8")
	p := attach(t, tg.pid)
	if err := p.Resume(); err != nil {
		t.Fatal(err)
	}
	mustDetach(t, p) // detach from the running state
	time.Sleep(20 * time.Millisecond)
	for tid, st := range threadStates(t, tg.pid) {
		if st == 't' || st == 'T' {
			t.Errorf("thread %d stopped (%c) after detach", tid, st)
		}
	}
	if tg.ask("value") != "value 7" {
		t.Fatal("target not responsive")
	}
	io.WriteString(tg.stdin, "exit\n")
	if err := tg.wait(); err != nil {
		t.Fatalf("target exit: %v", err)
	}
}

func TestAttachDetachCycles(t *testing.T) {
	tg := startTarget(t, buildTarget(t), "8")
	n := 200
	if testing.Short() {
		n = 20
	}
	for i := 0; i < n; i++ {
		p, err := Attach(tg.pid, AttachOptions{Timeout: 5 * time.Second})
		if err != nil {
			t.Fatalf("cycle %d: attach: %v", i, err)
		}
		if got := len(p.Threads()); got != 9 {
			p.Detach()
			t.Fatalf("cycle %d: %d threads", i, got)
		}
		if i%2 == 1 {
			if err := p.Resume(); err != nil {
				t.Fatalf("cycle %d: resume: %v", i, err)
			}
			if err := p.Stop(); err != nil {
				t.Fatalf("cycle %d: stop: %v", i, err)
			}
		}
		if err := p.Detach(); err != nil {
			t.Fatalf("cycle %d: detach: %v", i, err)
		}
	}
	if tg.ask("ping") != "pong" {
		t.Fatal("target not responsive after cycles")
	}
	io.WriteString(tg.stdin, "exit\n")
	if err := tg.wait(); err != nil {
		t.Fatalf("target exit: %v", err)
	}
}

func TestAttachTimeoutDetachesAll(t *testing.T) {
	tg := startTarget(t, buildTarget(t), "2", "vfork")
	time.Sleep(50 * time.Millisecond)
	start := time.Now()
	p, err := Attach(tg.pid, AttachOptions{Timeout: 100 * time.Millisecond})
	if err == nil {
		// The vfork parent happened to be between two vforks.
		mustDetach(t, p)
		t.Skip("the vfork thread was stoppable this time")
	}
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("attach took %v with a 100ms timeout", d)
	}
	// Nothing may stay traced or stopped.
	deadline := time.Now().Add(2 * time.Second)
	for {
		stopped := 0
		for _, st := range threadStates(t, tg.pid) {
			if st == 't' || st == 'T' {
				stopped++
			}
		}
		traced := 0
		for tid := range threadStates(t, tg.pid) {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/status", tg.pid, tid))
			if !strings.Contains(string(b), "TracerPid:\t0\n") {
				traced++
			}
		}
		if stopped == 0 && traced == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d threads stopped, %d traced after a failed attach", stopped, traced)
		}
		time.Sleep(time.Millisecond)
	}
	if tg.ask("ping") != "pong" {
		t.Fatal("target not responsive")
	}
}

func TestProcessExitsWhileAttached(t *testing.T) {
	tg := startTarget(t, buildTarget(t), "4")
	p := attach(t, tg.pid)
	if err := p.Resume(); err != nil {
		t.Fatal(err)
	}
	syscall.Kill(tg.pid, syscall.SIGKILL)
	time.Sleep(50 * time.Millisecond)
	err := p.Stop()
	if !errors.Is(err, ErrNoProcess) {
		t.Fatalf("Stop after SIGKILL: err = %v, want ErrNoProcess", err)
	}
	if err := p.Detach(); !errors.Is(err, ErrDetached) {
		t.Fatalf("Detach: err = %v, want ErrDetached", err)
	}
}

func BenchmarkStopResume(b *testing.B) {
	bin := buildTarget(b)
	for _, threads := range []int{1, 8} {
		tg := startTarget(b, bin, strconv.Itoa(threads))
		b.Run(fmt.Sprintf("threads=%d/attach-detach", threads), func(b *testing.B) {
			var pauses []time.Duration
			for i := 0; i < b.N; i++ {
				p, err := Attach(tg.pid, AttachOptions{})
				if err != nil {
					b.Fatal(err)
				}
				if err := p.Detach(); err != nil {
					b.Fatal(err)
				}
				pauses = append(pauses, p.StoppedFor())
			}
			reportPauses(b, pauses)
		})
		b.Run(fmt.Sprintf("threads=%d/stop-resume", threads), func(b *testing.B) {
			p, err := Attach(tg.pid, AttachOptions{})
			if err != nil {
				b.Fatal(err)
			}
			defer p.Detach()
			var pauses []time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := p.Resume(); err != nil {
					b.Fatal(err)
				}
				if i > 0 { // the first pause includes Attach
					pauses = append(pauses, p.StoppedFor())
				}
				if err := p.Stop(); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			reportPauses(b, pauses)
		})
		// What a one-function patch does inside the pause: scan every
		// stack, map a page near the executable, write code there and a
		// jump over the function entry (here: the same bytes back).
		b.Run(fmt.Sprintf("threads=%d/patch-like", threads), func(b *testing.B) {
			p, err := Attach(tg.pid, AttachOptions{})
			if err != nil {
				b.Fatal(err)
			}
			defer p.Detach()
			if err := p.Resume(); err != nil {
				b.Fatal(err)
			}
			entry := make([]byte, 5)
			var pauses []time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := p.Stop(); err != nil {
					b.Fatal(err)
				}
				for _, tid := range p.Threads() {
					if _, err := p.StackWords(tid, 256); err != nil {
						b.Fatal(err)
					}
				}
				addr, err := p.Mmap(tg.answerAddr, 4096, unix.PROT_READ|unix.PROT_EXEC)
				if err != nil {
					b.Fatal(err)
				}
				if err := p.WriteMem(addr, []byte{0xb8, 1, 0, 0, 0, 0xc3}); err != nil {
					b.Fatal(err)
				}
				if err := p.ReadMem(tg.answerAddr, entry); err != nil {
					b.Fatal(err)
				}
				if err := p.WriteMem(tg.answerAddr, entry); err != nil {
					b.Fatal(err)
				}
				if err := p.Resume(); err != nil {
					b.Fatal(err)
				}
				pauses = append(pauses, p.StoppedFor())
				b.StopTimer()
				if err := p.Stop(); err != nil {
					b.Fatal(err)
				}
				if err := p.Munmap(addr, 4096); err != nil {
					b.Fatal(err)
				}
				if err := p.Resume(); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			b.StopTimer()
			reportPauses(b, pauses)
		})
	}
}

func reportPauses(b *testing.B, pauses []time.Duration) {
	slices.Sort(pauses)
	if len(pauses) == 0 {
		return
	}
	b.ReportMetric(float64(pauses[len(pauses)/2].Microseconds()), "median-pause-µs")
	b.ReportMetric(float64(pauses[len(pauses)*99/100].Microseconds()), "p99-pause-µs")
}

// TestStopOne: an attach with OneThread and StopOne stop a sleeping
// thread (the main thread, blocked in read) alone while the others run,
// an injected syscall works there, Stop then stops every thread, and
// DetachAllBut lets all but one go.
func TestStopOne(t *testing.T) {
	tg := startTarget(t, buildTarget(t), "4")
	// stoppedOnly(tid): only that thread is stopped; 0: all of them;
	// anyOne: exactly one, whichever StopOne chose (a sleeping thread,
	// the main one preferred: which one sleeps at that instant depends
	// on scheduling, so the one-thread stops are not pinned to a tid).
	const anyOne = -1
	stoppedOnly := func(want int) {
		t.Helper()
		states := threadStates(t, tg.pid)
		n := 0
		for tid, st := range states {
			stopped := st == 't'
			if stopped {
				n++
			}
			if want != anyOne && stopped != (want == 0 || tid == want) {
				t.Errorf("thread %d state %c (want only %d stopped; 0: all)", tid, st, want)
			}
		}
		if want == anyOne && n != 1 {
			t.Errorf("%d threads stopped, want exactly one (states %v)", n, states)
		}
	}
	p, err := AttachRun(tg.pid, AttachOptions{Timeout: 5 * time.Second, OneThread: true}, func(p *Process) error {
		stoppedOnly(anyOne)
		if p.Stopped() {
			t.Error("Stopped() in a one-thread stop")
		}
		r, err := p.Syscall(unix.SYS_GETPID)
		if err != nil || int(r) != tg.pid {
			t.Errorf("getpid in the target = %d, %v", r, err)
		}
		return p.Resume()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Detach() })
	if got := len(p.Threads()); got != 5 {
		t.Fatalf("Threads() = %v, want 5 seized", p.Threads())
	}
	if err := p.StopOne(); err != nil {
		t.Fatal(err)
	}
	stoppedOnly(anyOne)
	if err := p.Resume(); err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	stoppedOnly(0)
	if !p.Stopped() {
		t.Error("not Stopped() after Stop")
	}
	if err := p.DetachAllBut(tg.pid); err != nil {
		t.Fatal(err)
	}
	if p.StoppedFor() <= 0 {
		t.Errorf("StoppedFor() = %v after DetachAllBut: want the stop of every thread", p.StoppedFor())
	}
	stoppedOnly(tg.pid)
	if _, err := p.Syscall(unix.SYS_GETPID); err != nil {
		t.Error(err)
	}
	mustDetach(t, p)
	for tid, st := range threadStates(t, tg.pid) {
		if st == 't' || st == 'T' {
			t.Errorf("thread %d still stopped (%c) after detach", tid, st)
		}
	}
	if got := tg.ask("value"); got != "value 7" {
		t.Fatalf("after detach the target says %q", got)
	}
}
