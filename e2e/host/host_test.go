package host_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/livefix/livefix/internal/e2etest"
	"github.com/livefix/livefix/internal/kbuild"
	"github.com/livefix/livefix/internal/kerneltest"
	"github.com/livefix/livefix/internal/kernelvm"
)

// guestModules make the disk usable in the guest.
// ext4 needs crc32c (a soft dependency modules.dep does not list).
var guestModules = []string{"virtio_pci", "virtio_blk", "crc32c_generic", "ext4"}

// prelude loads the disk modules, mounts the disk as the state directory
// and defines the helpers every script uses. Checks print "PASS name" or
// "FAIL name detail"; the test requires each expected name exactly once.
const prelude = `
set -u
R=$(uname -r)
P=/root/p
S=/var/lib/livefix
while read m; do insmod "$m" 2>/dev/null; done < /lib/modules/load-order
mkdir -p $S
i=0; while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do usleep 50000; i=$((i+1)); done
mount -t ext4 /dev/vda $S || { echo "FAIL mount cannot mount /dev/vda"; exit 1; }
expect() { if [ "$2" = "$3" ]; then echo "PASS $1"; else echo "FAIL $1 got [$2] want [$3]"; fi; }
has() { case "$2" in *"$3"*) echo "PASS $1";; *) echo "FAIL $1 [$2] lacks [$3]";; esac; }
exists() { if [ -e "$1" ]; then echo yes; else echo no; fi; }
# lvl: the level the kernel runs, from the patched behaviour itself.
lvl() { case "$(cat /proc/cmdline)" in *livefix.host=level2*) echo 2;; *livefix.host=level1*) echo 1;; *) echo 0;; esac; }
statejson() { livefix status --json 2>/dev/null | tr -d ' \n'; }
# reclevel: the level the state file records (0: none).
reclevel() { v=$(statejson | sed -n 's/.*"recorded":{[^}]*"level":\([0-9]*\).*/\1/p'); echo ${v:-0}; }
statesum() { cat $S/kernel/*/state.json 2>/dev/null | md5sum | cut -d' ' -f1; }
up() { cut -d' ' -f1 /proc/uptime; }
us() { awk -v a=$1 -v b=$2 'BEGIN { printf "%d", (b - a) * 1000000 }'; }
`

