// Package kernelvm boots the packaged Debian kernel under qemu and runs a
// shell script in it. It serves the product and the tests alike:
//
//   - livefix-build boots the target kernel through it to read
//     /proc/kallsyms when no -dbg vmlinux is given (klp's symbol table
//     for the build), the result cached per kernel release;
//   - kernel and end-to-end tests use it to touch a real kernel: loading
//     live-patch modules, watching transitions, exercising patched code.
//
// Run builds a small initramfs in Go (a gzip-compressed newc cpio archive)
// holding a static busybox, an /init script, the script and files, and any
// modules the caller asked for, boots the kernel with it on a serial
// console, and returns what the script printed and its exit status. The
// guest powers off when the script ends; a guest that hangs is killed when
// the timeout expires. A guest that hangs before its script has started
// (Config.BootTimeout) is booted again, up to BootAttempts times: nothing
// of the caller's has run in it yet.
//
// The default kernel command line is "console=ttyS0 quiet panic=-1
// no_timer_check"; Config.Cmdline is appended to it. no_timer_check skips
// the IO-APIC timer check, which a guest under plain emulation on a loaded
// host can fail and panic on.
//
// qemu uses KVM when /dev/kvm opens and the CPU has vmx or svm, and plain
// emulation otherwise (or when LIVEFIX_VM_ACCEL=tcg); a boot takes a few
// seconds with KVM and around ten without. A /dev/kvm without vmx/svm is
// a paravirtual KVM (kvm_pvm) that hangs an unmodified Debian kernel.
package kernelvm
