package kernel_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/livefix/livefix/internal/e2etest"
	"github.com/livefix/livefix/internal/kerneltest"
	"github.com/livefix/livefix/internal/kernelvm"
)

// headerCase changes the static inline get_proc_task() in
// fs/proc/internal.h, a header that 24 units of the Debian configuration
// read. The helper is inlined into callers in five of them; those are the
// functions the live patch must replace, and only those.
var headerCase = acceptanceCase{
	name:    "lf_hdr",
	patches: []string{"header-task-hidden.patch"},
	changed: []string{
		// fs/proc/base.c
		"__set_oom_adj.isra.0", "call_proc_get_link", "comm_show", "comm_write", "map_files_d_revalidate", "mem_rw",
		"oom_adj_read", "oom_score_adj_read", "proc_coredump_filter_read", "proc_coredump_filter_write", "proc_id_map_open",
		"proc_loginuid_read", "proc_map_files_lookup", "proc_map_files_readdir", "proc_mem_open", "proc_pid_attr_read",
		"proc_pid_cmdline_read", "proc_pid_permission", "proc_pident_lookup", "proc_pident_readdir", "proc_sessionid_read",
		"proc_setgroups_open", "proc_task_getattr", "proc_task_lookup", "proc_tid_comm_permission", "sched_autogroup_show",
		"sched_autogroup_write", "sched_show", "sched_write", "timens_offsets_show", "timens_offsets_write",
		"timerslack_ns_show", "timerslack_ns_write",
		// fs/proc/fd.c
		"proc_fdinfo_permission", "proc_lookupfd", "proc_lookupfdinfo", "proc_readfd_common", "seq_show", "tid_fd_revalidate",
		// fs/proc/namespaces.c
		"proc_ns_dir_lookup", "proc_ns_dir_readdir", "proc_ns_get_link", "proc_ns_readlink",
		// fs/proc/task_mmu.c
		"clear_refs_write", "m_start", "show_smaps_rollup",
		// fs/proc_namespace.c
		"mounts_open_common",
	},
}