// scriptA is acceptance 1 and 5, then the power cut of acceptance 2.
const scriptA = prelude + `
C0=$(cat /proc/cmdline)
expect a1_before $(lvl) 0
livefix kernel load $P/lf_host_l1.ko > /tmp/o 2>&1; expect a1_load_l1_rc $? 0; cat /tmp/o
expect a1_l1_behaviour $(lvl) 1
expect a1_l1_uname "$(livefix uname -r)" "$R+livefix1"
expect a1_l1_recorded $(reclevel) 1
livefix kernel load $P/lf_host_l2.ko > /tmp/o 2>&1; expect a1_load_l2_rc $? 0; cat /tmp/o
has a1_l2_replaced "$(cat /tmp/o)" "lf_host_l2 replaced lf_host_l1 atomically"
expect a1_l2_behaviour $(lvl) 2
expect a1_l1_module_gone $(exists /sys/module/lf_host_l1) no
expect a1_l2_recorded $(reclevel) 2
livefix status > /tmp/o 2>&1; expect a1_status_rc $? 0; cat /tmp/o
has a1_status_line "$(cat /tmp/o)" "level 2 (lf_host_l2) applied: effective version $R+livefix2"
expect a1_uname_r "$(livefix uname -r)" "$R+livefix2"
has a1_uname_a "$(livefix uname -a)" " $R+livefix2 "
livefix info > /tmp/o 2>&1; cat /tmp/o
has a1_info_cves "$(cat /tmp/o)" "fixes:     CVE-2026-10001 CVE-2026-10002"
has a1_info_summary "$(cat /tmp/o)" "summary:   livefix host test level 2"
has a1_info_functions "$(cat /tmp/o)" "functions: vmlinux:cmdline_proc_show"
has a1_info_json "$(livefix info --json | tr -d ' \n')" '"level":2,"enabled":true,"recorded":true'
has a1_prometheus "$(livefix status --prometheus)" 'livefix_kernel_applied{release="'$R'"'

# Refusals: one line, exit status, kernel (behaviour) and state file untouched.
S0=$(statesum)
refuse() {
	n=$1; want_rc=$2; text=$3; shift 3
	"$@" > /tmp/r 2>&1; rc=$?
	cat /tmp/r
	expect ${n}_rc $rc $want_rc
	has ${n}_says "$(cat /tmp/r)" "$text"
	expect ${n}_one_line "$(grep -c . /tmp/r)" 1
	expect ${n}_kernel $(lvl) 2
	expect ${n}_state "$(statesum)" "$S0"
}
refuse a5_older 3 "lf_host_l1 is level 1, lower than the applied level 2 (lf_host_l2); nothing was loaded; pass --downgrade" \
	livefix kernel load $P/lf_host_l1.ko
mkdir /tmp/bid /tmp/pair /tmp/bad /tmp/trunc
cp $P/lf_host_l2.ko /tmp/bid/
sed 's/"vmlinux_build_id": "[0-9a-f]*"/"vmlinux_build_id": "0123456789abcdef0123456789abcdef01234567"/' $P/lf_host_l2.json > /tmp/bid/lf_host_l2.json
refuse a5_buildid 3 "was built for kernel build-id 0123456789abcdef0123456789abcdef01234567 but the running kernel has build-id" \
	livefix kernel load /tmp/bid/lf_host_l2.ko
cp $P/lf_host_l2.ko /tmp/pair/lf_host_l2.ko; cp $P/lf_host_l1.json /tmp/pair/lf_host_l2.json
refuse a5_pair 1 "lf_host_l2.json describes live patch lf_host_l1 but the module is lf_host_l2: the .json and the module do not belong together" \
	livefix kernel load --downgrade /tmp/pair/lf_host_l2.ko
cp $P/lf_host_l1.ko $P/lf_host_l1.json /tmp/bad/
dd if=/dev/urandom of=/tmp/bad/lf_host_l1.ko bs=64 count=1 conv=notrunc 2>/dev/null
refuse a5_corrupt 1 "(is it a kernel module?); nothing was loaded" livefix kernel load --downgrade /tmp/bad/lf_host_l1.ko
cp $P/lf_host_l1.json /tmp/trunc/
head -c $(( $(wc -c < $P/lf_host_l1.ko) / 2 )) $P/lf_host_l1.ko > /tmp/trunc/lf_host_l1.ko
refuse a5_truncated 1 "(is it a kernel module?); nothing was loaded" livefix kernel load --downgrade /tmp/trunc/lf_host_l1.ko

# The lock: a second livefix gives up after --lock-timeout and names the
# holder. The holder takes the lock through hoststate (livefix's own lock
# code) and keeps it until told, so the check does not race a command's
# duration; kernel and state must be untouched.
S1="$(statesum)"
lockholder $S /tmp/held /tmp/release &
H=$!
i=0; while [ ! -e /tmp/held ] && [ $i -lt 2000 ]; do usleep 5000; i=$((i+1)); done
livefix kernel load $P/lf_host_l1.ko --lock-timeout 300ms > /tmp/r 2>&1; rc=$?
cat /tmp/r
expect a5_lock_rc $rc 1
has a5_lock_says "$(cat /tmp/r)" "another livefix (pid $H) holds the lock $S/lock; gave up after waiting "
expect a5_lock_one_line "$(grep -c . /tmp/r)" 1
expect a5_lock_kernel $(lvl) 2
expect a5_lock_state "$(statesum)" "$S1"
touch /tmp/release; wait $H
livefix kernel unload --all > /tmp/holder 2>&1; expect a1_unload_all_rc $? 0; cat /tmp/holder
expect a1_unload_all_behaviour "$(cat /proc/cmdline)" "$C0"
expect a1_unload_all_modules "$(ls /sys/kernel/livepatch)" ""
expect a1_unload_all_recorded $(reclevel) 0
livefix status > /dev/null 2>&1; expect a1_unload_all_status_rc $? 3

# Acceptance 2: level 2 applied again, then the power is cut.
livefix kernel load $P/lf_host_l1.ko > /dev/null 2>&1; expect a2_reload_l1_rc $? 0
livefix kernel load $P/lf_host_l2.ko > /dev/null 2>&1; expect a2_reload_l2_rc $? 0
expect a2_before_cut $(lvl) 2
echo POWER-CUT-NOW
sleep 600
`

