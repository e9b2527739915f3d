package kernelpatch_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/livefix/livefix/internal/kerneltest"
	"github.com/livefix/livefix/internal/kernelvm"
)

type logWriter struct{ t testing.TB }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// buildLivefix builds the static livefix binary that runs in the guest.
func buildLivefix(t *testing.T, dir string) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go not on PATH: %v", err)
	}
	out := filepath.Join(dir, "livefix")
	cmd := exec.Command(goBin, "build", "-trimpath", "-o", out, "github.com/livefix/livefix/cmd/livefix")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build livefix: %v\n%s", err, b)
	}
	return out
}

// guestScript drives `livefix kernel` through every outcome in one boot.
// It prints KEY=VALUE lines that the test checks; command output goes in
// between for the log.
const guestScript = `
M=/root/m
R=$(uname -r)
say() { echo "$1=$2"; }
exists() { if [ -e "$1" ]; then echo yes; else echo no; fi; }
meta() { printf '{"name":"%s","release":"%s","build_id":"%s","level":%s}\n' "$1" "$2" "$3" "$4" > /tmp/$1.json; }
cp $M/lf_sample1.ko $M/lf_sample2.ko $M/lf_sample_block.ko /tmp/
BID=$(livefix kernel version --json | sed -n 's/.*"build_id":"\([0-9a-f]*\)".*/\1/p')
say bid_len ${#BID}
say version0 "$(livefix kernel version)"
say cmdline0 "$(cat /proc/cmdline)"

meta lf_sample1 1.2.3-other "$BID" 1
livefix kernel load /tmp/lf_sample1.ko; say bad_release_rc $?
say bad_release_loaded $(exists /sys/module/lf_sample1)
meta lf_sample1 "$R" 0123456789abcdef0123456789abcdef01234567 1
livefix kernel load /tmp/lf_sample1.ko; say bad_buildid_rc $?
say bad_buildid_loaded $(exists /sys/module/lf_sample1)
livefix kernel load $M/lf_block.ko; say not_livepatch_rc $?
say not_livepatch_loaded $(exists /sys/module/lf_block)

meta lf_sample1 "$R" "$BID" 1
livefix kernel load --timeout 30s /tmp/lf_sample1.ko; say load1_rc $?
say cmdline1 "$(cat /proc/cmdline)"
say version1 "$(livefix kernel version)"
livefix kernel list
say list1 "$(livefix kernel list --json | tr -d ' \n')"
livefix kernel load /tmp/lf_sample1.ko; say again_rc $?

meta lf_sample2 "$R" "$BID" 2
livefix kernel load /tmp/lf_sample2.ko; say load2_rc $?
say cmdline2 "$(cat /proc/cmdline)"
say version2 "$(livefix kernel version)"
say l1_patch_after_l2 $(exists /sys/kernel/livepatch/lf_sample1)
say l1_module_after_l2 $(exists /sys/module/lf_sample1)
livefix kernel list

livefix kernel disable lf_sample2; say disable2_rc $?
say cmdline3 "$(cat /proc/cmdline)"
say version3 "$(livefix kernel version)"
say l2_patch_after_disable $(exists /sys/kernel/livepatch/lf_sample2)
livefix kernel disable lf_sample2; say disable_again_rc $?
livefix kernel unload lf_sample2; say unload2_rc $?
say l2_module_after_unload $(exists /sys/module/lf_sample2)
livefix kernel unload lf_sample2; say unload_again_rc $?

insmod $M/lf_block.ko; say insmod_block_rc $?
cat /proc/lf_block > /tmp/blocked.out 2>&1 &
BLK=$!
sleep 1
livefix kernel load --timeout 3s /tmp/lf_sample_block.ko > /tmp/block.log 2>&1; say block_rc $?
cat /tmp/block.log
if grep -q 'rolled back' /tmp/block.log; then say block_says_rolled_back yes; else say block_says_rolled_back no; fi
if grep -q "cat\[$BLK\]" /tmp/block.log; then say block_names_task yes; else say block_names_task no; fi
say block_patch_after $(exists /sys/kernel/livepatch/lf_sample_block)
say block_module_after $(exists /sys/module/lf_sample_block)
echo go > /proc/lf_block
wait $BLK
say blocked_read "$(cat /tmp/blocked.out)"

livefix kernel load --timeout 30s --json /tmp/lf_sample_block.ko > /tmp/block.json; say block2_rc $?
say block2_outcome "$(sed -n 's/.*"outcome": "\([a-z ]*\)".*/\1/p' /tmp/block.json)"
if cat /proc/lf_block > /dev/null 2>&1; then say patched_read ok; else say patched_read error; fi
livefix kernel unload lf_sample_block; say unload_block_rc $?
if cat /proc/lf_block > /dev/null 2>&1; then say unpatched_read ok; else say unpatched_read error; fi
rmmod lf_block; say rmmod_block_rc $?
say version_end "$(livefix kernel version)"
say cmdline_end "$(cat /proc/cmdline)"
`

