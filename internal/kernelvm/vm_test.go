package kernelvm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/livefix/livefix/internal/kerneltest"
)

type logWriter struct{ t testing.TB }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func TestRunExitCode(t *testing.T) {
	tgt := kerneltest.RequireVM(t)
	res, err := Run(context.Background(), Config{
		Target: tgt,
		Script: "uname -r\necho to-stderr >&2\nexit 7\n",
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("boot, script and poweroff: %v", res.Duration.Round(time.Millisecond))
	if res.ExitCode != 7 {
		t.Errorf("ExitCode = %d, want 7", res.ExitCode)
	}
	if res.Output != tgt.Release+"\nto-stderr\n" {
		t.Errorf("Output = %q, want the release and the stderr line", res.Output)
	}
	if !strings.Contains(res.Console, "LIVEFIX-START-") {
		t.Errorf("Console lacks the start marker:\n%s", res.Console)
	}
}

func TestRunFilesAndModules(t *testing.T) {
	tgt := kerneltest.RequireVM(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "data.txt")
	if err := os.WriteFile(data, []byte("hello from the host\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	tree := filepath.Join(dir, "tree")
	if err := os.MkdirAll(filepath.Join(tree, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tree, "sub", "run.sh"), []byte("#!/bin/sh\necho tool ran\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	script := `set -e
cat /data/in.txt
stat -c %a /data/in.txt
/opt/tree/sub/run.sh
ip -o link show lo | grep -q 'UP' && echo lo up
grep -q ' /sys/kernel/debug debugfs ' /proc/mounts && echo debugfs
for m in $(cat ` + LoadOrderPath + `); do insmod "$m"; done
grep -o '^vsock_loopback' /proc/modules
`
	res, err := Run(context.Background(), Config{
		Target:  tgt,
		Script:  script,
		Files:   map[string]string{"/data/in.txt": data, "/opt/tree": tree},
		Modules: []string{"vsock_loopback"},
		Log:     logWriter{t},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := "hello from the host\n640\ntool ran\nlo up\ndebugfs\nvsock_loopback\n"
	if res.ExitCode != 0 || res.Output != want {
		t.Errorf("exit %d, output %q; want 0, %q", res.ExitCode, res.Output, want)
	}
}

func TestRunTimeoutKillsQemu(t *testing.T) {
	tgt := kerneltest.RequireVM(t)
	var pid int
	onStart = func(p int) { pid = p }
	defer func() { onStart = func(int) {} }()
	start := time.Now()
	res, err := Run(context.Background(), Config{
		Target:  tgt,
		Script:  "echo sleeping\nsleep 1000\n",
		Timeout: 20 * time.Second,
	})
	elapsed := time.Since(start)
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
	t.Logf("returned after %v", elapsed.Round(time.Millisecond))
	if elapsed > 30*time.Second {
		t.Errorf("Run took %v with a 20s timeout", elapsed)
	}
	if !strings.Contains(err.Error(), "sleeping") || res == nil || !strings.Contains(res.Console, "sleeping") {
		t.Errorf("error lacks the output so far: %v", err)
	}
	if pid == 0 {
		t.Fatal("qemu pid not seen")
	}
	if err := syscall.Kill(-pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("qemu process group %d still exists (kill: %v)", pid, err)
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	tgt := kerneltest.RequireVM(t)
	ctx := context.Background()
	if _, err := Run(ctx, Config{Target: tgt, Files: map[string]string{"relative": "/etc/hostname"}}); err == nil {
		t.Error("relative guest path accepted")
	}
	if _, err := Run(ctx, Config{Target: tgt, Files: map[string]string{"/init": "/etc/hostname"}}); err == nil {
		t.Error("/init override accepted")
	}
	if _, err := Run(ctx, Config{Target: tgt, Files: map[string]string{"/x": "/nonexistent/file"}}); err == nil {
		t.Error("missing host file accepted")
	}
	if _, err := Run(ctx, Config{Target: tgt, Modules: []string{"no_such_module_here"}}); err == nil ||
		!strings.Contains(err.Error(), "no_such_module_here") {
		t.Errorf("unknown module: %v", err)
	}
}

// TestLivepatchSmoke proves the whole path a live patch takes: a klp
// module built against the packaged headers loads into the packaged
// kernel, transitions, changes behaviour, and unloads cleanly.
func TestLivepatchSmoke(t *testing.T) {
	tgt := kerneltest.RequireVM(t)
	ctx := context.Background()

	src := t.TempDir()
	for _, f := range []string{"Kbuild", "livefix_klp_smoke.c"} {
		b, err := os.ReadFile(filepath.Join("testdata", "klp-smoke", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	if err := tgt.BuildModule(ctx, src, logWriter{t}); err != nil {
		t.Fatal(err)
	}
	t.Logf("phase build-module: %.1fs", time.Since(start).Seconds())

	const name = "livefix_klp_smoke"
	script := `set -e
d=/sys/kernel/livepatch/` + name + `
up() { cut -d' ' -f1 /proc/uptime; }
# wait_for COND: poll for up to 30 s
wait_for() {
	i=0
	until eval "$1"; do
		i=$((i+1))
		[ $i -lt 300 ] || { echo "timed out waiting for: $1"; exit 20; }
		sleep 0.1
	done
}
echo "phase start $(up)"
orig=$(cat /proc/cmdline)
echo "orig: $orig"
insmod /root/` + name + `.ko
echo "phase loaded $(up)"
wait_for '[ "$(cat $d/transition)" = 0 ]'
echo "phase patched $(up)"
echo "enabled: $(cat $d/enabled)"
echo "patched: $(cat /proc/cmdline)"
echo 0 > $d/enabled
wait_for '[ ! -e $d ]'
echo "phase unpatched $(up)"
rmmod ` + name + `
echo "phase unloaded $(up)"
echo "restored: $(cat /proc/cmdline)"
[ "$(cat /proc/cmdline)" = "$orig" ] || exit 21
grep -q ` + name + ` /proc/modules && exit 22
exit 0
`
	start = time.Now()
	res, err := Run(ctx, Config{
		Target:  tgt,
		Script:  script,
		Files:   map[string]string{"/root/" + name + ".ko": filepath.Join(src, name+".ko")},
		Cmdline: "livefix.smoke=1",
		Log:     logWriter{t},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("phase vm-total: %.1fs (boot to poweroff)", time.Since(start).Seconds())
	if res.ExitCode != 0 {
		t.Fatalf("guest script failed with %d:\n%s", res.ExitCode, res.Output)
	}
	lines := map[string]string{}
	phases := map[string]float64{}
	for _, l := range strings.Split(res.Output, "\n") {
		k, v, _ := strings.Cut(l, ": ")
		lines[k] = v
		if f := strings.Fields(l); len(f) == 3 && f[0] == "phase" {
			phases[f[1]], _ = strconv.ParseFloat(f[2], 64)
		}
	}
	if !strings.Contains(lines["orig"], "livefix.smoke=1") {
		t.Errorf("original /proc/cmdline %q lacks the boot argument", lines["orig"])
	}
	if lines["patched"] != "livefix-smoke: patched" || lines["enabled"] != "1" {
		t.Errorf("while patched: /proc/cmdline %q, enabled %q", lines["patched"], lines["enabled"])
	}
	if lines["restored"] != lines["orig"] {
		t.Errorf("after unpatching: %q, want %q", lines["restored"], lines["orig"])
	}
	for _, p := range [][2]string{{"start", "loaded"}, {"loaded", "patched"}, {"patched", "unpatched"}, {"unpatched", "unloaded"}} {
		t.Logf("phase %s -> %s: %s", p[0], p[1], fmt.Sprintf("%.2fs", phases[p[1]]-phases[p[0]]))
	}
	t.Logf("phase guest boot (kernel start to script start): %.2fs", phases["start"])
}