var checksA = []string{
	"a1_before", "a1_load_l1_rc", "a1_l1_behaviour", "a1_l1_uname", "a1_l1_recorded",
	"a1_load_l2_rc", "a1_l2_replaced", "a1_l2_behaviour", "a1_l1_module_gone", "a1_l2_recorded",
	"a1_status_rc", "a1_status_line", "a1_uname_r", "a1_uname_a",
	"a1_info_cves", "a1_info_summary", "a1_info_functions", "a1_info_json", "a1_prometheus",
	"a5_lock_rc", "a5_lock_says", "a5_lock_one_line", "a5_lock_kernel", "a5_lock_state",
	"a1_unload_all_rc", "a1_unload_all_behaviour", "a1_unload_all_modules", "a1_unload_all_recorded", "a1_unload_all_status_rc",
	"a2_reload_l1_rc", "a2_reload_l2_rc", "a2_before_cut",
}

func init() {
	for _, r := range []string{"a5_older", "a5_buildid", "a5_pair", "a5_corrupt", "a5_truncated"} {
		for _, s := range []string{"_rc", "_says", "_one_line", "_kernel", "_state"} {
			checksA = append(checksA, r+s)
		}
	}
}

// scriptB boots from the disk after the power cut: the config off switch
// and a bad config first, then livefix boot re-applies level 2
// (acceptance 2), then acceptance 4's kill -9 trials: each kills the
// load at a fraction (@FRACTIONS@) of the time a load took in this boot.
const scriptB = prelude + `
livefix status > /tmp/o 2>&1; expect b2_status_before_boot_rc $? 4; cat /tmp/o
has b2_status_before_boot "$(cat /tmp/o)" "level 2 (lf_host_l2) is recorded but not applied in this boot"
mkdir -p /etc/livefix
echo "enabled = false" > /etc/livefix/livefix.conf
livefix boot > /tmp/o 2>&1; expect b2_conf_off_rc $? 6; cat /tmp/o
has b2_conf_off_says "$(cat /tmp/o)" "livefix is off (enabled = false in /etc/livefix/livefix.conf); nothing applied"
expect b2_conf_off_behaviour $(lvl) 0
livefix status > /dev/null 2>&1; expect b2_conf_off_status_rc $? 6
printf '# test\nenabled = true\nenabeld = false\n' > /etc/livefix/livefix.conf
livefix boot > /tmp/o 2>&1; expect b2_conf_bad_rc $? 1; cat /tmp/o
has b2_conf_bad_says "$(cat /tmp/o)" 'line 3: unknown key "enabeld"'
expect b2_conf_bad_behaviour $(lvl) 0
rm /etc/livefix/livefix.conf
t0=$(up); livefix boot > /tmp/o 2>&1; expect b2_boot_rc $? 0; t1=$(up); cat /tmp/o
echo "BOOT-US=$(us $t0 $t1)"
has b2_boot_says "$(cat /tmp/o)" "livefix boot: level 2 (lf_host_l2) applied"
expect b2_behaviour $(lvl) 2
livefix status > /dev/null 2>&1; expect b2_status_rc $? 0
expect b2_uname_r "$(livefix uname -r)" "$R+livefix2"

# Acceptance 4: kill -9 while level 2 loads over level 1.
t0=$(up); livefix kernel load --downgrade $P/lf_host_l1.ko > /dev/null 2>&1; expect b4_base_rc $? 0; t1=$(up)
LOAD_US=$(us $t0 $t1)
echo "LOAD-US=$LOAD_US"
n=0
for f in @FRACTIONS@; do
	n=$((n+1))
	d=$(awk -v f=$f -v t=$LOAD_US 'BEGIN { printf "%d", f * t }')
	livefix kernel load $P/lf_host_l2.ko > /tmp/k 2>&1 &
	pid=$!
	usleep $d
	kill -9 $pid 2>/dev/null
	wait $pid 2>/dev/null
	livefix kernel list > /tmp/rep 2>&1; lrc=$?
	k=$(lvl); s=$(reclevel); j=$(statejson)
	lp=$(ls /sys/kernel/livepatch | tr '\n' ' ')
	echo "trial $n: delay ${d}us kernel level $k state level $s livepatches [$lp] $(grep repaired /tmp/rep)"
	ok=yes
	case "$k" in 1|2) ;; *) ok=no;; esac
	[ "$k" = "$s" ] || ok=no
	[ "$lp" = "lf_host_l$k " ] || ok=no
	mods=$(ls -d /sys/module/lf_host_l* 2>/dev/null | tr '\n' ' ')
	[ "$mods" = "/sys/module/lf_host_l$k " ] || ok=no
	[ "$lrc" = 0 ] || ok=no
	case "$j" in *'"pending"'*) ok=no;; esac
	case "$(cat /sys/kernel/livepatch/lf_host_l$k/transition 2>/dev/null)" in 0) ;; *) ok=no;; esac
	if [ $ok = yes ]; then echo "PASS b4_trial_$n"; else echo "FAIL b4_trial_$n kernel $k state $s [$lp] modules [$mods] $j"; cat /tmp/k /tmp/rep; fi
	if [ "$k" = 2 ]; then livefix kernel load --downgrade $P/lf_host_l1.ko > /tmp/k 2>&1 || { echo "FAIL b4_reset_$n"; cat /tmp/k; }; fi
done
livefix kernel load $P/lf_host_l2.ko > /dev/null 2>&1; expect b4_end_rc $? 0
expect b4_end $(lvl) 2
`

