package packaging

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The install test changes this machine's package database, so one runs
// at a time (machineLock), and a test killed half-way is recognised by
// its marker and cleaned up by the next run.
const (
	machineLock = "/run/lock/livefix-deb-test.lock"
	marker      = "/var/lib/livefix-deb-test.installed"
	savedSuffix = ".livefix-deb-test-saved"
)

// sysPATH is what dpkg and the maintainer scripts need (ldconfig,
// start-stop-daemon and deb-systemd-helper live in sbin and bin).
const sysPATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// TestDpkgInstall installs the livefix and livefix-server packages on
// this machine with dpkg -i, runs them, removes and purges them, and
// checks that nothing they installed or created is left.
func TestDpkgInstall(t *testing.T) {
	need(t, "dpkg", "dpkg-query", "systemd-analyze", "man")
	if os.Geteuid() != 0 {
		t.Fatal("dpkg -i needs root (CI runs as root); run the test as root")
	}
	pkgs, _ := debs(t)
	lockMachine(t)
	for _, name := range []string{"livefix", "livefix-server"} {
		if data, err := os.ReadFile(marker); err == nil && strings.Contains(string(data), name+"\n") {
			t.Logf("a killed run left %s installed: purging it", name)
			dpkg(t, "--purge", name)
		}
		if st := status(t, name); st != "" {
			t.Fatalf("%s is installed on this machine (%s) and not by this test; the test will not replace it (dpkg --purge %s to let it run)", name, st, name)
		}
	}
	setAside(t, "/etc/livefix", "/var/lib/livefix")
	before := livefixPaths(t)
	if err := os.WriteFile(marker, []byte("livefix\nlivefix-server\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, name := range []string{"livefix", "livefix-server"} {
			if status(t, name) != "" {
				dpkg(t, "--purge", name)
			}
		}
		os.Remove(marker)
	})

	// livefix: install, run, check the units and the man page.
	dpkg(t, "-i", pkgs["livefix"].Path)
	if st := status(t, "livefix"); st != "ii "+testVersion {
		t.Fatalf("after dpkg -i: livefix status %q, want installed %s", st, testVersion)
	}
	out, err := exec.Command("sh", "-c", sysPATH+" livefix --version").CombinedOutput()
	if want := "livefix " + testVersion + "\n"; err != nil || string(out) != want {
		t.Errorf("livefix --version = %q (%v), want %q", out, err, want)
	}
	files := listFiles(t, "livefix")
	for _, f := range files {
		if _, err := os.Lstat(f); err != nil {
			t.Errorf("dpkg -L lists %s but: %v", f, err)
		}
	}
	if target, err := os.Readlink("/etc/systemd/system/sysinit.target.wants/livefix.service"); err != nil || target != "/lib/systemd/system/livefix.service" {
		t.Errorf("livefix.service not enabled by postinst: %q, %v", target, err)
	}
	if _, err := os.Lstat("/etc/systemd/system/multi-user.target.wants/livefix-agent.service"); err == nil {
		t.Error("livefix-agent.service enabled on install; it needs `livefix register` first")
	}
	verifyInstalled(t, "/lib/systemd/system/livefix.service", "/lib/systemd/system/livefix-agent.service")
	if out, err := exec.Command("man", "-w", "livefix").Output(); err != nil || strings.TrimSpace(string(out)) != "/usr/share/man/man8/livefix.8.gz" {
		t.Errorf("man -w livefix = %q, %v", out, err)
	}

	// An upgrade (here: the same version again) keeps the
	// administrator's choice: a disabled livefix.service stays disabled.
	wants := "/etc/systemd/system/sysinit.target.wants/livefix.service"
	if err := os.Remove(wants); err != nil { // what systemctl disable does
		t.Fatal(err)
	}
	dpkg(t, "-i", pkgs["livefix"].Path)
	if _, err := os.Lstat(wants); err == nil {
		t.Error("reinstalling enabled livefix.service again after the administrator disabled it")
	}
	if st := status(t, "livefix"); st != "ii "+testVersion {
		t.Fatalf("after the second dpkg -i: livefix status %q", st)
	}

	// dpkg -r: everything but the conffile goes.
	dpkg(t, "-r", "livefix")
	if st := status(t, "livefix"); st != "rc "+testVersion {
		t.Errorf("after dpkg -r: livefix status %q, want rc (config files only)", st)
	}
	for _, f := range files {
		keep := f == "/etc/livefix/livefix.conf" || f == "/etc/livefix"
		switch _, err := os.Lstat(f); {
		case keep && err != nil:
			t.Errorf("dpkg -r removed %s (only purge may)", f)
		case !keep && err == nil:
			t.Errorf("dpkg -r left %s", f)
		}
	}

	// dpkg --purge: nothing left at all.
	dpkg(t, "--purge", "livefix")
	if st := status(t, "livefix"); st != "" {
		t.Errorf("after dpkg --purge: livefix status %q", st)
	}
	for _, f := range append(files, "/etc/livefix", "/var/lib/livefix") {
		if _, err := os.Lstat(f); err == nil {
			t.Errorf("dpkg --purge left %s", f)
		}
	}

	// livefix-server: the same round trip.
	dpkg(t, "-i", pkgs["livefix-server"].Path)
	out, err = exec.Command("sh", "-c", sysPATH+" livefix-server --version").CombinedOutput()
	if want := "livefix-server " + testVersion + "\n"; err != nil || string(out) != want {
		t.Errorf("livefix-server --version = %q (%v), want %q", out, err, want)
	}
	verifyInstalled(t, "/lib/systemd/system/livefix-server.service")
	serverFiles := listFiles(t, "livefix-server")
	dpkg(t, "--purge", "livefix-server")
	for _, f := range serverFiles {
		if _, err := os.Lstat(f); err == nil {
			t.Errorf("dpkg --purge livefix-server left %s", f)
		}
	}

	after := livefixPaths(t)
	for _, p := range after {
		if !slices.Contains(before, p) {
			t.Errorf("left behind after purge: %s", p)
		}
	}
	for _, p := range before {
		if !slices.Contains(after, p) {
			t.Errorf("removed although not installed by the packages: %s", p)
		}
	}
}

