package klp

import (
	"bytes"
	"context"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/livefix/livefix/elfobj"
	"github.com/livefix/livefix/internal/kbuild"
	"github.com/livefix/livefix/internal/kerneltest"
	"github.com/livefix/livefix/internal/kernelvm"
)

type testLog struct{ t testing.TB }

func (w testLog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// vmScript checks, in one boot: the forged-build-id module is refused
// with a clear message; the real one loads, its transition completes,
// /proc/cmdline carries the new text (a string change reading the
// unexported saved_command_line), /proc/consoles shows that the patched
// show_console_dev found the right one of three static c_next functions
// (sympos 2) and called the unexported nr_running; disabling and rmmod
// bring the original behaviour back.
const vmScript = `set -u
fail() { echo "FAIL: $*"; dmesg | tail -20; exit 1; }
wait_gone_or_done() {
	i=0
	while [ -e /sys/kernel/livepatch/$1/transition ] && [ "$(cat /sys/kernel/livepatch/$1/transition)" != 0 ]; do
		i=$((i+1)); [ $i -gt 600 ] && fail "transition of $1 did not finish"
		sleep 0.1
	done
}
echo "notes: $(od -An -tx1 -v /sys/kernel/notes | tr -d ' \n')"
before=$(cat /proc/cmdline)
case "$before" in *livefix-patched*) fail "cmdline patched before loading";; esac
grep -q livefix /proc/consoles && fail "consoles patched before loading"
if insmod /root/lfk1forged.ko 2>/tmp/err; then fail "module with a forged build-id loaded"; fi
echo "forged insmod: $(cat /tmp/err)"
dmesg | grep "lfk1forged: built for the kernel with build-id" || fail "no build-id refusal in dmesg"
[ -e /sys/kernel/livepatch/lfk1forged ] && fail "forged patch registered"
insmod /root/lfk1.ko || fail "insmod lfk1.ko"
wait_gone_or_done lfk1
echo "enabled: $(cat /sys/kernel/livepatch/lfk1/enabled)"
echo "funcs: $(ls /sys/kernel/livepatch/lfk1/vmlinux | tr '\n' ' ')"
after=$(cat /proc/cmdline)
echo "after: $after"
[ "$after" = "livefix-patched $before" ] || fail "cmdline not patched: $after"
cat /proc/consoles
grep -q "livefix:sympos-ok:running" /proc/consoles || fail "consoles not patched as expected"
echo 0 > /sys/kernel/livepatch/lfk1/enabled || fail "disable"
wait_gone_or_done lfk1
i=0
while [ -e /sys/kernel/livepatch/lfk1 ]; do i=$((i+1)); [ $i -gt 600 ] && fail "patch not freed"; sleep 0.1; done
[ "$(cat /proc/cmdline)" = "$before" ] || fail "cmdline not restored: $(cat /proc/cmdline)"
grep -q livefix /proc/consoles && fail "consoles not restored"
rmmod lfk1 || fail "rmmod"
grep -q "^lfk1 " /proc/modules && fail "module still loaded"
echo ALL-OK
`

// TestLivepatchInVM builds the cmdline and consoles patches into one
// module with FromPatches, a second one with a forged build-id with Build,
// and checks both in one boot of the packaged kernel.
func TestLivepatchInVM(t *testing.T) {
	tgt := kerneltest.RequireVM(t)
	ctx := context.Background()
	out := t.TempDir()
	work := t.TempDir()
	m, err := FromPatches(ctx, Request{
		Name: "lfk1", Target: tgt, OutDir: out, WorkDir: work, Log: testLog{t},
		Patches: []string{"testdata/cmdline.patch", "testdata/consoles.patch"},
		OnStep:  func(s Step) { t.Logf("step %-13s %6.1fs %s", s.Name, s.Seconds, s.Detail) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Objects) != 1 || m.Objects[0].Name != "vmlinux" || len(m.Objects[0].Functions) != 2 {
		t.Fatalf("manifest objects = %+v, want vmlinux with cmdline_proc_show and show_console_dev", m.Objects)
	}
	for _, name := range []string{"lfk1.ko", "lfk1.json"} {
		if _, err := os.Stat(filepath.Join(out, name)); err != nil {
			t.Fatal(err)
		}
	}
	ko, err := elfobj.Open(filepath.Join(out, "lfk1.ko"))
	if err != nil {
		t.Fatal(err)
	}
	var klpSyms []string
	for _, s := range ko.Symbols[1:] {
		if s.Shndx == elfobj.SHNLivepatch {
			klpSyms = append(klpSyms, s.Name)
		}
	}
	if !strings.Contains(strings.Join(klpSyms, " "), ".klp.sym.vmlinux.c_next,2") {
		t.Errorf("livepatch symbols %v lack .klp.sym.vmlinux.c_next,2", klpSyms)
	}

	// The forged module: same diff results, another expected build-id.
	objects := rediff(t, tgt, filepath.Join(work, "objects"))
	want, err := hex.DecodeString(m.BuildID)
	if err != nil {
		t.Fatal(err)
	}
	forged := append([]byte(nil), want...)
	forged[len(forged)-1] ^= 0xff
	if _, err := Build(ctx, Spec{Name: "lfk1forged", Target: tgt, Objects: objects, BuildID: forged}, out, testLog{t}); err != nil {
		t.Fatal(err)
	}

	res, err := kernelvm.Run(ctx, kernelvm.Config{
		Target:  tgt,
		Script:  vmScript,
		Files:   map[string]string{"/root/lfk1.ko": filepath.Join(out, "lfk1.ko"), "/root/lfk1forged.ko": filepath.Join(out, "lfk1forged.ko")},
		Timeout: 4 * time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("guest (%v):\n%s", res.Duration.Round(time.Millisecond), res.Output)
	if res.ExitCode != 0 || !strings.Contains(res.Output, "ALL-OK") {
		t.Fatalf("guest script failed (status %d); console tail:\n%s", res.ExitCode, tailLines(res.Console, 40))
	}
	_, notes, _ := strings.Cut(res.Output, "notes: ")
	notes, _, _ = strings.Cut(notes, "\n")
	raw, err := hex.DecodeString(notes)
	if err != nil {
		t.Fatalf("guest notes %q: %v", notes, err)
	}
	if got := noteID(raw); !bytes.Equal(got, want) {
		t.Errorf("guest kernel build-id %x, manifest says %x", got, want)
	}
}

// rediff diffs the objects FromPatches kept under dir.
func rediff(t *testing.T, tgt kbuild.Target, dir string) []Object {
	t.Helper()
	var pairs []kbuild.ObjectPair
	for _, src := range []string{"fs/proc/cmdline.c", "fs/proc/consoles.c"} {
		o := strings.TrimSuffix(src, ".c") + ".o"
		pairs = append(pairs, kbuild.ObjectPair{Source: src, Orig: filepath.Join(dir, "orig", o), Patched: filepath.Join(dir, "patched", o)})
	}
	tree := t.TempDir() // no Makefiles: both files are not in modules.order, so vmlinux
	objs, err := diffPairs(context.Background(), tree, filepath.Dir(tgt.Headers), pairs, map[string]string{})
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