var checksB = []string{
	"b2_status_before_boot_rc", "b2_status_before_boot",
	"b2_conf_off_rc", "b2_conf_off_says", "b2_conf_off_behaviour", "b2_conf_off_status_rc",
	"b2_conf_bad_rc", "b2_conf_bad_says", "b2_conf_bad_behaviour",
	"b2_boot_rc", "b2_boot_says", "b2_behaviour", "b2_status_rc", "b2_uname_r",
	"b4_base_rc", "b4_end_rc", "b4_end",
}

// scriptC boots with livefix=off on the command line (acceptance 2).
const scriptC = prelude + `
livefix boot > /tmp/o 2>&1; expect c2_boot_rc $? 6; cat /tmp/o
has c2_boot_says "$(cat /tmp/o)" "livefix is off (livefix=off on the kernel command line); nothing applied"
expect c2_behaviour $(lvl) 0
expect c2_no_patch "$(ls /sys/kernel/livepatch)" ""
livefix status > /tmp/o 2>&1; expect c2_status_rc $? 6; cat /tmp/o
expect c2_recorded $(reclevel) 2
`

var checksC = []string{"c2_boot_rc", "c2_boot_says", "c2_behaviour", "c2_no_patch", "c2_status_rc", "c2_recorded"}

// scriptD is one boot of acceptance 3. With lfmode=check on the command
// line it first checks what the previous (killed) boot left: the level
// applied, or skipped with the reason; a skipped level is then retried
// inside a kill window. With lfmode=trial it runs livefix boot inside a
// kill window. The host kills qemu at a random moment of the window.
const scriptD = prelude + `
case "$(cat /proc/cmdline)" in *lfmode=check*) mode=check;; *) mode=trial;; esac
if [ $mode = check ]; then
	livefix boot > /tmp/o 2>&1; rc=$?; cat /tmp/o
	k=$(lvl)
	livefix status > /tmp/s 2>&1; src=$?; cat /tmp/s
	if [ $rc = 0 ] && grep -q "level 2 (lf_host_l2) applied" /tmp/o && [ $k = 2 ] && [ $src = 0 ]; then
		echo "CHECK applied"
	elif [ $rc = 4 ] && grep -q "level 2 skipped: the previous boot did not finish loading it" /tmp/o && [ $k = 0 ] && [ $src = 4 ] &&
		grep -q "level 2 skipped: the previous boot did not finish loading it" /tmp/s; then
		echo "CHECK skipped"
		case "$(cat /proc/cmdline)" in *lflast*)
			livefix boot --retry; rc=$?
			if [ $rc = 0 ] && [ $(lvl) = 2 ]; then echo "RETRY applied"; else echo "RETRY failed rc $rc level $(lvl)"; fi
			exit 0;;
		esac
		echo KILL-WINDOW
		livefix boot --retry
		echo BOOT-FINISHED
		sleep 600
	else
		echo "CHECK bad rc $rc level $k status $src"
	fi
	exit 0
fi
echo KILL-WINDOW
livefix boot
echo BOOT-FINISHED
sleep 600
`

