package kexec

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"unicode"

	"golang.org/x/sys/unix"
)

// Image is a kernel to boot.
type Image struct {
	Release string
	Kernel  string // /boot/vmlinuz-RELEASE
	Initrd  string // /boot/initrd.img-RELEASE
	Cmdline string
}

// System is where the kernels and the running system's files are; Host
// returns the real ones, tests point them elsewhere.
type System struct {
	Boot     string // /boot
	Proc     string // /proc
	Security string // /sys/kernel/security
	// Load calls kexec_file_load; Unload removes a loaded image; Exec
	// syncs and jumps.
	Load   func(kernel, initrd *os.File, cmdline string) error
	Unload func() error
	Exec   func() error
}

// Host is the running system.
func Host() *System {
	return &System{
		Boot: "/boot", Proc: "/proc", Security: "/sys/kernel/security",
		Load: func(kernel, initrd *os.File, cmdline string) error {
			return unix.KexecFileLoad(int(kernel.Fd()), int(initrd.Fd()), cmdline, 0)
		},
		Unload: func() error { return unix.KexecFileLoad(-1, -1, "", unix.KEXEC_FILE_UNLOAD) },
		Exec: func() error {
			unix.Sync()
			return unix.Reboot(unix.LINUX_REBOOT_CMD_KEXEC)
		},
	}
}

// Find returns the kernel to boot: release, or the newest installed one
// (Debian version order of the /boot/vmlinuz-* names) when empty, with
// the running command line plus appendArgs.
func (s *System) Find(release, appendArgs string) (*Image, error) {
	if release == "" {
		rels, err := s.Installed()
		if err != nil {
			return nil, err
		}
		if len(rels) == 0 {
			return nil, fmt.Errorf("kexec: no kernel in %s (no vmlinuz-* file); nothing was loaded", s.Boot)
		}
		release = rels[len(rels)-1]
	}
	if strings.ContainsAny(release, "/\x00") || release == "" {
		return nil, fmt.Errorf("kexec: invalid release %q", release)
	}
	img := &Image{Release: release, Kernel: filepath.Join(s.Boot, "vmlinuz-"+release), Initrd: filepath.Join(s.Boot, "initrd.img-"+release)}
	if _, err := os.Stat(img.Kernel); err != nil {
		return nil, fmt.Errorf("kexec: kernel %s: %w; nothing was loaded (installed: see ls %s/vmlinuz-*)", release, err, s.Boot)
	}
	if _, err := os.Stat(img.Initrd); err != nil {
		return nil, fmt.Errorf("kexec: initrd of %s: %w; nothing was loaded; create it with update-initramfs -c -k %s", release, err, release)
	}
	b, err := os.ReadFile(filepath.Join(s.Proc, "cmdline"))
	if err != nil {
		return nil, fmt.Errorf("kexec: read the running command line: %w", err)
	}
	img.Cmdline = strings.TrimSpace(strings.Join(strings.Fields(string(b)+" "+appendArgs), " "))
	return img, nil
}

// Installed lists the releases with a /boot/vmlinuz-RELEASE, oldest first.
func (s *System) Installed() ([]string, error) {
	paths, err := filepath.Glob(filepath.Join(s.Boot, "vmlinuz-*"))
	if err != nil {
		return nil, err
	}
	var rels []string
	for _, p := range paths {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			rels = append(rels, strings.TrimPrefix(filepath.Base(p), "vmlinuz-"))
		}
	}
	slices.SortFunc(rels, compareVersions)
	return rels, nil
}

// compareVersions orders releases like "6.1.0-9-amd64" < "6.1.0-10-amd64":
// runs of digits compare as numbers, the rest as text.
func compareVersions(a, b string) int {
	for a != "" && b != "" {
		ad, ar := splitRun(a)
		bd, br := splitRun(b)
		if c := compareRun(ad, bd); c != 0 {
			return c
		}
		a, b = ar, br
	}
	return len(a) - len(b)
}

