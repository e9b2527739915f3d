package host_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/livefix/livefix/internal/e2etest"
	"github.com/livefix/livefix/internal/kerneltest"
	"github.com/livefix/livefix/internal/kernelvm"
)

// kexecScript builds a second initramfs whose init prints its command
// line and the harness's exit marker, checks the refusals and
// --load-only, then lets livefix kernel kexec jump into the installed
// kernel.
const kexecScript = `
set -u
R=$(uname -r)
expect() { if [ "$2" = "$3" ]; then echo "PASS $1"; else echo "FAIL $1 got [$2] want [$3]"; fi; }
has() { case "$2" in *"$3"*) echo "PASS $1";; *) echo "FAIL $1 [$2] lacks [$3]";; esac; }
has k_first_cmdline "$(cat /proc/cmdline)" "console=ttyS0"
case "$(cat /proc/cmdline)" in *livefix_test=1*) echo "FAIL k_first_has_word";; *) echo "PASS k_first_lacks_word";; esac
EXIT=$(grep -o 'LIVEFIX-EXIT-[0-9a-f]*' /init | head -1)
mkdir -p /tmp/i2/bin /tmp/i2/proc /tmp/i2/dev
cp /bin/busybox /tmp/i2/bin/
mknod /tmp/i2/dev/console c 5 1
printf '%s\n' '#!/bin/busybox sh' \
	'/bin/busybox mount -t proc proc /proc' \
	'echo "SECOND-KERNEL cmdline: $(/bin/busybox cat /proc/cmdline)"' \
	'echo' \
	"echo '${EXIT}=0'" \
	'/bin/busybox poweroff -f' > /tmp/i2/init
chmod 755 /tmp/i2/init
livefix kernel kexec --release $R --load-only > /tmp/o 2>&1; expect k_no_initrd_rc $? 1; cat /tmp/o
has k_no_initrd_says "$(cat /tmp/o)" "update-initramfs -c -k $R"
(cd /tmp/i2 && find . | cpio -o -H newc 2>/dev/null | gzip > /boot/initrd.img-$R)
livefix kernel kexec --release 0.0.0-none > /tmp/o 2>&1; expect k_no_kernel_rc $? 1; cat /tmp/o
has k_no_kernel_says "$(cat /tmp/o)" "nothing was loaded"
expect k_nothing_loaded "$(cat /sys/kernel/kexec_loaded)" 0
livefix kernel kexec --load-only --append livefix_test=1 > /tmp/o 2>&1; expect k_load_only_rc $? 0; cat /tmp/o
expect k_loaded "$(cat /sys/kernel/kexec_loaded)" 1
has k_load_only_cmdline "$(cat /tmp/o)" "livefix_test=1"
livefix kernel kexec --append livefix_test=1
echo "FAIL k_returned livefix kernel kexec returned $?"
`

// TestKexec is acceptance 6: livefix kernel kexec --append livefix_test=1
// jumps into the installed kernel, whose /proc/cmdline carries the word.
func TestKexec(t *testing.T) {
	tgt := kerneltest.RequireVM(t)
	livefix, _ := e2etest.Tools(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	res, err := kernelvm.Run(ctx, kernelvm.Config{
		Target: tgt, Script: kexecScript, Timeout: 4 * time.Minute, Log: &killer{t: t},
		Files: map[string]string{"/bin/livefix": livefix, "/boot/vmlinuz-" + tgt.Release: tgt.Vmlinuz},
	})
	if err != nil {
		t.Fatal(err)
	}
	e2etest.CheckGuest(t, res.Output, []string{"k_first_cmdline", "k_first_lacks_word", "k_no_initrd_rc", "k_no_initrd_says",
		"k_no_kernel_rc", "k_no_kernel_says", "k_nothing_loaded", "k_load_only_rc", "k_loaded", "k_load_only_cmdline"})
	i := strings.Index(res.Output, "\nSECOND-KERNEL cmdline: ")
	if i < 0 {
		t.Fatalf("the second kernel's init did not run:\n%s", res.Output)
	}
	line, _, _ := strings.Cut(res.Output[i+1:], "\n")
	if !strings.Contains(" "+line+" ", " livefix_test=1 ") || !strings.Contains(line, "console=ttyS0") {
		t.Errorf("second kernel: %q, want the first command line plus livefix_test=1", line)
	}
	if !strings.Contains(res.Output, "syncing and jumping into "+tgt.Release) {
		t.Errorf("livefix did not say it jumps:\n%s", res.Output)
	}
	if t.Failed() {
		t.Logf("guest output:\n%s", res.Output)
	}
}
