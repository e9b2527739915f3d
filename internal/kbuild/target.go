package kbuild

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// ErrNoKernel is wrapped by DefaultTarget's error when the packaged kernel,
// its headers or its source are not installed.
var ErrNoKernel = errors.New("kernel files missing")

// Target describes the kernel a live patch is built for.
type Target struct {
	Release   string // e.g. 6.1.0-56-amd64
	Config    string // path of the kernel .config (default /boot/config-RELEASE)
	Source    string // tarball (default /usr/src/linux-source-X.Y.tar.xz) or an extracted directory
	Headers   string // /lib/modules/RELEASE/build
	Vmlinuz   string // /boot/vmlinuz-RELEASE
	SystemMap string // /boot/System.map-RELEASE
	// Vmlinux is a vmlinux with its full symbol table, for exact sympos
	// (default /usr/lib/debug/boot/vmlinux-RELEASE when Debian's
	// linux-image-RELEASE-dbg is installed); empty when there is none.
	Vmlinux string
}

// bootDir and friends are variables so tests can point them elsewhere.
var (
	bootDir    = "/boot"
	modulesDir = "/lib/modules"
	srcDir     = "/usr/src"
	// debugBootDir is where linux-image-RELEASE-dbg installs vmlinux.
	debugBootDir = "/usr/lib/debug/boot"
)

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// DefaultTarget returns the Debian-packaged kernel with the given release,
// or the newest one in /boot when release is empty. Its error names every
// missing file and wraps ErrNoKernel.
func DefaultTarget(release string) (Target, error) {
	if release == "" {
		r, err := NewestRelease()
		if err != nil {
			return Target{}, err
		}
		release = r
	}
	if strings.ContainsAny(release, "/ \t\n") || release == "." || release == ".." {
		return Target{}, fmt.Errorf("invalid kernel release %q", release)
	}
	t := Target{
		Release:   release,
		Config:    filepath.Join(bootDir, "config-"+release),
		Source:    filepath.Join(srcDir, "linux-source-"+majorMinor(release)+".tar.xz"),
		Headers:   filepath.Join(modulesDir, release, "build"),
		Vmlinuz:   filepath.Join(bootDir, "vmlinuz-"+release),
		SystemMap: filepath.Join(bootDir, "System.map-"+release),
	}
	if dbg := filepath.Join(debugBootDir, "vmlinux-"+release); fileExists(dbg) {
		t.Vmlinux = dbg
	}
	var missing []string
	for _, p := range []string{t.Vmlinuz, t.Config, t.SystemMap, filepath.Join(t.Headers, "Makefile"), t.Source} {
		if _, err := os.Stat(p); err != nil {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		return t, fmt.Errorf("kernel %s: %w: %s; run `make setup` to install the kernel image, headers and source",
			release, ErrNoKernel, strings.Join(missing, ", "))
	}
	return t, nil
}

// NewestRelease returns the release of the newest /boot/vmlinuz-*.
func NewestRelease() (string, error) {
	paths, err := filepath.Glob(filepath.Join(bootDir, "vmlinuz-*"))
	if err != nil {
		return "", fmt.Errorf("list kernels: %w", err)
	}
	best := ""
	for _, p := range paths {
		r := strings.TrimPrefix(filepath.Base(p), "vmlinuz-")
		if best == "" || compareVersions(r, best) > 0 {
			best = r
		}
	}
	if best == "" {
		return "", fmt.Errorf("no %s/vmlinuz-*: %w; run `make setup` to install linux-image-amd64", bootDir, ErrNoKernel)
	}
	return best, nil
}

// majorMinor returns "6.1" for "6.1.0-56-amd64".
func majorMinor(release string) string {
	parts := strings.SplitN(release, ".", 3)
	if len(parts) < 2 {
		return release
	}
	minor := parts[1]
	if i := strings.IndexFunc(minor, func(r rune) bool { return r < '0' || r > '9' }); i >= 0 {
		minor = minor[:i]
	}
	return parts[0] + "." + minor
}

// compareVersions orders kernel releases naturally: runs of digits compare
// as numbers, so 6.1.0-10 sorts after 6.1.0-9.
func compareVersions(a, b string) int {
	for a != "" && b != "" {
		da, db := isDigit(a[0]), isDigit(b[0])
		if da && db {
			na, ra := leadingDigits(a)
			nb, rb := leadingDigits(b)
			if c := compareNumbers(na, nb); c != 0 {
				return c
			}
			a, b = ra, rb
			continue
		}
		if a[0] != b[0] {
			if a[0] < b[0] {
				return -1
			}
			return 1
		}
		a, b = a[1:], b[1:]
	}
	return len(a) - len(b)
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func leadingDigits(s string) (string, string) {
	i := 0
	for i < len(s) && isDigit(s[i]) {
		i++
	}
	return s[:i], s[i:]
}

// compareNumbers compares two decimal digit strings of any length.
func compareNumbers(a, b string) int {
	ta, tb := strings.TrimLeft(a, "0"), strings.TrimLeft(b, "0")
	if len(ta) != len(tb) {
		return len(ta) - len(tb)
	}
	if c := strings.Compare(ta, tb); c != 0 {
		return c
	}
	return strings.Compare(a, b)
}

// CacheDir is where livefix keeps prepared kernel trees: $LIVEFIX_CACHE,
// else /var/cache/livefix when running as root, else
// $XDG_CACHE_HOME/livefix or ~/.cache/livefix.
func CacheDir() string {
	if d := os.Getenv("LIVEFIX_CACHE"); d != "" {
		return d
	}
	if os.Geteuid() == 0 {
		return "/var/cache/livefix"
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "livefix")
	}
	return filepath.Join(os.TempDir(), "livefix-cache-"+strconv.Itoa(os.Geteuid()))
}
