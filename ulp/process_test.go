package ulp_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/livefix/livefix/internal/proc"
	"github.com/livefix/livefix/ulp"
)

const calcBuild = "make -s PIE=1 OPT=-O2"

// TestLevels: a higher level replaces the applied patch in one stop; an
// equal or lower level is refused; the same patch twice is refused.
func TestLevels(t *testing.T) {
	requireHost(t)
	work, state := t.TempDir(), t.TempDir()
	p1 := buildPatch(t, testdata(t, "calc"), testdata(t, "patches", "newfunc.patch"), calcBuild, "libcalc.so", filepath.Join(work, "1"), 1)
	p2 := buildPatch(t, testdata(t, "calc"), testdata(t, "patches", "libccall.patch"), calcBuild, "libcalc.so", filepath.Join(work, "2"), 2)
	dir := filepath.Dir(p1.OrigTarget)
	tg := start(t, []string{"LD_LIBRARY_PATH=" + dir}, filepath.Join(dir, "app"))
	opts := ulp.Options{StateDir: state}
	steps := []struct {
		patch   *ulp.Patch
		wantErr error
		answer  string
	}{
		{p1.Patch, nil, "1005"},
		{p1.Patch, ulp.ErrAlreadyApplied, "1005"},
		{p2.Patch, nil, "505"},
		{p1.Patch, ulp.ErrLevel, "505"},
		{p2.Patch, ulp.ErrAlreadyApplied, "505"},
	}
	for i, s := range steps {
		r, err := ulp.Apply(tg.pid, s.patch, opts)
		if !errors.Is(err, s.wantErr) {
			t.Fatalf("step %d: apply %s: got %v, want %v", i, s.patch.Name, err, s.wantErr)
		}
		if i == 2 && (r == nil || r.Replaced != "newfunc") {
			t.Fatalf("step 2: want newfunc replaced, got %+v", r)
		}
		if got := tg.ask("A 5"); got != s.answer {
			t.Fatalf("step %d: A 5 = %s, want %s", i, got, s.answer)
		}
	}
	recs, err := ulp.List(state)
	if err != nil || len(recs) != 1 || len(recs[0].Patches) != 1 || recs[0].Patches[0].Name != "libccall" {
		t.Fatalf("list: %v %+v", err, recs)
	}
	if strings.Count(tg.maps(), "\n") == 0 {
		t.Fatal("no maps")
	}
	if _, err := ulp.Unpatch(tg.pid, "newfunc", opts); !errors.Is(err, ulp.ErrNotApplied) {
		t.Fatalf("unpatch of the replaced patch: %v", err)
	}
	if _, err := ulp.Unpatch(tg.pid, "libccall", opts); err != nil {
		t.Fatal(err)
	}
	if got := tg.ask("A 5"); got != "6" {
		t.Fatalf("after unpatch: %s", got)
	}
}

