package ulp

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// DefaultStateDir holds one record per patched process.
const DefaultStateDir = "/run/livefix"

// Record is what livefix wrote into one process.
type Record struct {
	Pid int `json:"pid"`
	// StartTime is field 22 of /proc/PID/stat: with the pid it
	// identifies the process across pid reuse.
	StartTime uint64    `json:"start_time"`
	Comm      string    `json:"comm"`
	Patches   []Applied `json:"patches"`
	// Kept lists what removed patches left mapped (see Applied.Unmap).
	Kept []Kept `json:"kept,omitempty"`
	// Notes say what this command found in memory that the record did
	// not say, and what it did about it (never stored).
	Notes []string `json:"notes,omitempty"`
}

// Applied is one patch applied to a process.
type Applied struct {
	Name     string `json:"name"`
	Level    int    `json:"level"`
	BuildID  string `json:"build_id"`
	Target   string `json:"target"`
	Checksum string `json:"checksum"`
	// Region is the patch's mapping [Region, Region+Size); its code is
	// [Region, Region+TextEnd).
	Region    uint64        `json:"region"`
	Size      uint64        `json:"size"`
	TextEnd   uint64        `json:"text_end"`
	Funcs     []Redirect    `json:"funcs"`
	AppliedAt time.Time     `json:"applied_at"`
	Pause     time.Duration `json:"pause_ns"`
	// Head is the first bytes of the region as written: with the jumps
	// it tells this patch's memory from anything else at that address.
	Head []byte `json:"head,omitempty"`
	// State is empty once committed; "applying" or "removing" while a
	// command is in its commit stop (see reconcile).
	State string `json:"state,omitempty"`
	// Replaces is the lower level an "applying" patch replaces.
	Replaces *Applied `json:"replaces,omitempty"`
	// Unmap is how much of the region, from its start, is unmapped when
	// the patch is removed or replaced: its code pages, unless something
	// takes the address of the patch's code; 0 keeps it all. The rest
	// (read-only data, literals, slots, writable data) stays mapped for
	// good: the program may still point into it.
	Unmap uint64 `json:"unmap,omitempty"`
}

// Kept is memory of a removed or replaced patch that stays mapped
// because the program may still refer to it.
type Kept struct {
	Patch  string `json:"patch"`
	Region uint64 `json:"region"`
	Size   uint64 `json:"size"`
}

// Redirect is one jump written at a function entry.
type Redirect struct {
	Name string `json:"name"` // the running function
	Addr uint64 `json:"addr"` // its entry
	Size uint64 `json:"size"`
	At   uint64 `json:"at"`   // where the jmp is (after an endbr64)
	Orig []byte `json:"orig"` // the bytes the jmp replaced
	New  uint64 `json:"new"`  // the replacement's address
}

// store is the state directory, locked for the duration of one command.
type store struct {
	dir  string
	lock *os.File
}

func openStore(dir string) (*store, error) {
	if dir == "" {
		dir = DefaultStateDir
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", f.Name(), err)
	}
	return &store{dir: dir, lock: f}, nil
}

func (s *store) close() { s.lock.Close() }

func (s *store) path(pid int) string { return filepath.Join(s.dir, strconv.Itoa(pid)+".json") }

