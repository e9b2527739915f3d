#!/usr/bin/env bash
# demo.sh: live-patch the packaged Debian kernel without a reboot.
#
# Run by `make demo` (after `make setup build`). It
#   1. builds a live patch for the installed Debian kernel from a small
#      source patch (/proc/version gains a line) with bin/livefix-build;
#   2. boots that same kernel in qemu with a busybox initramfs holding the
#      patch and bin/livefix;
#   3. inside the running guest shows /proc/version before, applies the
#      patch with `livefix kernel load` (transition time included), shows
#      /proc/version after, then disables and unloads it and shows the
#      original text back: one boot, no reboot in between; a process started
#      before the patch is still the same process at the end.
#
# Environment: DEMO_KEEP=1 keeps the work directory; LIVEFIX_CACHE moves the
# prepared kernel tree cache (default /var/cache/livefix as root).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

for tool in bin/livefix-build bin/livefix; do
	[[ -x $tool ]] || die "$tool is missing; run \`make build\` (make demo does it)"
done
for tool in qemu-system-x86_64 cpio gzip; do
	command -v "$tool" >/dev/null || die "$tool not found; run \`make setup\`"
done
[[ -x /bin/busybox ]] || die "/bin/busybox (busybox-static) missing; run \`make setup\`"

release=$(ls /boot/vmlinuz-* 2>/dev/null | sed 's|^/boot/vmlinuz-||' | sort -V | tail -n1)
[[ -n $release ]] || die "no /boot/vmlinuz-*; run \`make setup\` to install linux-image-amd64"

work=$(mktemp -d /tmp/livefix-demo.XXXXXX)
if [[ ${DEMO_KEEP:-0} != 1 ]]; then
	trap 'rm -rf "$work"' EXIT
else
	echo "demo: keeping $work"
fi

cat >"$work/demo.patch" <<'EOF'
livefix demo: /proc/version gains a line, printed by the patched
version_proc_show.
--- a/fs/proc/version.c
+++ b/fs/proc/version.c
@@ -13,6 +13,7 @@
 		utsname()->sysname,
 		utsname()->release,
 		utsname()->version);
+	seq_puts(m, "*** live-patched by livefix: this line was added without a reboot ***\n");
 	return 0;
 }
 
EOF

say "1. Build a live patch for the Debian kernel $release"
sed -n '/^---/,$p' "$work/demo.patch"
start=$(date +%s%N)
bin/livefix-build kernel --patch "$work/demo.patch" --name livefix_demo --level 1 -o "$work/out"
ms=$((($(date +%s%N) - start) / 1000000))
printf 'build took %d.%01ds; output:\n' $((ms / 1000)) $((ms % 1000 / 100))
ls -l "$work/out"

say "2. Boot the same kernel in qemu (no KVM here means software emulation: be patient)"
root=$work/initramfs
mkdir -p "$root"/{bin,proc,sys,dev,tmp,root,run}
cp /bin/busybox "$root/bin/busybox"
cp bin/livefix "$root/bin/livefix"
cp "$work/out/livefix_demo.ko" "$work/out/livefix_demo.json" "$root/root/"
cat >"$root/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /run
step() { printf '\n--- %s\n' "$*"; }
ok=1
run() { printf '# %s\n' "$*"; "$@" || { echo "demo: '$*' failed"; ok=0; }; }
marker='live-patched by livefix'
expect() { # expect yes|no: whether /proc/version must show the patch
	if grep -q "$marker" /proc/version; then got=yes; else got=no; fi
	[ "$got" = "$1" ] || { echo "demo: expected patched=$1, got $got"; ok=0; }
}
echo
echo "guest: kernel $(uname -r) up for $(cut -d' ' -f1 /proc/uptime)s"
sleep 100000 &
worker=$!
echo "guest: started a long-running process, pid $worker"

step "before: the running kernel"
run cat /proc/version
expect no
run livefix kernel version

step "apply the live patch"
run livefix kernel load /root/livefix_demo.ko

step "after: same kernel, same boot, patched code"
run cat /proc/version
expect yes
run livefix kernel list
run livefix kernel version

step "roll back"
run livefix kernel disable livefix_demo
run cat /proc/version
expect no
run livefix kernel unload livefix_demo
run livefix kernel list
run livefix kernel version

step "no reboot happened"
if kill -0 "$worker" 2>/dev/null; then
	echo "process $worker, started before the patch, is still running; uptime $(cut -d' ' -f1 /proc/uptime)s"
else
	echo "process $worker is gone?"
	ok=0
fi
[ "$ok" = 1 ] && echo "DEMO-OK" || echo "DEMO-FAILED"
poweroff -f
EOF
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$work/initrd.gz"

# The same rule as internal/kernelvm (useKVM): KVM only when /dev/kvm
# opens and the CPU has vmx or svm; a /dev/kvm without them is a
# paravirtual one (kvm_pvm) on which the Debian kernel hangs at boot.
# LIVEFIX_VM_ACCEL=tcg forces emulation.
accel=(-accel tcg)
if [[ ${LIVEFIX_VM_ACCEL:-} != tcg && -r /dev/kvm && -w /dev/kvm ]] &&
	grep -m 1 '^flags' /proc/cpuinfo | grep -qwE 'vmx|svm'; then
	accel=(-enable-kvm -cpu host)
fi
log=$work/console.log
timeout 600 qemu-system-x86_64 -nodefaults -no-user-config -display none -serial stdio -no-reboot \
	-m 1024 -smp 2 "${accel[@]}" -kernel "/boot/vmlinuz-$release" -initrd "$work/initrd.gz" \
	-append "console=ttyS0 quiet loglevel=3 panic=-1 no_timer_check" </dev/null | tr -d '\r' | tee "$log"

say "3. Result"
if grep -q DEMO-OK "$log"; then
	echo "demo: the kernel was patched and unpatched live, in one boot."
else
	die "the guest did not finish the demo; console log above"
fi
