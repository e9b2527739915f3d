package proc

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestMain lets a test re-execute the test binary as a tracer that kills
// itself in the middle of an injected syscall.
func TestMain(m *testing.M) {
	if point := os.Getenv("LIVEFIX_TEST_DIE_AT"); point != "" {
		pid, _ := strconv.Atoi(os.Getenv("LIVEFIX_TEST_PID"))
		testHookInjected = func(p string) {
			if p == point {
				syscall.Kill(os.Getpid(), syscall.SIGKILL)
				time.Sleep(time.Hour)
			}
		}
		p, err := Attach(pid, AttachOptions{})
		if err != nil {
			os.Exit(3)
		}
		// The first injection creates the scratch mapping (through an
		// existing syscall instruction); the tracer dies in the second.
		if os.Getenv("LIVEFIX_TEST_FIRST") == "" {
			testHookInjected = func(string) {}
			if _, err := p.Syscall(unix.SYS_GETPID); err != nil {
				os.Exit(4)
			}
			testHookInjected = func(p string) {
				if p == point {
					syscall.Kill(os.Getpid(), syscall.SIGKILL)
					time.Sleep(time.Hour)
				}
			}
		}
		p.Syscall(unix.SYS_GETPID)
		os.Exit(5) // not reached
	}
	os.Exit(m.Run())
}

// TestTracerKilledInSyscall: a tracer killed at any point of an injected
// syscall that runs from the scratch mapping leaves the target running
// normally, its threads (one of them blocked in a read) undisturbed.
func TestTracerKilledInSyscall(t *testing.T) {
	bin := buildTarget(t)
	for _, point := range []string{"set", "enter", "exit"} {
		t.Run(point, func(t *testing.T) {
			tg := startTarget(t, bin, "4")
			for i := 0; i < 20; i++ {
				cmd := exec.Command(os.Args[0], "-test.run=^$")
				cmd.Env = append(os.Environ(), "LIVEFIX_TEST_DIE_AT="+point, "LIVEFIX_TEST_PID="+strconv.Itoa(tg.pid))
				err := cmd.Run()
				if ee, ok := err.(*exec.ExitError); !ok || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
					t.Fatalf("tracer: %v (want killed by SIGKILL)", err)
				}
				if got := tg.ask("ping"); got != "pong" {
					t.Fatalf("round %d: target answers %q after its tracer died at %q", i, got, point)
				}
			}
			// One scratch mapping, reused by every tracer.
			maps, err := os.ReadFile("/proc/" + strconv.Itoa(tg.pid) + "/maps")
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			ms, _ := ReadMaps(tg.pid)
			p := &Process{pid: tg.pid}
			p.mem, _ = os.Open("/proc/" + strconv.Itoa(tg.pid) + "/mem")
			for i := 0; i+1 < len(ms); i++ {
				if p.findScratch(ms[i:i+2]) != 0 {
					n++
				}
			}
			p.mem.Close()
			if n != 1 {
				t.Fatalf("%d scratch mappings:\n%s", n, strings.TrimSpace(string(maps)))
			}
		})
	}
}
