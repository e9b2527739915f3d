package kernel_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/livefix/livefix/internal/e2etest"
	"github.com/livefix/livefix/internal/kerneltest"
	"github.com/livefix/livefix/internal/kernelvm"
)

// engineCase is a diff-engine class of issue 11 shown on the Debian
// kernel: a source patch, the running functions its live patch must
// replace, and what `livefix-build kernel --explain` must say about it.
type engineCase struct {
	acceptanceCase
	explain []string // substrings of the --explain output
}

var engineCases = []engineCase{
	{acceptanceCase{name: "lf_kd_dyndbg", patches: []string{"engine-dyndbg.patch"}, changed: []string{"bm_register_write"}},
		[]string{"fs/binfmt_misc.c: patchable", "copied     __UNIQUE_ID_ddebug", "dynamic debug descriptor used by included code"}},
	// Three vmlinux classes in one live patch (one build compiles the
	// three files in parallel): an exported function, a once-flag and a
	// SYSCALL_DEFINE body without an ftrace entry.
	{acceptanceCase{name: "lf_kd_vmlinux", patches: []string{"engine-export.patch", "engine-once.patch", "engine-sys.patch"},
		changed: []string{"__ia32_sys_newuname", "__set_oom_adj.isra.0", "__x64_sys_newuname", "simple_statfs"}},
		[]string{"fs/libfs.c: patchable", "changed    simple_statfs: code changed",
			"fs/proc/base.c: patchable", "copied     __already_done.", "once-flag used by included code",
			"kernel/sys.c: patchable", "escalated  __do_sys_newuname", "replaces its callers: __ia32_sys_newuname, __x64_sys_newuname",
			"changed    __x64_sys_newuname: calls __do_sys_newuname, which changed and has no ftrace entry"}},
	{acceptanceCase{name: "lf_kd_addr_l1", patches: []string{"engine-addr-l1.patch"}, level: 1, changed: []string{"show_stat", "stat_open"}},
		[]string{"fs/proc/stat.c: patchable", "changed    stat_open: code changed", "the address stat_open stores is the original's"}},
	{acceptanceCase{name: "lf_kd_addr_l2", patches: []string{"engine-addr-l2.patch"}, level: 2, changed: []string{"show_stat", "stat_open"}},
		[]string{"fs/proc/stat.c: patchable"}},
}

// engineRefused must be refused, for the reason given, with --explain
// naming the refused symbol.
var engineRefused = []engineCase{
	{acceptanceCase{name: "lf_kd_ops", patches: []string{"engine-ops.patch"},
		refusal: []string{"proc_stat_init", "init code changed", "uses changed read-only stat_proc_ops"}},
		[]string{"fs/proc/stat.c: refused", "refused    proc_stat_init:", "changed data stat_proc_ops: changed read-only data; used by proc_stat_init"}},
}

// buildExplained runs `livefix-build kernel --explain` for c into outDir.
func buildExplained(ctx context.Context, t *testing.T, livefixBuild string, c engineCase, outDir string) (string, int) {
	t.Helper()
	args := []string{"kernel", "--explain", "--name", c.name, "-o", outDir}
	for _, p := range c.patches {
		args = append(args, "--patch", patchPath(p))
	}
	if c.level > 0 {
		args = append(args, "--level", strconv.Itoa(c.level))
	}
	out, err := exec.CommandContext(ctx, livefixBuild, args...).CombinedOutput()
	code := 0
	if err != nil {
		code = -1
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
	}
	return string(out), code
}