// envInt reads a positive integer knob.
func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// killer is a console log that kills the guest at a chosen moment after
// a marker line appears.
type killer struct {
	t      testing.TB
	mu     sync.Mutex
	marker string
	delay  time.Duration
	cancel context.CancelFunc
	fired  bool
	seen   time.Time
}

func (k *killer) Write(p []byte) (int, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if testing.Verbose() {
		k.t.Log(strings.TrimRight(string(p), "\n"))
	}
	if !k.fired && k.marker != "" && bytes.Contains(p, []byte(k.marker)) {
		k.fired = true
		k.seen = time.Now()
		time.AfterFunc(k.delay, k.cancel)
	}
	return len(p), nil
}

type env struct {
	tgt   kbuild.Target
	files map[string]string
	disk  string
}

// boot runs script from the shared disk. With marker set, qemu is killed
// delay after the marker appears; killed reports whether that happened
// (the run then has no exit status).
func (e *env) boot(t testing.TB, script, cmdline, marker string, delay time.Duration) (out string, killed bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	kctx, kill := context.WithCancel(ctx)
	defer kill()
	k := &killer{t: t, marker: marker, delay: delay, cancel: kill}
	cfg := kernelvm.Config{
		Target: e.tgt, Script: script, Files: e.files, Modules: guestModules,
		Disks: []string{e.disk}, Cmdline: cmdline, Memory: 512, Timeout: 6 * time.Minute, Log: k,
	}
	res, err := kernelvm.Run(kctx, cfg)
	if err != nil && res != nil && strings.TrimSpace(res.Console) == "" && !k.fired && ctx.Err() == nil {
		// qemu itself died before the guest printed anything (seen once:
		// a qemu segfault at start on a loaded machine); the disk is
		// untouched, so the boot is repeated once.
		t.Logf("qemu failed before the guest started (%v); booting again", err)
		res, err = kernelvm.Run(kctx, cfg)
	}
	k.mu.Lock()
	fired := k.fired
	k.mu.Unlock()
	if res != nil {
		out = res.Output
	}
	if fired && errors.Is(err, context.Canceled) && ctx.Err() == nil {
		return out, true
	}
	if err != nil {
		t.Fatalf("guest: %v\noutput:\n%s", err, out)
	}
	if marker != "" && strings.Contains(out, marker) {
		t.Fatalf("the guest printed %s but was not killed", marker)
	}
	if res.ExitCode != 0 {
		t.Errorf("guest script exit %d", res.ExitCode)
	}
	return out, false
}

