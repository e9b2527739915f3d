package kernel_test

import "github.com/livefix/livefix/internal/e2etest"

// acceptanceScript runs in the guest. Each check prints "PASS NAME" or
// "FAIL NAME: detail"; the test requires every name of acceptanceChecks
// to pass exactly once. Patches are in /root/p, binfmt_misc.ko in
// /lib/modules.
const acceptanceScript = e2etest.GuestShell + `
P=/root/p
R=$(uname -r)
load() { livefix kernel load --timeout 120s $P/$1.ko; }
disable() { livefix kernel disable --timeout 120s $1; }
unload() { livefix kernel unload --timeout 120s $1; }

echo "== case 1: a string change in cmdline_proc_show"
C=lf_case1
t case1/before hasnt "$(cat /proc/cmdline)" livefix.case1
t case1/load load $C
t case1/after has "$(cat /proc/cmdline)" " livefix.case1=patched"
t case1/list has "$(livefix kernel list --json | tr -d ' \n')" '"name":"cmdline_proc_show"'
t case1/disable disable $C
t case1/rollback hasnt "$(cat /proc/cmdline)" livefix.case1
t case1/unload unload $C
t case1/gone gone $C

echo "== case 2: the inlined helper show_val_kb, every /proc/meminfo caller"
C=lf_case2
kib() { grep -c ' KiB$' /proc/meminfo; }
t case2/before eq "$(kib)" 0
t case2/load load $C
t case2/after-memtotal has "$(grep '^MemTotal:' /proc/meminfo)" " KiB"
t case2/after-percpu has "$(grep '^Percpu:' /proc/meminfo)" " KiB"
# Every line left in kB is printed by seq_printf or another file, not by
# the helper; the helper's lines (about 40) all say KiB now.
t case2/after-all eq "$(grep ' kB$' /proc/meminfo | grep -cvE '^(Zswap|KernelStack|ShadowCallStack|VmallocTotal|HardwareCorrupted|Hugepagesize|Hugetlb|DirectMap)')" 0
t case2/after-count [ "$(kib)" -ge 30 ]
t case2/disable disable $C
t case2/rollback eq "$(kib)" 0
t case2/unload unload $C
t case2/gone gone $C

echo "== case 3: a new function and new static data"
C=lf_case3
t case3/before hasnt "$(cat /proc/version)" livefix.case3
t case3/load load $C
t case3/after-1 has "$(cat /proc/version)" "livefix.case3 reads=1"
t case3/after-2 has "$(cat /proc/version)" "livefix.case3 reads=2"
t case3/disable disable $C
t case3/rollback hasnt "$(cat /proc/version)" livefix.case3
t case3/unload unload $C
t case3/gone gone $C

echo "== case 4: a non-exported function and file-local statics"
C=lf_case4
nfs=$(grep -c . /proc/filesystems)
t case4/before hasnt "$(cat /proc/filesystems)" livefix.case4
t case4/load load $C
line=$(grep '^#livefix.case4' /proc/filesystems)
echo "$line"
t case4/after-count has "$line" "filesystems=$nfs "
procs=${line##*processes=}
t case4/after-processes [ "$procs" -ge 10 ]
t case4/disable disable $C
t case4/rollback hasnt "$(cat /proc/filesystems)" livefix.case4
t case4/unload unload $C
t case4/gone gone $C

echo "== case 5: two files, a new global function called across them"
C=lf_case5
t case5/before hasnt "$(cat /proc/loadavg)" livefix.case5
t case5/load load $C
t case5/after has "$(cat /proc/loadavg)" "livefix.case5 loadavg via version.c"
t case5/disable disable $C
t case5/rollback hasnt "$(cat /proc/loadavg)" livefix.case5
t case5/unload unload $C
t case5/gone gone $C

echo "== case 6: a loadable module (binfmt_misc), module first"
C=lf_case6
mkdir -p /tmp/bm
bmstatus() { cat /tmp/bm/status; }
t case6a/insmod insmod /lib/modules/binfmt_misc.ko
t case6a/mount mount -t binfmt_misc none /tmp/bm
t case6a/before eq "$(bmstatus)" enabled
t case6a/load load $C
t case6a/after eq "$(bmstatus)" "enabled livefix.case6"
t case6a/disable disable $C
t case6a/rollback eq "$(bmstatus)" enabled
t case6a/unload unload $C
t case6a/gone gone $C
umount /tmp/bm && rmmod binfmt_misc
echo "== case 6: patch first, module loaded later"
t case6b/no-module [ ! -e /sys/module/binfmt_misc ]
t case6b/load load $C
t case6b/pending has "$(livefix kernel list --json | tr -d ' \n')" '"name":"binfmt_misc","patched":false'
t case6b/insmod insmod /lib/modules/binfmt_misc.ko
t case6b/mount mount -t binfmt_misc none /tmp/bm
t case6b/patched has "$(livefix kernel list --json | tr -d ' \n')" '"name":"binfmt_misc","patched":true'
t case6b/after eq "$(bmstatus)" "enabled livefix.case6"
t case6b/disable disable $C
t case6b/rollback eq "$(bmstatus)" enabled
t case6b/unload unload $C
t case6b/gone gone $C
umount /tmp/bm
t case6b/rmmod rmmod binfmt_misc

echo "== case 7: shadow variables on task_struct"
C=lf_case7
t case7/before hasnt "$(cat /proc/uptime)" livefix.case7
t case7/load load $C
# Reads by this shell itself (read is a builtin), so the counter is this
# task's shadow variable: allocated, found twice, freed, allocated again.
read -r l1 < /proc/uptime; read -r l2 < /proc/uptime; read -r l3 < /proc/uptime; read -r l4 < /proc/uptime
echo "$l1 / $l2 / $l3 / $l4"
t case7/alloc has "$l1" "livefix.case7 reads=1"
t case7/get has "$l2" "livefix.case7 reads=2"
t case7/free has "$l3" "livefix.case7 reads=3 freed"
t case7/realloc has "$l4" "livefix.case7 reads=1"
t case7/other-task has "$(cat /proc/uptime)" "livefix.case7 reads=1"
t case7/disable disable $C
t case7/rollback hasnt "$(cat /proc/uptime)" livefix.case7
t case7/unload unload $C
t case7/gone gone $C

echo "== case 8: the ICMP receive path (icmp_echo), ping on loopback"
C=lf_case8
ping_ok() { ping -c 1 -W 2 -s $1 127.0.0.1 > /dev/null 2>&1; }
t case8/before-small ping_ok 56
t case8/before-large ping_ok 1000
t case8/load load $C
t case8/after-small ping_ok 56
t case8/after-limit ping_ok 512
t case8/after-large not ping_ok 1000
t case8/disable disable $C
t case8/rollback ping_ok 1000
t case8/unload unload $C
t case8/gone gone $C

echo "== case 9: cumulative levels"
C1=lf_case9_l1; C2=lf_case9_l2
t case9/before-version eq "$(livefix kernel version)" "$R"
t case9/before hasnt "$(cat /proc/cmdline)$(cat /proc/version)" livefix.fix
t case9/load-l1 load $C1
t case9/l1-fix1 has "$(cat /proc/cmdline)" livefix.fix1
t case9/l1-no-fix2 hasnt "$(cat /proc/version)" livefix.fix2
t case9/l1-version eq "$(livefix kernel version)" "$R+livefix1"
# A reader runs through the replacement: fix 1 must never disappear.
rm -f /tmp/stop /tmp/reads
( while [ ! -e /tmp/stop ]; do cat /proc/cmdline >> /tmp/reads; done ) &
RD=$!
sleep 1
t case9/load-l2 load $C2
sleep 1
touch /tmp/stop; wait $RD
echo "reads during the replacement: $(grep -c . /tmp/reads)"
t case9/no-gap eq "$(grep -vc livefix.fix1 /tmp/reads)" 0
t case9/reads [ "$(grep -c . /tmp/reads)" -ge 5 ]
t case9/l2-fix1 has "$(cat /proc/cmdline)" livefix.fix1
t case9/l2-fix2 has "$(cat /proc/version)" livefix.fix2
t case9/l1-replaced gone $C1
t case9/only-l2 eq "$(ls /sys/kernel/livepatch)" "$C2"
t case9/l2-version eq "$(livefix kernel version)" "$R+livefix2"
livefix kernel list
t case9/disable disable $C2
t case9/rollback hasnt "$(cat /proc/cmdline)$(cat /proc/version)" livefix.fix
t case9/rollback-version eq "$(livefix kernel version)" "$R"
t case9/unload unload $C2
t case9/gone gone $C2
t end/none-left eq "$(ls /sys/kernel/livepatch)" ""
`