// TestBadInput: damaged patch files are rejected with a clear error,
// and a patch for another build-id or a missing process leaves every
// process as it was.
func TestBadInput(t *testing.T) {
	requireHost(t)
	work, state := t.TempDir(), t.TempDir()
	res := buildPatch(t, testdata(t, "calc"), testdata(t, "patches", "newfunc.patch"), calcBuild, "libcalc.so", work, 1)
	good, err := ulp.Encode(res.Patch)
	if err != nil {
		t.Fatal(err)
	}
	flip := func(i int) []byte { b := bytes.Clone(good); b[i] ^= 1; return b }
	files := []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "bad magic"},
		{"not a patch", []byte("#!/bin/sh\necho hello\n"), "bad magic"},
		{"truncated header", good[:12], "truncated header"},
		{"truncated", good[:len(good)-100], "truncated"},
		{"one byte short", good[:len(good)-1], "truncated"},
		{"padded", append(bytes.Clone(good), 0), "truncated or padded"},
		{"tampered payload", flip(len(good) / 2), "checksum mismatch"},
		{"tampered checksum", flip(len(good) - 1), "checksum mismatch"},
		{"tampered length", flip(16), "truncated"},
		{"future version", flip(8), "unsupported patch file version"},
	}
	for _, f := range files {
		t.Run(f.name, func(t *testing.T) {
			_, err := ulp.Decode(f.data)
			if err == nil || !strings.Contains(err.Error(), f.want) {
				t.Fatalf("got %v, want an error containing %q", err, f.want)
			}
		})
	}
	if _, err := ulp.Decode(good); err != nil {
		t.Fatalf("the good file: %v", err)
	}

	dir := filepath.Dir(res.OrigTarget)
	tg := start(t, []string{"LD_LIBRARY_PATH=" + dir}, filepath.Join(dir, "app"))
	before := tg.stableMaps()
	entry := symAddr(t, tg, res.OrigTarget, "lib_answer")
	code := tg.memory(entry, 16)

	wrong := *res.Patch
	wrong.Target.BuildID = strings.Repeat("ab", 20)
	cases := []struct {
		name string
		pid  int
		p    *ulp.Patch
		want error
	}{
		{"wrong build-id", tg.pid, &wrong, proc.ErrNotMapped},
		{"no such process", 1 << 30, res.Patch, proc.ErrNoProcess},
		{"exited process", exitedPid(t), res.Patch, proc.ErrNoProcess},
		{"kernel thread", 2, res.Patch, proc.ErrNotMapped},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ulp.Apply(c.pid, c.p, ulp.Options{StateDir: state})
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			t.Logf("error: %v", err)
		})
	}
	if _, err := ulp.Unpatch(tg.pid, "", ulp.Options{StateDir: state}); !errors.Is(err, ulp.ErrNotApplied) {
		t.Fatalf("unpatch of an unpatched process: %v", err)
	}
	if got := tg.stableMaps(); got != before {
		t.Fatalf("maps changed:\n%s\nvs\n%s", before, got)
	}
	if got := tg.memory(entry, 16); !bytes.Equal(got, code) {
		t.Fatalf("code changed")
	}
	if got := tg.ask("A 5"); got != "6" {
		t.Fatalf("A 5 = %s", got)
	}
}

func exitedPid(t *testing.T) int {
	var a syscall.ProcAttr
	pid, err := syscall.ForkExec("/bin/true", []string{"true"}, &a)
	if err != nil {
		t.Fatal(err)
	}
	var ws syscall.WaitStatus
	syscall.Wait4(pid, &ws, 0, nil)
	return pid
}

// TestStress: 8 threads call value() in tight loops while the patch is
// applied and removed 1,000 times; every call returns the old or the new
// answer and the process never crashes.
func TestStress(t *testing.T) {
	requireHost(t)
	rounds := 1000
	if testing.Short() {
		rounds = 50
	}
	work, state := t.TempDir(), t.TempDir()
	res := buildPatch(t, testdata(t, "workers"), testdata(t, "patches", "workers.patch"), "make -s", "workers", work, 1)
	tg := start(t, nil, res.OrigTarget, "stress", "8")
	opts := ulp.Options{StateDir: state, Timeout: 10 * time.Second}
	var pauses []time.Duration
	attempts := 0
	begin := time.Now()
	for i := 0; i < rounds; i++ {
		r, err := ulp.Apply(tg.pid, res.Patch, opts)
		if err != nil {
			t.Fatalf("round %d: apply: %v", i, err)
		}
		pauses = append(pauses, r.Pause)
		attempts += r.Attempts
		if i == 0 {
			waitNew(t, tg)
		}
		u, err := ulp.Unpatch(tg.pid, "", opts)
		if err != nil {
			t.Fatalf("round %d: unpatch: %v", i, err)
		}
		attempts += u[0].Attempts
	}
	var old, nw, bad int64
	if _, err := fmt.Sscan(tg.ask("c"), &old, &nw, &bad); err != nil {
		t.Fatal(err)
	}
	if bad != 0 || old == 0 || nw == 0 {
		t.Fatalf("calls: %d old, %d new, %d wrong", old, nw, bad)
	}
	t.Logf("%d rounds in %v, %d stops, median apply pause %v; calls: %d old, %d new", rounds, time.Since(begin), attempts, median(pauses), old, nw)
}