// startTime reads the start time and command name of pid.
func startTime(pid int) (uint64, string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, "", err
	}
	s := string(b)
	l, r := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if l < 0 || r < l {
		return 0, "", fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	comm := s[l+1 : r]
	f := strings.Fields(s[r+1:])
	// f[0] is field 3 (state); field 22 is f[19].
	if len(f) < 20 {
		return 0, "", fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	t, err := strconv.ParseUint(f[19], 10, 64)
	return t, comm, err
}

// load returns the record of a live process (an empty one if it has
// none), reconciled with the process's memory (see reconcile); a record
// left by an earlier process with the same pid is dropped, and a process
// without a record adopts the patches its memory shows it inherited.
func (s *store) load(pid int) (*Record, error) {
	st, comm, err := startTime(pid)
	if err != nil {
		s.drop(pid)
		return nil, fmt.Errorf("pid %d: no such process", pid)
	}
	rec := &Record{Pid: pid, StartTime: st, Comm: comm}
	old, err := s.read(pid)
	if err != nil {
		return nil, err
	}
	if old == nil || old.StartTime != st {
		if old != nil {
			s.drop(pid)
		}
		others, _ := s.raw()
		if adopt(rec, others) {
			if err := s.save(rec); err != nil {
				return nil, err
			}
		}
		return rec, nil
	}
	old.Comm = comm
	if reconcile(old) {
		if err := s.save(old); err != nil {
			return nil, err
		}
	}
	return old, nil
}

// read returns the stored record of pid as it is, nil if none.
func (s *store) read(pid int) (*Record, error) {
	b, err := os.ReadFile(s.path(pid))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	var old Record
	if err := json.Unmarshal(b, &old); err != nil {
		return nil, fmt.Errorf("state file %s is damaged (%v); if no livefix patch is applied to pid %d, remove it", s.path(pid), err, pid)
	}
	return &old, nil
}

// raw returns every stored record as it is (exited processes included).
func (s *store) raw() ([]*Record, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("read state directory: %w", err)
	}
	var out []*Record
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok {
			continue
		}
		pid, err := strconv.Atoi(name)
		if err != nil || pid <= 0 {
			continue
		}
		if r, err := s.read(pid); err == nil && r != nil {
			out = append(out, r)
		}
	}
	return out, nil
}

func (s *store) save(rec *Record) error {
	if len(rec.Patches) == 0 && len(rec.Kept) == 0 {
		s.drop(rec.Pid)
		return nil
	}
	c := *rec
	c.Notes = nil
	b, err := json.MarshalIndent(&c, "", "  ")
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	tmp := s.path(rec.Pid) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	if err := os.Rename(tmp, s.path(rec.Pid)); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	return nil
}

func (s *store) drop(pid int) { os.Remove(s.path(pid)) }

// all returns the records of live processes, reconciled, forgetting the
// others; processes without a record that inherited a recorded patch by
// fork (from a live or an exited parent) are adopted first.
func (s *store) all() ([]*Record, error) {
	raw, err := s.raw()
	if err != nil {
		return nil, err
	}
	known := map[int]bool{}
	for _, r := range raw {
		if st, _, err := startTime(r.Pid); err == nil && st == r.StartTime {
			known[r.Pid] = true
		}
	}
	adopted := map[int][]string{}
	if len(raw) > 0 {
		for _, pid := range allPids() {
			if known[pid] {
				continue
			}
			st, comm, err := startTime(pid)
			if err != nil {
				continue
			}
			rec := &Record{Pid: pid, StartTime: st, Comm: comm}
			if adopt(rec, raw) {
				s.save(rec)
				adopted[pid] = rec.Notes
			}
		}
	}
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("read state directory: %w", err)
	}
	var out []*Record
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok {
			continue
		}
		pid, err := strconv.Atoi(name)
		if err != nil || pid <= 0 {
			continue
		}
		rec, err := s.load(pid)
		if err != nil {
			continue // the process exited: forgotten
		}
		rec.Notes = append(adopted[pid], rec.Notes...)
		if len(rec.Patches) > 0 || len(rec.Notes) > 0 {
			out = append(out, rec)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Pid < out[j].Pid })
	return out, nil
}

// allPids lists the processes in /proc.
func allPids() []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil && pid > 0 && pid != os.Getpid() {
			out = append(out, pid)
		}
	}
	return out
}

// List returns the patches applied to live processes, as recorded in dir
// (DefaultStateDir if empty). Records of exited processes are removed.
func List(dir string) ([]*Record, error) {
	s, err := openStore(dir)
	if err != nil {
		return nil, err
	}
	defer s.close()
	return s.all()
}
