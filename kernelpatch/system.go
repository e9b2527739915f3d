package kernelpatch

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/livefix/livefix/buildid"
)

// System is the kernel a Manager works on. Host() returns the running
// kernel; tests point the paths and syscalls at a fake.
type System struct {
	Livepatch string // /sys/kernel/livepatch
	Proc      string // /proc
	Notes     string // /sys/kernel/notes (vmlinux ELF notes)
	Module    string // /sys/module
	Kmsg      string // /dev/kmsg, read for the kernel's reason when a load fails
	StateDir  string // where Load records the metadata of applied patches

	// LoadModule loads a module from an open file (finit_module).
	LoadModule func(f *os.File, params string) error
	// DeleteModule removes a module without waiting (delete_module with
	// O_NONBLOCK).
	DeleteModule func(name string) error
	// Release returns the running kernel's release (uname -r).
	Release func() (string, error)
	// WriteAttr writes a sysfs attribute; nil means a plain write.
	WriteAttr func(path, value string) error
}

// DefaultStateDir is where Host's System records applied patches.
const DefaultStateDir = "/run/livefix/kernel"

// Host returns the running kernel.
func Host() *System {
	return &System{
		Livepatch: "/sys/kernel/livepatch",
		Proc:      "/proc",
		Notes:     "/sys/kernel/notes",
		Module:    "/sys/module",
		Kmsg:      "/dev/kmsg",
		StateDir:  DefaultStateDir,
		LoadModule: func(f *os.File, params string) error {
			return unix.FinitModule(int(f.Fd()), params, 0)
		},
		DeleteModule: func(name string) error {
			return unix.DeleteModule(name, unix.O_NONBLOCK)
		},
		Release: func() (string, error) {
			var u unix.Utsname
			if err := unix.Uname(&u); err != nil {
				return "", fmt.Errorf("uname: %w", err)
			}
			return string(bytes.TrimRight(u.Release[:], "\x00")), nil
		},
	}
}

// Patch is one live patch known to the kernel.
type Patch struct {
	Name       string   `json:"name"`
	Enabled    bool     `json:"enabled"`
	Transition bool     `json:"transition"`         // a (un)patching transition is in progress
	Livefix    bool     `json:"livefix"`            // applied by livefix (its metadata is recorded)
	Level      int      `json:"level"`              // cumulative level, 0 when unknown
	Objects    []Object `json:"objects"`            // patched objects: vmlinux and modules
	Module     string   `json:"module,omitempty"`   // the .ko it was loaded from, when recorded
	Loaded     string   `json:"loaded,omitempty"`   // when livefix loaded it (RFC 3339)
	Metadata   string   `json:"metadata,omitempty"` // recorded metadata file
}

// Object is one patched object of a patch.
type Object struct {
	Name      string     `json:"name"`    // "vmlinux" or a module name
	Patched   bool       `json:"patched"` // false for a module that is not loaded
	Functions []Function `json:"functions"`
}

// Function is one replaced function.
type Function struct {
	Name   string `json:"name"`
	Sympos int    `json:"sympos"` // position among same-named symbols, 0 when unique
}

// patchDir returns the sysfs directory of patch name.
func (s *System) patchDir(name string) string { return filepath.Join(s.Livepatch, name) }

// exists reports whether the kernel knows patch name.
func (s *System) exists(name string) bool {
	_, err := os.Stat(s.patchDir(name))
	return err == nil
}

// readBool reads a sysfs attribute holding 0 or 1.
func readBool(path string) (bool, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, syscall.ENODEV) {
		// The attribute's kobject is being removed: the patch is gone.
		return false, fmt.Errorf("%s: %w", path, fs.ErrNotExist)
	}
	if err != nil {
		return false, err
	}
	switch strings.TrimSpace(string(b)) {
	case "1":
		return true, nil
	case "0":
		return false, nil
	}
	return false, fmt.Errorf("%s: unexpected content %q", path, strings.TrimSpace(string(b)))
}

// setEnabled writes patch name's enabled attribute.
func (s *System) setEnabled(name string, on bool) error {
	v := "0"
	if on {
		v = "1"
	}
	path := filepath.Join(s.patchDir(name), "enabled")
	if s.WriteAttr != nil {
		return s.WriteAttr(path, v)
	}
	return writeAttr(path, v)
}