// lockMachine takes the machine-wide lock of the install test, waiting
// for another run to finish; the test's cleanup releases it last.
func lockMachine(t *testing.T) {
	t.Helper()
	f, err := os.OpenFile(machineLock, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	deadline := time.Now().Add(10 * time.Minute)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) || time.Now().After(deadline) {
			t.Fatalf("lock %s: %v (another install test still running?)", machineLock, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// dpkg runs dpkg, retrying while another process (apt in another test's
// setup) holds the package database lock.
func dpkg(t *testing.T, args ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Minute)
	for {
		cmd := exec.Command("dpkg", args...)
		cmd.Env = append(os.Environ(), sysPATH, "DEBIAN_FRONTEND=noninteractive")
		out, err := cmd.CombinedOutput()
		if err == nil {
			return
		}
		if strings.Contains(string(out), "lock") && time.Now().Before(deadline) {
			time.Sleep(2 * time.Second)
			continue
		}
		t.Fatalf("dpkg %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// status is the package's dpkg status and version ("ii 1.0", "rc 1.0"),
// or "" when dpkg does not know it or it is purged.
func status(t *testing.T, name string) string {
	t.Helper()
	out, err := exec.Command("dpkg-query", "-W", "-f=${db:Status-Abbrev}|${Version}", name).Output()
	if err != nil {
		return ""
	}
	abbrev, version, _ := strings.Cut(string(out), "|")
	abbrev = strings.TrimSpace(abbrev)
	if abbrev == "" || abbrev == "un" || abbrev == "pn" {
		return ""
	}
	return abbrev + " " + version
}

// listFiles returns what dpkg -L lists that is not a directory shared
// with other packages (directories the package alone owns are kept).
func listFiles(t *testing.T, name string) []string {
	t.Helper()
	out, err := exec.Command("dpkg", "-L", name).Output()
	if err != nil {
		t.Fatalf("dpkg -L %s: %v", name, err)
	}
	var files []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l == "" || l == "/." {
			continue
		}
		if isDir(l) && !strings.Contains(l, "livefix") {
			continue // /usr, /usr/share/man, ... belong to everyone
		}
		files = append(files, l)
	}
	if len(files) < 5 {
		t.Fatalf("dpkg -L %s lists only %v", name, files)
	}
	return files
}

// isDir follows symbolic links: /lib is one on a merged-/usr system.
func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}

// verifyInstalled runs systemd-analyze verify on installed units: the
// binaries and man pages are where the units say.
func verifyInstalled(t *testing.T, units ...string) {
	t.Helper()
	for _, u := range units {
		out, err := exec.Command("systemd-analyze", "verify", u).CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "" {
			t.Errorf("systemd-analyze verify %s (installed): %v\n%s", u, err, out)
		}
	}
}

// setAside moves paths out of the way for the test (purge deletes
// /var/lib/livefix) and puts them back afterwards.
func setAside(t *testing.T, paths ...string) {
	t.Helper()
	for _, p := range paths {
		saved := p + savedSuffix
		if _, err := os.Lstat(saved); err == nil {
			// A killed run set it aside: restore it first.
			if _, err := os.Lstat(p); err == nil {
				t.Fatalf("both %s and %s exist; keep one by hand", p, saved)
			}
			if err := os.Rename(saved, p); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := os.Lstat(p); err != nil {
			continue
		}
		t.Logf("setting %s aside during the test", p)
		if err := os.Rename(p, saved); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if _, err := os.Lstat(p); err == nil {
				// Not the packages' doing (purge removes it, and it is
				// checked): something else made it meanwhile. Lose
				// neither.
				t.Logf("%s was made again during the test; the original stays at %s", p, saved)
				return
			}
			if err := os.Rename(saved, p); err != nil {
				t.Errorf("restore %s: %v", p, err)
			}
		})
	}
}

// livefixPaths lists the paths named *livefix* where packages and their
// maintainer scripts put files (including dpkg's and
// deb-systemd-helper's own records), leaving out the test's own.
func livefixPaths(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, root := range []string{"/etc", "/usr/lib/systemd", "/usr/sbin", "/usr/bin", "/usr/share/man", "/usr/share/doc",
		"/usr/share/bash-completion", "/usr/share/lintian", "/var/lib"} {
		filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil // unreadable or vanished while walking
			}
			if d.IsDir() && (p == "/var/lib/docker" || p == "/var/lib/postgresql" || strings.HasPrefix(p, "/var/lib/lxcfs")) {
				return fs.SkipDir
			}
			name := d.Name()
			if strings.Contains(name, "livefix") && !strings.Contains(name, "livefix-deb-test") && !strings.HasSuffix(name, savedSuffix) {
				out = append(out, p)
			}
			return nil
		})
	}
	return out
}
