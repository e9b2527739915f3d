package proc

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
)

// Mapping is one line of /proc/PID/maps.
type Mapping struct {
	Start, End uint64 // [Start, End)
	Perm       string // e.g. "r-xp"
	Offset     uint64 // file offset of Start
	Dev        string // "major:minor" in hex, as printed by the kernel
	Inode      uint64
	Path       string // file path, "[heap]", "[stack]", "[vdso]", ... or "" for anonymous memory
}

const deletedSuffix = " (deleted)"

// Size returns End-Start.
func (m Mapping) Size() uint64 { return m.End - m.Start }

// Contains reports whether addr lies inside the mapping.
func (m Mapping) Contains(addr uint64) bool { return addr >= m.Start && addr < m.End }

// Readable, Writable, Executable and Shared decode Perm.
func (m Mapping) Readable() bool   { return len(m.Perm) > 0 && m.Perm[0] == 'r' }
func (m Mapping) Writable() bool   { return len(m.Perm) > 1 && m.Perm[1] == 'w' }
func (m Mapping) Executable() bool { return len(m.Perm) > 2 && m.Perm[2] == 'x' }
func (m Mapping) Shared() bool     { return len(m.Perm) > 3 && m.Perm[3] == 's' }

// FileBacked reports whether the mapping maps a file (as opposed to
// anonymous memory or a kernel-provided region such as [vdso]).
func (m Mapping) FileBacked() bool { return m.Inode != 0 && m.Path != "" && m.Path[0] != '[' }

// Deleted reports whether the mapped file has been unlinked (or replaced)
// since it was mapped; the kernel then appends " (deleted)" to the path.
func (m Mapping) Deleted() bool { return strings.HasSuffix(m.Path, deletedSuffix) }

// FilePath returns Path without a " (deleted)" suffix.
func (m Mapping) FilePath() string { return strings.TrimSuffix(m.Path, deletedSuffix) }

// MapFile returns the /proc/PID/map_files entry for the mapping; opening it
// yields exactly the mapped file even if Path was deleted or replaced.
// Opening it needs CAP_SYS_ADMIN (or CAP_CHECKPOINT_RESTORE).
func (m Mapping) MapFile(pid int) string {
	return fmt.Sprintf("/proc/%d/map_files/%x-%x", pid, m.Start, m.End)
}

// String formats the mapping the way the kernel does (modulo padding).
func (m Mapping) String() string {
	s := fmt.Sprintf("%08x-%08x %s %08x %s %d", m.Start, m.End, m.Perm, m.Offset, m.Dev, m.Inode)
	if m.Path != "" {
		s += " " + m.Path
	}
	return s
}

// ParseMaps parses the contents of a /proc/PID/maps file. Every line must
// be well formed; the error names the first bad line.
func ParseMaps(r io.Reader) ([]Mapping, error) {
	var out []Mapping
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		if line == "" {
			continue
		}
		m, err := parseMapsLine(line)
		if err != nil {
			return nil, fmt.Errorf("maps line %d: %w", n, err)
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read maps: %w", err)
	}
	return out, nil
}

// nextField splits s at the first space.
func nextField(s string) (field, rest string) {
	i := strings.IndexByte(s, ' ')
	if i < 0 {
		return s, ""
	}
	return s[:i], s[i+1:]
}

func parseHex(s, what string) (uint64, error) {
	if s == "" {
		return 0, fmt.Errorf("empty %s", what)
	}
	v, err := strconv.ParseUint(s, 16, 64)
	if err != nil {
		return 0, fmt.Errorf("bad %s %q", what, s)
	}
	return v, nil
}

func parseMapsLine(line string) (Mapping, error) {
	var m Mapping
	rng, rest := nextField(line)
	lo, hi, ok := strings.Cut(rng, "-")
	if !ok {
		return m, fmt.Errorf("bad address range %q", rng)
	}
	var err error
	if m.Start, err = parseHex(lo, "start address"); err != nil {
		return m, err
	}
	if m.End, err = parseHex(hi, "end address"); err != nil {
		return m, err
	}
	if m.End < m.Start {
		return m, fmt.Errorf("range %q ends before it starts", rng)
	}
	m.Perm, rest = nextField(rest)
	if len(m.Perm) != 4 {
		return m, fmt.Errorf("bad permissions %q", m.Perm)
	}
	for i := 0; i < 4; i++ {
		c := m.Perm[i]
		if c != '-' && c != "rwxp"[i] && !(i == 3 && c == 's') {
			return m, fmt.Errorf("bad permissions %q", m.Perm)
		}
	}
	var off string
	off, rest = nextField(rest)
	if m.Offset, err = parseHex(off, "offset"); err != nil {
		return m, err
	}
	m.Dev, rest = nextField(rest)
	if major, minor, ok := strings.Cut(m.Dev, ":"); !ok || major == "" || minor == "" ||
		strings.Trim(major, "0123456789abcdefABCDEF") != "" || strings.Trim(minor, "0123456789abcdefABCDEF") != "" {
		return m, fmt.Errorf("bad device %q", m.Dev)
	}
	var ino string
	ino, rest = nextField(rest)
	if m.Inode, err = strconv.ParseUint(ino, 10, 64); err != nil {
		return m, fmt.Errorf("bad inode %q", ino)
	}
	// The kernel pads with spaces to a fixed column before the path; the
	// path itself runs to the end of the line and may contain spaces.
	m.Path = strings.TrimLeft(rest, " ")
	return m, nil
}

// ReadMaps reads and parses /proc/PID/maps.
func ReadMaps(pid int) ([]Mapping, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return nil, procErr(pid, "read maps", err)
	}
	maps, err := ParseMaps(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("pid %d: %w", pid, err)
	}
	return maps, nil
}

// procErr turns errors from reading /proc/PID into the package sentinels.
func procErr(pid int, what string, err error) error {
	switch {
	case errors.Is(err, os.ErrNotExist), isESRCH(err):
		return fmt.Errorf("pid %d: %s: %w", pid, what, ErrNoProcess)
	case errors.Is(err, os.ErrPermission):
		return fmt.Errorf("pid %d: %s: %w (%w)", pid, what, ErrPermission, err)
	}
	return fmt.Errorf("pid %d: %s: %w", pid, what, err)
}

// Processes lists the pids in /proc, ascending.
func Processes() ([]int, error) {
	d, err := os.Open("/proc")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	pids := make([]int, 0, len(names))
	for _, n := range names {
		if pid, err := strconv.Atoi(n); err == nil && pid > 0 {
			pids = append(pids, pid)
		}
	}
	sort.Ints(pids)
	return pids, nil
}

// tasks lists the thread ids in /proc/PID/task.
func tasks(pid int) ([]int, error) {
	d, err := os.Open(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return nil, procErr(pid, "list threads", err)
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, procErr(pid, "list threads", err)
	}
	tids := make([]int, 0, len(names))
	for _, n := range names {
		if tid, err := strconv.Atoi(n); err == nil {
			tids = append(tids, tid)
		}
	}
	return tids, nil
}
