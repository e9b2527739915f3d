package user

import (
	"bufio"
	"encoding/json"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/livefix/livefix/internal/e2etest"
)

// TestKillLivefix kills `livefix process patch` / `unpatch` with SIGKILL
// at a random moment (0-40 ms after it starts) against a running
// 3-thread target, many times: the target never dies and, after the next
// command (`list`, which reconciles), the record always agrees with the
// process's memory (issue 10, acceptance 6). LIVEFIX_KILL_TRIALS sets the
// number of trials (default 100), LIVEFIX_KILL_SEED the random seed.
func TestKillLivefix(t *testing.T) {
	require(t)
	livefix, livefixBuild := e2etest.Tools(t)
	trials := 100
	if s := os.Getenv("LIVEFIX_KILL_TRIALS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("LIVEFIX_KILL_TRIALS=%q", s)
		}
		trials = n
	}
	seed := time.Now().UnixNano()
	if s := os.Getenv("LIVEFIX_KILL_SEED"); s != "" {
		seed, _ = strconv.ParseInt(s, 10, 64)
	}
	t.Logf("%d trials, LIVEFIX_KILL_SEED=%d", trials, seed)
	rng := rand.New(rand.NewSource(seed))

	src, _ := filepath.Abs(filepath.Join("..", "..", "ulp", "testdata", "life"))
	patch, _ := filepath.Abs(filepath.Join("..", "..", "ulp", "testdata", "patches", "life.patch"))
	prod := filepath.Join(t.TempDir(), "life")
	if out, err := exec.Command("cp", "-a", src, prod).CombinedOutput(); err != nil {
		t.Fatal(err, string(out))
	}
	if out, err := exec.Command("make", "-s", "-C", prod).CombinedOutput(); err != nil {
		t.Fatal(err, string(out))
	}
	lfp := filepath.Join(t.TempDir(), "life.lfp")
	if _, rc := run(t, nil, livefixBuild, "user", "--src", prod, "--patch", patch, "--build", "make -s",
		"--target-binary", filepath.Join(prod, "life"), "-o", lfp); rc != 0 {
		t.Fatalf("livefix-build: exit %d", rc)
	}
	tg := startLife(t, filepath.Join(prod, "life"))
	state := t.TempDir()
	env := append(os.Environ(), "LIVEFIX_STATE_DIR="+state)

	recorded := func() (bool, []string) {
		cmd := exec.Command(livefix, "process", "list", "--json")
		cmd.Env = env
		var errb strings.Builder
		cmd.Stderr = &errb
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("list: %v %s", err, errb.String())
		}
		var recs []struct {
			Pid     int
			Patches []struct{ Name string }
			Notes   []string
		}
		if err := json.Unmarshal(out, &recs); err != nil {
			t.Fatalf("list --json: %v: %s", err, out)
		}
		for _, r := range recs {
			if r.Pid == tg.cmd.Process.Pid {
				return len(r.Patches) > 0, r.Notes
			}
		}
		return false, nil
	}
	// The kills land anywhere in a command: uniformly over 0-40 ms (the
	// issue's range) or over twice the time one command takes here, if
	// longer, so that every phase of a command is hit.
	span := 40 * time.Millisecond
	for _, args := range [][]string{{"process", "patch", "--pid", tg.pid, lfp}, {"process", "unpatch", "--pid", tg.pid}} {
		begin := time.Now()
		if _, rc := run(t, []string{"LIVEFIX_STATE_DIR=" + state}, livefix, args...); rc != 0 {
			t.Fatalf("%v: exit %d", args, rc)
		}
		span = max(span, time.Since(begin)*2)
	}
	t.Logf("kill delays uniform in [0, %v)", span)
	counts := map[string]int{}
	for i := 0; i < trials; i++ {
		patched, _ := recorded()
		args := []string{"process", "patch", "--pid", strconv.Itoa(tg.cmd.Process.Pid), lfp}
		if patched {
			args = []string{"process", "unpatch", "--pid", strconv.Itoa(tg.cmd.Process.Pid)}
		}
		cmd := exec.Command(livefix, args...)
		cmd.Env = env
		delay := time.Duration(rng.Int63n(int64(span)))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(delay)
		cmd.Process.Signal(syscall.SIGKILL)
		err := cmd.Wait()
		finished := err == nil
		rec, notes := recorded()
		v := tg.ask("v")
		inMemory := v == "17"
		if v != "16" && v != "17" {
			t.Fatalf("trial %d: value() = %q", i, v)
		}
		if rec != inMemory {
			t.Fatalf("trial %d (%s killed after %v): recorded patched=%v, memory patched=%v; notes %q", i, args[1], delay, rec, inMemory, notes)
		}
		switch {
		case finished:
			counts["finished"]++
		case len(notes) > 0:
			counts["repaired"]++
		default:
			counts["killed, nothing to repair"]++
		}
	}
	if ws, err := os.ReadFile("/proc/" + strconv.Itoa(tg.cmd.Process.Pid) + "/status"); err != nil || !strings.Contains(string(ws), "State:") {
		t.Fatalf("the target is gone: %v", err)
	}
	t.Logf("outcomes: %v", counts)
}

func startLife(t *testing.T, path string) *authd {
	t.Helper()
	return startCmd(t, exec.Command(path))
}

// startCmd starts a test program that says "ready" and answers lines.
func startCmd(t *testing.T, cmd *exec.Cmd) *authd {
	t.Helper()
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	a := &authd{t: t, cmd: cmd, in: in, rd: bufio.NewReader(out), pid: itoa(cmd.Process.Pid)}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	if got := a.ask(""); got != "ready" {
		t.Fatalf("%s: %q", cmd.Path, got)
	}
	return a
}