func waitNew(t *testing.T, tg *target) {
	var old, nw, bad int64
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(time.Millisecond) {
		fmt.Sscan(tg.ask("c"), &old, &nw, &bad)
		if nw > 0 {
			return
		}
	}
	t.Fatalf("the patched value() never ran: %d old, %d new, %d wrong", old, nw, bad)
}

func median(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

// TestBusy: a thread parked inside spin() makes a short-timeout patch
// fail cleanly with the process unchanged and running; with a longer
// timeout the patch succeeds as soon as the thread leaves.
func TestBusy(t *testing.T) {
	requireHost(t)
	work, state := t.TempDir(), t.TempDir()
	res := buildPatch(t, testdata(t, "workers"), testdata(t, "patches", "workers.patch"), "make -s", "workers", work, 1)
	tg := start(t, nil, res.OrigTarget, "busy")
	entry := symAddr(t, tg, res.OrigTarget, "spin")
	code := tg.memory(entry, 16)
	maps := tg.stableMaps()
	time.Sleep(20 * time.Millisecond) // let the worker enter spin()

	_, err := ulp.Apply(tg.pid, res.Patch, ulp.Options{StateDir: state, Timeout: 200 * time.Millisecond})
	if !errors.Is(err, ulp.ErrBusy) {
		t.Fatalf("apply while parked: got %v, want ErrBusy", err)
	}
	t.Logf("refused as expected: %v", err)
	if !bytes.Equal(tg.memory(entry, 16), code) || tg.stableMaps() != maps {
		t.Fatal("the refused patch changed the process")
	}
	if st := procState(t, tg.pid); st == "t" || st == "T" {
		t.Fatalf("process left stopped (state %s)", st)
	}
	if got := tg.ask("p"); got != "pong" {
		t.Fatalf("process not responding: %q", got)
	}
	if recs, _ := ulp.List(state); len(recs) != 0 {
		t.Fatalf("a refused patch was recorded: %+v", recs)
	}

	var wg sync.WaitGroup
	var r *ulp.Result
	wg.Add(1)
	go func() {
		defer wg.Done()
		r, err = ulp.Apply(tg.pid, res.Patch, ulp.Options{StateDir: state, Timeout: 10 * time.Second})
	}()
	time.Sleep(300 * time.Millisecond)
	if err := syscall.Kill(tg.pid, syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if err != nil {
		t.Fatalf("apply after unparking: %v", err)
	}
	if r.Attempts < 2 {
		t.Fatalf("apply succeeded at once (%d attempts) although the thread was parked", r.Attempts)
	}
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		if got := tg.ask("r"); got == "3" {
			break
		} else if time.Now().After(end) {
			t.Fatalf("spin() still answers %s", got)
		}
	}
	t.Logf("applied after %d attempts", r.Attempts)
}

func procState(t *testing.T, pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	return strings.Fields(s[strings.LastIndexByte(s, ')')+1:])[0]
}

// TestReaderNotPatched: a process that maps the target library only to
// read it (as a checksum or backup tool does) does not run it. --all
// leaves it out, and patching it by pid is refused, so its view of the
// file is never changed by jumps written into it.
func TestReaderNotPatched(t *testing.T) {
	requireHost(t)
	work, state := t.TempDir(), t.TempDir()
	res := buildPatch(t, testdata(t, "calc"), testdata(t, "patches", "libccall.patch"), calcBuild, "libcalc.so", work, 1)
	dir := filepath.Dir(res.OrigTarget)
	reader := filepath.Join(t.TempDir(), "reader")
	if out, err := exec.Command("gcc", "-O2", "-o", reader, testdata(t, "reader.c")).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	rd := start(t, nil, reader, res.OrigTarget)
	sum := rd.ask("s")
	app := start(t, []string{"LD_LIBRARY_PATH=" + dir}, filepath.Join(dir, "app"))

	pids, _, errs, err := ulp.ApplyAll(res.Patch, ulp.Options{StateDir: state})
	if err != nil {
		t.Fatal(err)
	}
	if len(pids) != 1 || pids[0] != app.pid || errs[0] != nil {
		t.Fatalf("ApplyAll patched %v (errors %v), want only the app %d, not the reader %d", pids, errs, app.pid, rd.pid)
	}
	if got := app.ask("A 5"); got != "505" {
		t.Fatalf("app: A 5 = %s", got)
	}
	_, err = ulp.Apply(rd.pid, res.Patch, ulp.Options{StateDir: state})
	if !errors.Is(err, proc.ErrNotMapped) || !strings.Contains(err.Error(), "without execute permission") {
		t.Fatalf("Apply to the reader: %v, want ErrNotMapped naming the read-only mapping", err)
	}
	if got := rd.ask("s"); got != sum {
		t.Errorf("the reader's view of the library changed: checksum %s, was %s", got, sum)
	}
}

// TestAll50: --all patches 50 processes that map the same library, and
// unpatch --all removes it from all of them.
func TestAll50(t *testing.T) {
	requireHost(t)
	work, state := t.TempDir(), t.TempDir()
	res := buildPatch(t, testdata(t, "calc"), testdata(t, "patches", "libccall.patch"), calcBuild, "libcalc.so", work, 1)
	dir := filepath.Dir(res.OrigTarget)
	var tgs []*target
	for i := 0; i < 50; i++ {
		tgs = append(tgs, start(t, []string{"LD_LIBRARY_PATH=" + dir}, filepath.Join(dir, "app")))
	}
	begin := time.Now()
	pids, rs, errs, err := ulp.ApplyAll(res.Patch, ulp.Options{StateDir: state})
	took := time.Since(begin)
	if err != nil {
		t.Fatal(err)
	}
	if len(pids) != 50 {
		t.Fatalf("%d processes map libcalc.so, want 50", len(pids))
	}
	// The command read the targets' unwind tables through mappings of
	// their files; none may outlive it, or this process would look like
	// one more that maps the library (to a watcher, say).
	if self, err := os.ReadFile("/proc/self/maps"); err != nil {
		t.Fatal(err)
	} else if strings.Contains(string(self), "libcalc.so") {
		t.Errorf("after ApplyAll this process still maps libcalc.so:\n%s", self)
	}
	for i := range pids {
		if errs[i] != nil || rs[i] == nil {
			t.Fatalf("pid %d: %v", pids[i], errs[i])
		}
	}
	for _, tg := range tgs {
		if got := tg.ask("A 5"); got != "505" {
			t.Fatalf("pid %d: A 5 = %s", tg.pid, got)
		}
		if got := tg.ask("a 5"); got != "6" {
			t.Fatalf("pid %d: the executable's copy changed: a 5 = %s", tg.pid, got)
		}
	}
	recs, err := ulp.List(state)
	if err != nil || len(recs) != 50 {
		t.Fatalf("list: %d records, %v", len(recs), err)
	}
	urs, uerrs, err := ulp.UnpatchAll("", ulp.Options{StateDir: state})
	if err != nil || len(uerrs) != 0 || len(urs) != 50 {
		t.Fatalf("unpatch --all: %d results, %v, %v", len(urs), uerrs, err)
	}
	for _, tg := range tgs {
		if got := tg.ask("A 5"); got != "6" {
			t.Fatalf("pid %d after unpatch: A 5 = %s", tg.pid, got)
		}
	}
	// An exited process is forgotten.
	if _, err := ulp.Apply(tgs[0].pid, res.Patch, ulp.Options{StateDir: state}); err != nil {
		t.Fatal(err)
	}
	tgs[0].cmd.Process.Kill()
	tgs[0].cmd.Wait()
	if recs, _ := ulp.List(state); len(recs) != 0 {
		t.Fatalf("exited process still listed: %+v", recs)
	}
	t.Logf("--all over 50 processes took %v", took)
}