// acceptanceChecks are the names the guest must report as passed.
var acceptanceChecks = []string{
	"case1/before", "case1/load", "case1/after", "case1/list", "case1/disable", "case1/rollback", "case1/unload", "case1/gone",
	"case2/before", "case2/load", "case2/after-memtotal", "case2/after-percpu", "case2/after-all", "case2/after-count", "case2/disable", "case2/rollback", "case2/unload", "case2/gone",
	"case3/before", "case3/load", "case3/after-1", "case3/after-2", "case3/disable", "case3/rollback", "case3/unload", "case3/gone",
	"case4/before", "case4/load", "case4/after-count", "case4/after-processes", "case4/disable", "case4/rollback", "case4/unload", "case4/gone",
	"case5/before", "case5/load", "case5/after", "case5/disable", "case5/rollback", "case5/unload", "case5/gone",
	"case6a/insmod", "case6a/mount", "case6a/before", "case6a/load", "case6a/after", "case6a/disable", "case6a/rollback", "case6a/unload", "case6a/gone",
	"case6b/no-module", "case6b/load", "case6b/pending", "case6b/insmod", "case6b/mount", "case6b/patched", "case6b/after", "case6b/disable", "case6b/rollback", "case6b/unload", "case6b/gone", "case6b/rmmod",
	"case7/before", "case7/load", "case7/alloc", "case7/get", "case7/free", "case7/realloc", "case7/other-task", "case7/disable", "case7/rollback", "case7/unload", "case7/gone",
	"case8/before-small", "case8/before-large", "case8/load", "case8/after-small", "case8/after-limit", "case8/after-large", "case8/disable", "case8/rollback", "case8/unload", "case8/gone",
	"case9/before-version", "case9/before", "case9/load-l1", "case9/l1-fix1", "case9/l1-no-fix2", "case9/l1-version", "case9/load-l2", "case9/no-gap", "case9/reads",
	"case9/l2-fix1", "case9/l2-fix2", "case9/l1-replaced", "case9/only-l2", "case9/l2-version", "case9/disable", "case9/rollback", "case9/rollback-version", "case9/unload", "case9/gone",
	"end/none-left",
}