// TestHostCommandsInVM runs livefix kernel load/list/disable/unload/version
// in the packaged kernel against hand-written live patch modules (built
// here, independent of livefix-build): compatibility refusals, apply,
// cumulative replace, disable, unload, and the rollback of a transition
// that a task blocks.
func TestHostCommandsInVM(t *testing.T) {
	tgt := kerneltest.RequireVM(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	tmp := t.TempDir()
	modDir := filepath.Join(tmp, "m")
	if err := os.MkdirAll(modDir, 0o755); err != nil {
		t.Fatal(err)
	}
	srcs, _ := filepath.Glob("testdata/modules/*")
	for _, s := range srcs {
		b, err := os.ReadFile(s)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(modDir, filepath.Base(s)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := tgt.BuildModule(ctx, modDir, logWriter{t}); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{"/bin/livefix": buildLivefix(t, tmp)}
	for _, m := range []string{"lf_block", "lf_sample1", "lf_sample2", "lf_sample_block"} {
		files["/root/m/"+m+".ko"] = filepath.Join(modDir, m+".ko")
	}
	res, err := kernelvm.Run(ctx, kernelvm.Config{Target: tgt, Script: guestScript, Files: files, Timeout: 8 * time.Minute})
	if res != nil {
		t.Logf("guest output:\n%s", res.Output)
	}
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, line := range strings.Split(res.Output, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && !strings.ContainsAny(k, " \t") {
			got[k] = v
		}
	}
	release := tgt.Release
	cmdline0 := got["cmdline0"]
	if cmdline0 == "" || strings.Contains(cmdline0, "lf_sample") {
		t.Fatalf("cmdline before any patch = %q", cmdline0)
	}
	want := []struct{ key, value string }{
		{"bid_len", "40"},
		{"version0", release},
		{"bad_release_rc", "3"}, {"bad_release_loaded", "no"},
		{"bad_buildid_rc", "3"}, {"bad_buildid_loaded", "no"},
		{"not_livepatch_rc", "1"}, {"not_livepatch_loaded", "no"},
		{"load1_rc", "0"}, {"cmdline1", "lf_sample1 was here"}, {"version1", release + "+livefix1"},
		{"again_rc", "1"},
		{"load2_rc", "0"}, {"cmdline2", "lf_sample2 was here"}, {"version2", release + "+livefix2"},
		{"l1_patch_after_l2", "no"}, {"l1_module_after_l2", "no"},
		{"disable2_rc", "0"}, {"cmdline3", cmdline0}, {"version3", release}, {"l2_patch_after_disable", "no"},
		{"disable_again_rc", "1"},
		{"unload2_rc", "0"}, {"l2_module_after_unload", "no"}, {"unload_again_rc", "1"},
		{"insmod_block_rc", "0"},
		{"block_rc", "1"}, {"block_says_rolled_back", "yes"}, {"block_names_task", "yes"},
		{"block_patch_after", "no"}, {"block_module_after", "no"},
		{"blocked_read", "released"},
		{"block2_rc", "0"}, {"block2_outcome", "applied"}, {"patched_read", "error"},
		{"unload_block_rc", "0"}, {"unpatched_read", "ok"}, {"rmmod_block_rc", "0"},
		{"version_end", release}, {"cmdline_end", cmdline0},
	}
	for _, w := range want {
		if v, ok := got[w.key]; !ok || v != w.value {
			t.Errorf("%s = %q, want %q", w.key, v, w.value)
		}
	}
	for _, s := range []string{`"name":"lf_sample1"`, `"enabled":true`, `"level":1`, `"name":"cmdline_proc_show"`, `"name":"vmlinux"`} {
		if !strings.Contains(got["list1"], s) {
			t.Errorf("list --json after load 1 lacks %s: %s", s, got["list1"])
		}
	}
}
