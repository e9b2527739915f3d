// Package kexec boots another installed kernel without firmware and
// boot-loader time: it finds the kernel image and initrd in /boot, loads
// them with the current command line through kexec_file_load(2) and
// jumps into them with reboot(LINUX_REBOOT_CMD_KEXEC). It is livefix's
// fallback when a fix cannot be live patched.
//
// kexec_file_load lets the kernel check the image itself (signature
// policy with CONFIG_KEXEC_SIG, lockdown); a refusal is explained from the
// errno, /sys/kernel/security/lockdown and
// /proc/sys/kernel/kexec_load_disabled, and leaves nothing loaded.
package kexec