func splitRun(s string) (string, string) {
	digit := unicode.IsDigit(rune(s[0]))
	i := 1
	for i < len(s) && unicode.IsDigit(rune(s[i])) == digit {
		i++
	}
	return s[:i], s[i:]
}

func compareRun(a, b string) int {
	an, aerr := strconv.ParseUint(a, 10, 64)
	bn, berr := strconv.ParseUint(b, 10, 64)
	if aerr == nil && berr == nil {
		switch {
		case an < bn:
			return -1
		case an > bn:
			return 1
		}
		return 0
	}
	return strings.Compare(a, b)
}

// LoadImage loads img for a later Jump. A refusal says why; nothing is then
// loaded.
func (s *System) LoadImage(img *Image) error {
	k, err := os.Open(img.Kernel)
	if err != nil {
		return fmt.Errorf("kexec: %w; nothing was loaded", err)
	}
	defer k.Close()
	i, err := os.Open(img.Initrd)
	if err != nil {
		return fmt.Errorf("kexec: %w; nothing was loaded", err)
	}
	defer i.Close()
	if err := s.Load(k, i, img.Cmdline); err != nil {
		return fmt.Errorf("kexec: the kernel refused to load %s: %v (%s); nothing was loaded: %w", img.Kernel, err, s.why(err), err)
	}
	return nil
}

// why explains a kexec_file_load errno.
func (s *System) why(err error) string {
	lockdown := ""
	if b, rerr := os.ReadFile(filepath.Join(s.Security, "lockdown")); rerr == nil {
		// "none [integrity] confidentiality": the bracketed one is active.
		if i := strings.IndexByte(string(b), '['); i >= 0 {
			if j := strings.IndexByte(string(b)[i:], ']'); j > 0 {
				lockdown = string(b)[i+1 : i+j]
			}
		}
	}
	disabled := false
	if b, rerr := os.ReadFile(filepath.Join(s.Proc, "sys/kernel/kexec_load_disabled")); rerr == nil && strings.TrimSpace(string(b)) == "1" {
		disabled = true
	}
	switch {
	case errors.Is(err, unix.EPERM) && disabled:
		return "kexec is disabled until reboot (kernel.kexec_load_disabled = 1)"
	case errors.Is(err, unix.EPERM) && lockdown != "" && lockdown != "none":
		return "the kernel is locked down (" + lockdown + "): it only loads kernels signed with a key it trusts"
	case errors.Is(err, unix.EPERM):
		return "needs root (CAP_SYS_BOOT)"
	case errors.Is(err, unix.EKEYREJECTED), errors.Is(err, unix.ENOKEY), errors.Is(err, unix.EBADMSG), errors.Is(err, unix.EKEYEXPIRED):
		return "the image's signature is not accepted by the kernel's signature policy (CONFIG_KEXEC_SIG)"
	case errors.Is(err, unix.ENOEXEC):
		return "not a bootable kernel image for this architecture"
	case errors.Is(err, unix.ENOSYS):
		return "this kernel was built without CONFIG_KEXEC_FILE"
	case errors.Is(err, unix.EBUSY):
		return "another kexec image is being loaded or the crash kernel is in use"
	case errors.Is(err, unix.ENOMEM):
		return "not enough contiguous memory for the image and initrd"
	}
	if errors.Is(err, fs.ErrPermission) {
		return "permission denied"
	}
	return "see the kernel log (dmesg)"
}

// Jump syncs the file systems and starts the loaded kernel. It returns
// only on failure, after unloading the image so that nothing is left
// loaded.
func (s *System) Jump() error {
	err := s.Exec()
	if uerr := s.Unload(); uerr != nil {
		return fmt.Errorf("kexec: reboot into the loaded kernel failed: %v; unloading it failed too: %v", err, uerr)
	}
	return fmt.Errorf("kexec: reboot into the loaded kernel failed: %w; unloaded it again; nothing changed", err)
}
