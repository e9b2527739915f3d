package kexec

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

type fake struct {
	sys      *System
	loaded   string // command line of the loaded image
	loadErr  error
	execErr  error
	unloaded bool
}

func newFake(t *testing.T, releases ...string) *fake {
	root := t.TempDir()
	for _, d := range []string{"boot", "proc/sys/kernel", "security"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	for _, r := range releases {
		os.WriteFile(filepath.Join(root, "boot", "vmlinuz-"+r), []byte("kernel"), 0o644)
		os.WriteFile(filepath.Join(root, "boot", "initrd.img-"+r), []byte("initrd"), 0o644)
	}
	os.WriteFile(filepath.Join(root, "proc", "cmdline"), []byte("BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro quiet\n"), 0o644)
	f := &fake{}
	f.sys = &System{
		Boot: filepath.Join(root, "boot"), Proc: filepath.Join(root, "proc"), Security: filepath.Join(root, "security"),
		Load: func(k, i *os.File, cmdline string) error {
			if f.loadErr != nil {
				return f.loadErr
			}
			f.loaded = cmdline
			return nil
		},
		Unload: func() error { f.unloaded = true; f.loaded = ""; return nil },
		Exec:   func() error { return f.execErr },
	}
	return f
}

func TestFind(t *testing.T) {
	f := newFake(t, "6.1.0-9-amd64", "6.1.0-10-amd64", "5.10.0-30-amd64")
	rels, _ := f.sys.Installed()
	if want := []string{"5.10.0-30-amd64", "6.1.0-9-amd64", "6.1.0-10-amd64"}; !slices.Equal(rels, want) {
		t.Errorf("installed %v, want %v", rels, want)
	}
	img, err := f.sys.Find("", "livefix_test=1")
	if err != nil {
		t.Fatal(err)
	}
	if img.Release != "6.1.0-10-amd64" || img.Cmdline != "BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro quiet livefix_test=1" {
		t.Errorf("image %+v", img)
	}
	if img, err := f.sys.Find("5.10.0-30-amd64", ""); err != nil || !strings.HasSuffix(img.Initrd, "initrd.img-5.10.0-30-amd64") {
		t.Errorf("explicit release: %+v %v", img, err)
	}
	if _, err := f.sys.Find("7.0.0-1-amd64", ""); err == nil || !strings.Contains(err.Error(), "nothing was loaded") {
		t.Errorf("missing release: %v", err)
	}
	os.Remove(filepath.Join(f.sys.Boot, "initrd.img-6.1.0-9-amd64"))
	if _, err := f.sys.Find("6.1.0-9-amd64", ""); err == nil || !strings.Contains(err.Error(), "update-initramfs -c -k 6.1.0-9-amd64") {
		t.Errorf("missing initrd: %v", err)
	}
	if _, err := newFake(t).sys.Find("", ""); err == nil || !strings.Contains(err.Error(), "no kernel in") {
		t.Errorf("no kernels: %v", err)
	}
}

func TestRefusals(t *testing.T) {
	tests := []struct {
		name     string
		err      error
		lockdown string
		disabled bool
		want     string
	}{
		{"lockdown", unix.EPERM, "none [integrity] confidentiality\n", false, "locked down (integrity)"},
		{"disabled", unix.EPERM, "", true, "kexec_load_disabled = 1"},
		{"not root", unix.EPERM, "[none] integrity confidentiality\n", false, "needs root"},
		{"signature", unix.EKEYREJECTED, "", false, "signature is not accepted"},
		{"not an image", unix.ENOEXEC, "", false, "not a bootable kernel image"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(t, "6.1.0-9-amd64")
			f.loadErr = tt.err
			if tt.lockdown != "" {
				os.WriteFile(filepath.Join(f.sys.Security, "lockdown"), []byte(tt.lockdown), 0o644)
			}
			if tt.disabled {
				os.WriteFile(filepath.Join(f.sys.Proc, "sys/kernel/kexec_load_disabled"), []byte("1\n"), 0o644)
			}
			img, err := f.sys.Find("", "")
			if err != nil {
				t.Fatal(err)
			}
			err = f.sys.LoadImage(img)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "nothing was loaded") || !errors.Is(err, tt.err) {
				t.Errorf("got %v, want %q", err, tt.want)
			}
			if f.loaded != "" {
				t.Errorf("something was loaded")
			}
		})
	}
}

func TestJumpFailureUnloads(t *testing.T) {
	f := newFake(t, "6.1.0-9-amd64")
	img, _ := f.sys.Find("", "")
	if err := f.sys.LoadImage(img); err != nil {
		t.Fatal(err)
	}
	f.execErr = unix.EPERM
	err := f.sys.Jump()
	if err == nil || !f.unloaded || f.loaded != "" || !strings.Contains(err.Error(), "nothing changed") {
		t.Errorf("jump failure: %v (unloaded %v)", err, f.unloaded)
	}
}