// TestEngineClasses proves issue 11's diff-engine classes on the Debian
// kernel: each case is built with `livefix-build kernel --explain`, then
// all run in one boot of the packaged kernel: behaviour before, load,
// patched behaviour, disable, original behaviour back, unload.
//   - dynamic debug: the patch's own pr_debug descriptors, listed in
//     dynamic_debug/control under the patch module and printing when
//     enabled there;
//   - an exported function, called from vmlinux (debugfs) and from a
//     module (binfmt_misc) through the export;
//   - a once-flag: the patch's warning prints once, although the running
//     kernel's flag is already set;
//   - a SYSCALL_DEFINE body without an ftrace entry, through its callers;
//   - an address-taken function across a level replace: a /proc/stat
//     opened under level 1 (its seq_file holds the show function that
//     level 1's stat_open stored) reads through level 2 after level 1's
//     module is gone;
//   - changed read-only data reached only through an ops table: refused.
func TestEngineClasses(t *testing.T) {
	tgt := kerneltest.RequireVM(t)
	// Five builds of a few files each; on a loaded 2-core machine one
	// build can take several minutes.
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Minute)
	defer cancel()
	tmp := t.TempDir()
	livefix, livefixBuild := e2etest.Tools(t)
	outDir := filepath.Join(tmp, "patches")

	// Compared with runs of spaces folded: the verdict column's width is
	// the golden files' business.
	fold := func(s string) string { return strings.Join(strings.Fields(s), " ") }
	checkExplain := func(c engineCase, out string) {
		for _, want := range c.explain {
			if !strings.Contains(fold(out), fold(want)) {
				t.Errorf("%s: --explain output does not say %q", c.name, want)
			}
		}
	}
	for _, c := range engineRefused {
		out, code := buildExplained(ctx, t, livefixBuild, c, outDir)
		t.Logf("%s: exit %d\n%s", c.name, code, out)
		if code != 3 {
			t.Errorf("%s: livefix-build kernel exit %d, want 3 (refused)", c.name, code)
		}
		for _, r := range c.refusal {
			if !strings.Contains(out, r) {
				t.Errorf("%s: output does not say %q", c.name, r)
			}
		}
		checkExplain(c, out)
		if _, err := os.Stat(filepath.Join(outDir, c.name+".ko")); err == nil {
			t.Errorf("%s: a module was written despite the refusal", c.name)
		}
	}
	for _, c := range engineCases {
		start := time.Now()
		out, code := buildExplained(ctx, t, livefixBuild, c, outDir)
		if code != 0 {
			t.Fatalf("%s: livefix-build kernel exit %d:\n%s", c.name, code, out)
		}
		t.Logf("%s built in %.1fs:\n%s", c.name, time.Since(start).Seconds(), out)
		checkExplain(c, out)
		checkManifest(t, c.acceptanceCase, filepath.Join(outDir, c.name+".json"), tgt.Release)
	}
	if t.Failed() {
		t.FailNow()
	}

	files := map[string]string{"/bin/livefix": livefix}
	for _, c := range engineCases {
		for _, ext := range []string{".ko", ".json"} {
			files["/root/p/"+c.name+ext] = filepath.Join(outDir, c.name+ext)
		}
	}
	res, err := kernelvm.Run(ctx, kernelvm.Config{
		Target:  tgt,
		Script:  engineScript,
		Files:   files,
		Modules: []string{"binfmt_misc"},
		Timeout: 10 * time.Minute,
		Log:     e2etest.GuestLog(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	if testing.Verbose() || t.Failed() {
		t.Logf("guest output:\n%s", res.Output)
	}
	checkGuestResults(t, res.Output, res.ExitCode, engineChecks)
	for _, oops := range []string{"BUG: unable to handle", "general protection fault", "Oops:"} {
		if strings.Contains(res.Console, oops) {
			t.Errorf("the guest kernel says %q:\n%s", oops, res.Console)
		}
	}
	t.Logf("guest ran in %s", res.Duration.Round(time.Second))
}

// engineScript runs in the guest; see acceptanceScript for the helpers.
const engineScript = e2etest.GuestShell + `
P=/root/p
load() { livefix kernel load --timeout 120s $P/$1.ko; }
disable() { livefix kernel disable --timeout 120s $1; }
unload() { livefix kernel unload --timeout 120s $1; }
count() { dmesg | grep -c "$1"; }
CTL=/sys/kernel/debug/dynamic_debug/control

mkdir -p /tmp/bm
t dd/insmod insmod /lib/modules/binfmt_misc.ko
t dd/mount mount -t binfmt_misc none /tmp/bm

echo "== one patch: an exported function (simple_statfs, called from vmlinux and from a module),"
echo "== a once-flag (pr_warn_once in __set_oom_adj), a SYSCALL_DEFINE body without ftrace entry (newuname)"
C=lf_kd_vmlinux
namelen() { stat -f -c %l "$1"; }
ow() { echo 0 > /proc/self/oom_adj; }
orig() { dmesg | grep 'oom_adj is deprecated' | grep -vc livefix.once; }
t export/before-module eq "$(namelen /tmp/bm)" 255
t export/before-vmlinux eq "$(namelen /sys/kernel/debug)" 255
ow; ow
t once/before eq "$(orig)" 1
t once/before-patch eq "$(count livefix.once)" 0
t sys/before hasnt "$(uname -v)" livefix.sys
t vmlinux/load load $C
t export/after-module eq "$(namelen /tmp/bm)" 252
t export/after-vmlinux eq "$(namelen /sys/kernel/debug)" 252
ow; ow; ow
t once/after eq "$(count livefix.once)" 1
t once/after-orig eq "$(orig)" 1
t sys/after eq "$(uname -v)" livefix.sys
t sys/release eq "$(uname -r)" "$(cat /proc/sys/kernel/osrelease)"
t vmlinux/disable disable $C
t export/rollback eq "$(namelen /tmp/bm)" 255
ow
t once/rollback eq "$(count livefix.once)" 1
t once/rollback-orig eq "$(orig)" 1
t sys/rollback hasnt "$(uname -v)" livefix.sys
t vmlinux/unload unload $C
t vmlinux/gone gone $C
echo "== an address-taken function across a level replace (show_stat)"
C1=lf_kd_addr_l1; C2=lf_kd_addr_l2
t addr/before hasnt "$(cat /proc/stat)" livefix.addr
t addr/load-l1 load $C1
t addr/l1 has "$(cat /proc/stat)" livefix.addr1
exec 3</proc/stat
t addr/load-l2 load $C2
t addr/l1-replaced gone $C1
t addr/pending-read has "$(cat <&3)" livefix.addr2
exec 3<&-
t addr/l2 has "$(cat /proc/stat)" livefix.addr2
t addr/disable disable $C2
t addr/rollback hasnt "$(cat /proc/stat)" livefix.addr
t addr/unload unload $C2
t addr/gone gone $C2
echo "== dynamic debug: the patch's own descriptors (binfmt_misc)"
C=lf_kd_dyndbg
reg() { echo ":$1:E::$1::/bin/true:" > /tmp/bm/register; }
t dd/before reg lfbad1
t dd/before-control eq "$(grep -c livefix.dd $CTL)" 0
t dd/load load $C
t dd/after not reg lfbad2
t dd/after-other reg lfok2
grep livefix.dd $CTL
t dd/control has "$(grep livefix.dd $CTL)" "[$C]"
t dd/enable sh -c "echo 'format livefix.dd +p' > $CTL"
t dd/enabled has "$(grep livefix.dd $CTL)" "=p"
reg lfok3
t dd/prints has "$(dmesg | grep 'livefix.dd checking')" "livefix.dd checking"
t dd/originals [ "$(grep -c '\[binfmt_misc\]' $CTL)" -ge 10 ]
t dd/disable disable $C
t dd/rollback reg lfbad3
t dd/unload unload $C
t dd/gone gone $C
t dd/control-gone eq "$(grep -c livefix.dd $CTL)" 0

echo -1 > /tmp/bm/status
umount /tmp/bm
t export/rmmod rmmod binfmt_misc
t end/none-left eq "$(ls /sys/kernel/livepatch)" ""
`

// engineChecks are the names the guest must report as passed.
var engineChecks = []string{
	"dd/insmod", "dd/mount", "dd/before", "dd/before-control", "dd/load", "dd/after", "dd/after-other", "dd/control",
	"dd/enable", "dd/enabled", "dd/prints", "dd/originals", "dd/disable", "dd/rollback", "dd/unload", "dd/gone", "dd/control-gone",
	"export/before-module", "export/before-vmlinux", "once/before", "once/before-patch", "sys/before", "vmlinux/load",
	"export/after-module", "export/after-vmlinux", "once/after", "once/after-orig", "sys/after", "sys/release",
	"vmlinux/disable", "export/rollback", "once/rollback", "once/rollback-orig", "sys/rollback", "vmlinux/unload", "vmlinux/gone",
	"export/rmmod",
	"addr/before", "addr/load-l1", "addr/l1", "addr/load-l2", "addr/l1-replaced", "addr/pending-read", "addr/l2",
	"addr/disable", "addr/rollback", "addr/unload", "addr/gone",
	"end/none-left",
}