// TestHeaderInline proves a header change end to end: livefix-build
// follows fs/proc/internal.h to every unit that reads it, compiles them
// all before and after, and the diff finds the changed callers of the
// inline helper in each unit. In one boot of the packaged kernel the
// patched helper then hides a task named lfhdr_hidden from four callers'
// paths, each in another .c file (base.c: /proc/PID/cmdline; fd.c and
// namespaces.c: reading the fd/ and ns/ directories opened before the
// patch; task_mmu.c: reading a maps file opened before the patch), while
// another task stays visible; disabling the patch brings all back.
func TestHeaderInline(t *testing.T) {
	tgt := kerneltest.RequireVM(t)
	// 24 units compiled twice: several minutes on a loaded 2-core machine.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Minute)
	defer cancel()
	tmp := t.TempDir()
	livefix, livefixBuild := e2etest.Tools(t)
	outDir := filepath.Join(tmp, "patches")

	start := time.Now()
	out, code := buildPatch(ctx, t, livefixBuild, headerCase, outDir)
	if code != 0 {
		t.Fatalf("livefix-build kernel exit %d:\n%s", code, out)
	}
	t.Logf("built in %.1fs:\n%s", time.Since(start).Seconds(), out)
	for _, want := range []string{"fs/proc/base.c", "fs/proc/fd.c", "fs/proc/namespaces.c", "fs/proc/task_mmu.c", "fs/proc_namespace.c", "fs/proc/cmdline.c"} {
		if want == "fs/proc/cmdline.c" {
			// cmdline.c does not include internal.h: it must not be built.
			if strings.Contains(out, want) {
				t.Errorf("the build compiled %s, which does not read fs/proc/internal.h", want)
			}
			continue
		}
		if !strings.Contains(out, want) {
			t.Errorf("the build output does not name %s", want)
		}
	}
	checkManifest(t, headerCase, filepath.Join(outDir, headerCase.name+".json"), tgt.Release)
	if t.Failed() {
		t.FailNow()
	}

	res, err := kernelvm.Run(ctx, kernelvm.Config{
		Target: tgt,
		Script: headerScript,
		Files: map[string]string{
			"/bin/livefix":      livefix,
			"/root/p/lf_hdr.ko": filepath.Join(outDir, "lf_hdr.ko"),
		},
		Timeout: 10 * time.Minute,
		Log:     e2etest.GuestLog(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	if testing.Verbose() || t.Failed() {
		t.Logf("guest output:\n%s", res.Output)
	}
	checkGuestResults(t, res.Output, res.ExitCode, headerChecks)
	for _, oops := range []string{"BUG: unable to handle", "general protection fault", "Oops:"} {
		if strings.Contains(res.Console, oops) {
			t.Errorf("the guest kernel says %q:\n%s", oops, res.Console)
		}
	}
	t.Logf("guest ran in %s", res.Duration.Round(time.Second))
}

// headerScript runs in the guest; see acceptanceScript for the helpers.
const headerScript = e2etest.GuestShell + `
P=/root/p
C=lf_hdr

sh -c 'printf lfhdr_hidden > /proc/$$/comm; while :; do sleep 1; done' &
H=$!
sleep 1000 &
N=$!
i=0
while [ "$(cat /proc/$H/comm)" != lfhdr_hidden ] && [ $i -lt 10 ]; do sleep 1; i=$((i+1)); done
t hdr/named eq "$(cat /proc/$H/comm)" lfhdr_hidden

cmdline() { tr '\0' ' ' < /proc/$1/cmdline; }
# Opened before the patch, read after it: the directories' and the maps
# file's own operations (fd.c, namespaces.c, task_mmu.c) run, not base.c's
# lookup, which the patch also changes.
exec 4</proc/$H/fd
exec 5</proc/$H/ns
exec 6</proc/$H/maps
fds() { ls /proc/self/fd/$1/ 2>/dev/null; }

t hdr/before-base has "$(cmdline $H)" lfhdr_hidden
t hdr/before-fd has "$(fds 4)" 0
t hdr/before-ns has "$(fds 5)" net
t hdr/before-mmu has "$(cat /proc/$H/maps)" "["

t hdr/load livefix kernel load --timeout 120s $P/$C.ko
t hdr/after-base not cat /proc/$H/cmdline
t hdr/after-fd eq "$(fds 4)" ""
t hdr/after-ns eq "$(fds 5)" ""
t hdr/after-mmu eq "$(cat <&6 2>/dev/null)" ""
t hdr/after-other-base has "$(cmdline $N)" "sleep 1000"
t hdr/after-other-fd has "$(ls /proc/$N/fd)" 0
t hdr/after-other-ns has "$(ls /proc/$N/ns)" net
t hdr/after-other-mmu has "$(cat /proc/$N/maps)" "["
t hdr/after-listed has "$(ls /proc)" "$H"

t hdr/disable livefix kernel disable --timeout 120s $C
t hdr/rollback-base has "$(cmdline $H)" lfhdr_hidden
t hdr/rollback-fd has "$(fds 4)" 0
t hdr/rollback-ns has "$(fds 5)" net
t hdr/rollback-mmu has "$(cat /proc/$H/maps)" "["
exec 4<&- 5<&- 6<&-
t hdr/unload livefix kernel unload --timeout 120s $C
t hdr/gone gone $C
kill $H $N
t end/none-left eq "$(ls /sys/kernel/livepatch)" ""
`

// headerChecks are the names the guest must report as passed.
var headerChecks = []string{
	"hdr/named", "hdr/before-base", "hdr/before-fd", "hdr/before-ns", "hdr/before-mmu", "hdr/load",
	"hdr/after-base", "hdr/after-fd", "hdr/after-ns", "hdr/after-mmu",
	"hdr/after-other-base", "hdr/after-other-fd", "hdr/after-other-ns", "hdr/after-other-mmu", "hdr/after-listed",
	"hdr/disable", "hdr/rollback-base", "hdr/rollback-fd", "hdr/rollback-ns", "hdr/rollback-mmu",
	"hdr/unload", "hdr/gone", "end/none-left",
}