// writeAttr writes value to a sysfs attribute.
func writeAttr(path, value string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(value)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// state reads a patch's enabled and transition attributes.
func (s *System) state(name string) (enabled, transition bool, err error) {
	dir := s.patchDir(name)
	if enabled, err = readBool(filepath.Join(dir, "enabled")); err != nil {
		return false, false, err
	}
	if transition, err = readBool(filepath.Join(dir, "transition")); err != nil {
		return false, false, err
	}
	return enabled, transition, nil
}

// List returns the live patches the kernel knows, sorted by name, with
// the level and module recorded by Load for those livefix applied.
func (s *System) List() ([]Patch, error) {
	entries, err := os.ReadDir(s.Livepatch)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("list live patches: %s does not exist; this kernel was built without CONFIG_LIVEPATCH or sysfs is not mounted", s.Livepatch)
	}
	if err != nil {
		return nil, fmt.Errorf("list live patches: %w", err)
	}
	var out []Patch
	for _, e := range entries {
		p, err := s.Get(e.Name())
		if errors.Is(err, fs.ErrNotExist) {
			continue // freed while we looked
		}
		if err != nil {
			return nil, err
		}
		out = append(out, *p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Get returns one live patch; the error wraps fs.ErrNotExist when the
// kernel does not know it.
func (s *System) Get(name string) (*Patch, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	dir := s.patchDir(name)
	p := &Patch{Name: name}
	var err error
	if p.Enabled, p.Transition, err = s.state(name); err != nil {
		return nil, fmt.Errorf("live patch %s: %w", name, err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("live patch %s: %w", name, err)
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		obj := Object{Name: e.Name()}
		objDir := filepath.Join(dir, e.Name())
		obj.Patched, _ = readBool(filepath.Join(objDir, "patched")) // absent before 5.x kernels
		funcs, err := os.ReadDir(objDir)
		if err != nil {
			return nil, fmt.Errorf("live patch %s: %w", name, err)
		}
		for _, f := range funcs {
			if !f.IsDir() {
				continue
			}
			fn := Function{Name: f.Name()}
			if i := strings.LastIndexByte(f.Name(), ','); i >= 0 {
				fn.Name = f.Name()[:i]
				fn.Sympos, _ = strconv.Atoi(f.Name()[i+1:])
			}
			obj.Functions = append(obj.Functions, fn)
		}
		p.Objects = append(p.Objects, obj)
	}
	if rec, err := s.readRecord(name); err == nil {
		p.Livefix = true
		p.Level = rec.Metadata.Level
		p.Module = rec.Module
		p.Loaded = rec.Loaded
		p.Metadata = s.recordPath(name)
	}
	return p, nil
}

// Version returns the effective kernel version: the running release,
// followed by "+livefixN" when livefix patches are enabled, N being the
// highest enabled level.
func (s *System) Version() (release string, level int, err error) {
	release, err = s.Release()
	if err != nil {
		return "", 0, fmt.Errorf("kernel version: %w", err)
	}
	patches, err := s.List()
	if err != nil {
		if _, serr := os.Stat(s.Livepatch); errors.Is(serr, fs.ErrNotExist) {
			return release, 0, nil // no livepatch support: nothing can be applied
		}
		return "", 0, fmt.Errorf("kernel version: %w", err)
	}
	for _, p := range patches {
		if p.Enabled && p.Livefix && p.Level > level {
			level = p.Level
		}
	}
	return release, level, nil
}

// FormatVersion formats Version's result.
func FormatVersion(release string, level int) string {
	if level <= 0 {
		return release
	}
	return release + "+livefix" + strconv.Itoa(level)
}

// KernelBuildID returns the GNU build-id of the running vmlinux from its
// ELF notes (/sys/kernel/notes), hex encoded.
func (s *System) KernelBuildID() (string, error) {
	b, err := os.ReadFile(s.Notes)
	if err != nil {
		return "", fmt.Errorf("kernel build-id: %w", err)
	}
	id, err := buildid.FromNotes(b)
	if err != nil {
		return "", fmt.Errorf("kernel build-id: %s: %w", s.Notes, err)
	}
	return hex.EncodeToString(id), nil
}

// checkName refuses names that cannot be a module name, so that a name
// from the command line never escapes the sysfs directory.
func checkName(name string) error {
	if name == "" || len(name) > 55 || strings.ContainsAny(name, "/\x00") || name == "." || name == ".." {
		return fmt.Errorf("invalid live patch name %q: a module name is 1-55 characters without '/'", name)
	}
	return nil
}

// record is what Load keeps under StateDir for an applied patch.
type record struct {
	Module   string   `json:"module"`
	Loaded   string   `json:"loaded"`
	Metadata Metadata `json:"metadata"`
}

func (s *System) recordPath(name string) string { return filepath.Join(s.StateDir, name+".json") }

func (s *System) readRecord(name string) (*record, error) {
	b, err := os.ReadFile(s.recordPath(name))
	if err != nil {
		return nil, err
	}
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", s.recordPath(name), err)
	}
	return &r, nil
}

func (s *System) writeRecord(name string, r record) error {
	if err := os.MkdirAll(s.StateDir, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	tmp := s.recordPath(name) + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, s.recordPath(name))
}

func (s *System) removeRecord(name string) { _ = os.Remove(s.recordPath(name)) }

// kmsgLines returns the last max kernel log messages that contain one of
// the given words, for explaining a failed load. Errors give nil: the log
// only decorates an error message.
func (s *System) kmsgLines(max int, words ...string) []string {
	if s.Kmsg == "" {
		return nil
	}
	// A raw descriptor, not an os.File: Go's poller would turn EAGAIN at
	// the end of /dev/kmsg into a wait for the next kernel message, which
	// may never come (a load refused with EPERM logs nothing).
	fd, err := unix.Open(s.Kmsg, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	defer unix.Close(fd)
	var out []string
	buf := make([]byte, 8192)
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		n, err := unix.Read(fd, buf)
		if errors.Is(err, unix.EPIPE) || errors.Is(err, unix.EINTR) { // records overwritten meanwhile: read on
			continue
		}
		if err != nil || n <= 0 {
			break // EAGAIN at the end of the log (0 at the end of a plain file)
		}
		// /dev/kmsg gives one record per read: "PRIO,SEQ,TIME,FLAGS;text\n"
		// followed by " KEY=value" continuation lines.
		for _, line := range strings.Split(string(buf[:n]), "\n") {
			if line == "" || line[0] == ' ' {
				continue
			}
			if i := strings.IndexByte(line, ';'); i >= 0 {
				line = line[i+1:]
			}
			for _, w := range words {
				if w != "" && strings.Contains(line, w) {
					out = append(out, line)
					break
				}
			}
		}
	}
	if len(out) > max {
		out = out[len(out)-max:]
	}
	return out
}