// buildLevels builds levels 1 and 2 with livefix-build kernel. With
// LIVEFIX_HOST_PATCHES=DIR (for iterating on the tests) it copies the
// lf_host_l1/lf_host_l2 .ko and .json built earlier by this function
// instead.
func buildLevels(t testing.TB, livefixBuild, outDir string) {
	t.Helper()
	if dir := os.Getenv("LIVEFIX_HOST_PATCHES"); dir != "" {
		if err := os.MkdirAll(outDir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"lf_host_l1.ko", "lf_host_l1.json", "lf_host_l2.ko", "lf_host_l2.json"} {
			b, err := os.ReadFile(filepath.Join(dir, f))
			if err != nil {
				t.Fatalf("LIVEFIX_HOST_PATCHES: %v", err)
			}
			if err := os.WriteFile(filepath.Join(outDir, f), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		t.Logf("levels 1 and 2 copied from %s (LIVEFIX_HOST_PATCHES)", dir)
		return
	}
	for _, l := range []struct {
		level   string
		cves    []string
		summary string
	}{
		{"1", []string{"CVE-2026-10001"}, "livefix host test level 1"},
		{"2", []string{"CVE-2026-10001", "CVE-2026-10002"}, "livefix host test level 2"},
	} {
		args := []string{"kernel", "--name", "lf_host_l" + l.level, "--level", l.level, "-o", outDir,
			"--patch", filepath.Join("testdata", "level"+l.level+".patch"), "--summary", l.summary}
		for _, c := range l.cves {
			args = append(args, "--cve", c)
		}
		start := time.Now()
		out, err := exec.Command(livefixBuild, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("livefix-build level %s: %v\n%s", l.level, err, out)
		}
		t.Logf("level %s built in %.1fs", l.level, time.Since(start).Seconds())
	}
}

// newDisk makes an empty ext4 image for /var/lib/livefix.
func newDisk(t testing.TB, dir string) string {
	t.Helper()
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		t.Fatalf("mkfs.ext4 not found (e2fsprogs): %v", err)
	}
	disk := filepath.Join(dir, "state.img")
	f, err := os.Create(disk)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(64 << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if out, err := exec.Command(mkfs, "-q", "-F", "-L", "livefix", disk).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	return disk
}

// TestHostAcceptance runs issue 7's acceptance items 1-5 on one disk:
// load levels 1 and 2, status, uname, info, refusals and the lock,
// unload --all (A); a power cut right after level 2 and livefix boot
// re-applying it, the config off switch, and kill -9 trials during a
// load (B); livefix=off on the command line (C); VM kills during livefix
// boot and the crash-loop guard (D).
func TestHostAcceptance(t *testing.T) {
	tgt := kerneltest.RequireVM(t)
	trials := envInt(t, "LIVEFIX_HOST_TRIALS", 20)
	kill9Trials := envInt(t, "LIVEFIX_HOST_KILL9_TRIALS", trials) // acceptance 4
	bootTrials := envInt(t, "LIVEFIX_HOST_BOOT_TRIALS", trials)   // acceptance 3
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("LIVEFIX_HOST_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("LIVEFIX_HOST_SEED=%q: %v", v, err)
		}
		seed = s
	}
	t.Logf("kill -9 trials %d, VM kill trials %d, seed %d (LIVEFIX_HOST_TRIALS, _KILL9_TRIALS, _BOOT_TRIALS, LIVEFIX_HOST_SEED)",
		kill9Trials, bootTrials, seed)
	rng := rand.New(rand.NewPCG(seed, 7))

	tmp := t.TempDir()
	livefix, livefixBuild := e2etest.Tools(t)
	outDir := filepath.Join(tmp, "p")
	buildLevels(t, livefixBuild, outDir)
	// testdata/lockholder is the guest's deterministic holder of the state lock.
	lockholder := filepath.Join(e2etest.Build(t, "e2e/host/testdata/lockholder"), "lockholder")
	e := &env{tgt: tgt, disk: newDisk(t, tmp), files: map[string]string{"/bin/livefix": livefix, "/bin/lockholder": lockholder}}
	for _, n := range []string{"lf_host_l1", "lf_host_l2"} {
		for _, ext := range []string{".ko", ".json"} {
			e.files["/root/p/"+n+ext] = filepath.Join(outDir, n+ext)
		}
	}

	var bootTime time.Duration // a livefix boot's duration, measured in part B
	// Each part needs the disk as the one before left it; a part that
	// fails still leaves it usable, so all parts run.
	t.Run("A load, refusals, lock, unload --all, power cut", func(t *testing.T) {
		start := time.Now()
		out, killed := e.boot(t, scriptA, "", "POWER-CUT-NOW", 0)
		if !killed {
			t.Fatalf("the power cut did not happen; output:\n%s", out)
		}
		e2etest.CheckGuest(t, out, checksA)
		t.Logf("boot A: %s", time.Since(start).Round(time.Second))
	})
	t.Run("B boot after the power cut, config, kill -9 during load", func(t *testing.T) {
		// Kill moments spread over the whole load, as long as one took in
		// the same boot: one random moment in each of kill9Trials equal slices
		// of 1.15 times that.
		var fractions []string
		for i := range kill9Trials {
			fractions = append(fractions, strconv.FormatFloat((float64(i)+rng.Float64())*1.15/float64(kill9Trials), 'f', 4, 64))
		}
		start := time.Now()
		out, _ := e.boot(t, strings.ReplaceAll(scriptB, "@FRACTIONS@", strings.Join(fractions, " ")), "", "", 0)
		if m := regexp.MustCompile(`(?m)^BOOT-US=(\d+)$`).FindStringSubmatch(out); m != nil {
			us, _ := strconv.Atoi(m[1])
			bootTime = time.Duration(us) * time.Microsecond
		}
		want := slices.Clone(checksB)
		for i := 1; i <= kill9Trials; i++ {
			want = append(want, fmt.Sprintf("b4_trial_%d", i))
		}
		e2etest.CheckGuest(t, out, want)
		if t.Failed() {
			t.Logf("guest output:\n%s", out)
		}
		t.Logf("boot B: %s", time.Since(start).Round(time.Second))
	})
	t.Run("C livefix=off", func(t *testing.T) {
		out, _ := e.boot(t, scriptC, "livefix=off", "", 0)
		e2etest.CheckGuest(t, out, checksC)
		if t.Failed() {
			t.Logf("guest output:\n%s", out)
		}
	})
	t.Run("D kills during livefix boot", func(t *testing.T) {
		start := time.Now()
		// Kill moments are spread over 1.3 times a livefix boot's duration
		// measured in part B (4s if it was not), so that some fall after
		// it has finished.
		window := 4 * time.Second
		if bootTime > 0 {
			window = bootTime * 13 / 10
		}
		t.Logf("kill window %s", window.Round(time.Millisecond))
		kills, applied, skipped, boots := 0, 0, 0, 0
		mode := "trial"
		for kills < bootTrials || mode == "check" {
			boots++
			delay := time.Duration((float64(kills) + rng.Float64()) * float64(window) / float64(bootTrials))
			marker, cmdline := "KILL-WINDOW", "lfmode="+mode
			if kills >= bootTrials {
				marker, cmdline = "", cmdline+" lflast" // the last check: no more kills
			}
			out, killed := e.boot(t, scriptD, cmdline, marker, delay)
			if marker == "" && strings.Contains(out, "CHECK skipped") && !strings.Contains(out, "RETRY applied") {
				t.Fatalf("livefix boot --retry did not apply the skipped level:\n%s", out)
			}
			if mode == "check" {
				switch {
				case strings.Contains(out, "CHECK applied"):
					applied++
				case strings.Contains(out, "CHECK skipped"):
					skipped++
				default:
					t.Fatalf("boot %d after kill %d: neither applied nor skipped with the reason:\n%s", boots, kills, out)
				}
			}
			if killed {
				kills++
				t.Logf("kill %d at %s into the window (%s mode)", kills, delay.Round(time.Millisecond), mode)
				mode = "check"
				continue
			}
			if mode == "trial" {
				t.Fatalf("trial boot was not killed:\n%s", out)
			}
			if kills >= bootTrials {
				break
			}
			mode = "trial" // applied: the next boot's livefix boot is the next trial
		}
		t.Logf("%d kills in %d boots: the next boot had the level applied %d times, skipped with the reason %d times (%s)",
			kills, boots, applied, skipped, time.Since(start).Round(time.Second))
	})
}
