package ulp_test

import (
	"bufio"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/livefix/livefix/ulp"
	"github.com/livefix/livefix/ulp/build"
)

// requireHost skips tests that need gcc, make, patch and ptrace; with
// LIVEFIX_REQUIRE_VM=1 (make test) a missing tool is a failure.
func requireHost(t testing.TB) {
	t.Helper()
	for _, tool := range []string{"gcc", "make", "patch"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("LIVEFIX_REQUIRE_VM") == "1" {
				t.Fatalf("%s is required: %v", tool, err)
			}
			t.Skipf("%s not available: %v", tool, err)
		}
	}
	if os.Geteuid() != 0 {
		if os.Getenv("LIVEFIX_REQUIRE_VM") == "1" {
			t.Fatal("ulp tests patch other processes and need root")
		}
		t.Skip("ulp tests patch other processes and need root")
	}
}

// buildPatch builds testdata/SRC with PATCH and returns the result; the
// unpatched tree is in work/orig.
func buildPatch(t testing.TB, src, patch, command, target, work string, level int) *build.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var log strings.Builder
	res, err := build.Build(ctx, build.Config{
		Src: src, Patch: patch, Build: command, Target: target,
		WorkDir: work, Level: level, Log: &log,
	})
	if err != nil {
		t.Fatalf("build %s: %v\n%s", filepath.Base(patch), err, log.String())
	}
	// Round trip through the file format, as the CLI does.
	b, err := ulp.Encode(res.Patch)
	if err != nil {
		t.Fatal(err)
	}
	if res.Patch, err = ulp.Decode(b); err != nil {
		t.Fatal(err)
	}
	return res
}

// target is a running test program driven through stdin/stdout.
type target struct {
	t   testing.TB
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
	mu  sync.Mutex
	pid int
}

func start(t testing.TB, env []string, name string, args ...string) *target {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	tg := &target{t: t, cmd: cmd, in: in, out: bufio.NewReader(out), pid: cmd.Process.Pid}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	if got := tg.line(); got != "ready" {
		t.Fatalf("%s: want ready, got %q", name, got)
	}
	return tg
}

func (tg *target) line() string {
	tg.t.Helper()
	type res struct {
		s   string
		err error
	}
	c := make(chan res, 1)
	go func() {
		s, err := tg.out.ReadString('\n')
		c <- res{strings.TrimSpace(s), err}
	}()
	select {
	case r := <-c:
		if r.err != nil {
			tg.t.Fatalf("pid %d: read: %v (did it crash?)", tg.pid, r.err)
		}
		return r.s
	case <-time.After(10 * time.Second):
		tg.t.Fatalf("pid %d: no answer in 10s", tg.pid)
	}
	return ""
}

// ask sends one command line and returns the reply line.
func (tg *target) ask(cmd string) string {
	tg.t.Helper()
	tg.mu.Lock()
	defer tg.mu.Unlock()
	if _, err := io.WriteString(tg.in, cmd+"\n"); err != nil {
		tg.t.Fatalf("pid %d: write: %v", tg.pid, err)
	}
	return tg.line()
}

// memory reads n bytes of the target at addr.
func (tg *target) memory(addr uint64, n int) []byte {
	tg.t.Helper()
	f, err := os.Open("/proc/" + itoa(tg.pid) + "/mem")
	if err != nil {
		tg.t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, int64(addr)); err != nil {
		tg.t.Fatal(err)
	}
	return b
}

func (tg *target) maps() string {
	b, err := os.ReadFile("/proc/" + itoa(tg.pid) + "/maps")
	if err != nil {
		tg.t.Fatal(err)
	}
	return string(b)
}

// stableMaps is maps without livefix's scratch mapping (a 4 KiB r-x page
// and 64 KiB of stack, anonymous), which the first injected syscall
// creates and every later command reuses for the life of the process.
func (tg *target) stableMaps() string {
	lines := strings.Split(tg.maps(), "\n")
	var out []string
	span := func(l string) (uint64, uint64, string) {
		f := strings.Fields(l)
		if len(f) < 5 {
			return 0, 0, ""
		}
		lo, hi, _ := strings.Cut(f[0], "-")
		a, _ := strconv.ParseUint(lo, 16, 64)
		b, _ := strconv.ParseUint(hi, 16, 64)
		anon := ""
		if len(f) == 5 && f[4] == "0" {
			anon = f[1]
		}
		return a, b, anon
	}
	for i := 0; i < len(lines); i++ {
		a, b, perm := span(lines[i])
		if perm == "r-xp" && b-a == 4096 && i+1 < len(lines) {
			c, d, p2 := span(lines[i+1])
			if p2 == "rw-p" && c == b && d-c == 16*4096 {
				i++
				continue
			}
		}
		out = append(out, lines[i])
	}
	return strings.Join(out, "\n")
}

func itoa(i int) string { return strconv.Itoa(i) }

func testdata(t testing.TB, parts ...string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join(append([]string{"testdata"}, parts...)...))
	if err != nil {
		t.Fatal(err)
	}
	return p
}
