package hoststate

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// DefaultRoot is the state directory used when neither --state-dir nor
// LIVEFIX_STATE_DIR says otherwise.
const DefaultRoot = "/var/lib/livefix"

// EnvRoot names the environment variable that overrides DefaultRoot.
const EnvRoot = "LIVEFIX_STATE_DIR"

// Root returns the state directory: flagValue if set, else $LIVEFIX_STATE_DIR,
// else DefaultRoot.
func Root(flagValue string) string {
	if flagValue != "" {
		return flagValue
	}
	if v := os.Getenv(EnvRoot); v != "" {
		return v
	}
	return DefaultRoot
}

// Format is the version of the state file layout.
const Format = 1

// Dir is a state directory.
type Dir struct {
	Root string
}

// Open returns the state directory at root; nothing is created until
// something is written.
func Open(root string) *Dir { return &Dir{Root: root} }

// State is the record of one kernel (one vmlinux build-id).
type State struct {
	Format  int    `json:"format"`
	BuildID string `json:"build_id"`
	Release string `json:"release,omitempty"`
	// Applied is the level livefix applied and re-applies at boot; nil
	// when nothing is recorded.
	Applied *Level `json:"applied,omitempty"`
	// Pending is a change that was started and not yet recorded as
	// finished; the next command reconciles it with the kernel.
	Pending *Pending `json:"pending,omitempty"`
	// Boot is the crash-loop guard of `livefix boot`.
	Boot Boot `json:"boot"`
	// Last is the outcome of the last change.
	Last *Event `json:"last,omitempty"`
}

// Level is an applied (or about to be applied) live patch.
type Level struct {
	Name     string `json:"name"`  // module and live patch name
	Level    int    `json:"level"` // cumulative level
	Module   string `json:"module_sha256"`
	Metadata string `json:"metadata_sha256,omitempty"` // empty when the patch had no NAME.json
	Source   string `json:"source,omitempty"`          // the .ko path it was loaded from
	// AppliedAt is when the transition completed; BootID the boot
	// (/proc/sys/kernel/random/boot_id) in which it did.
	AppliedAt time.Time `json:"applied_at,omitzero"`
	BootID    string    `json:"boot_id,omitempty"`
}

// Pending operations.
const (
	OpLoad   = "load"
	OpUnload = "unload"
)

// Pending is a change in progress: written (durably) before the kernel
// is touched, cleared when the outcome is recorded.
type Pending struct {
	Op      string    `json:"op"`
	Target  Level     `json:"target"` // for load, the new level; for unload, what is removed
	PID     int       `json:"pid"`
	BootID  string    `json:"boot_id,omitempty"`
	Started time.Time `json:"started"`
}

// Boot is what `livefix boot` keeps between boots.
type Boot struct {
	// InProgress is set (durably) before a boot-time load and cleared
	// when it ends either way. Still set at the next boot means that boot
	// died while loading.
	InProgress *Mark `json:"in_progress,omitempty"`
	// Skipped is set when a boot found InProgress still set and did not
	// load; it stays until `livefix boot --retry` or `livefix kernel load`.
	Skipped *Mark `json:"skipped,omitempty"`
}

// Mark is one crash-loop guard entry.
type Mark struct {
	Name   string    `json:"name"`
	Level  int       `json:"level"`
	At     time.Time `json:"at"`
	BootID string    `json:"boot_id,omitempty"`
	Reason string    `json:"reason,omitempty"`
}

// Event results.
const (
	ResultApplied  = "applied"
	ResultFailed   = "failed"
	ResultSkipped  = "skipped"
	ResultUnloaded = "unloaded"
	ResultRepaired = "repaired"
)

// Event is the outcome of a change.
type Event struct {
	Result  string    `json:"result"`
	Level   int       `json:"level,omitempty"`
	Message string    `json:"message,omitempty"`
	At      time.Time `json:"at"`
}

// lowerHex reports whether s is 2 to 128 lowercase hex digits (checked by
// hand: a regexp compiled at init costs every livefix command its cold
// start).
func lowerHex(s string) bool {
	if len(s) < 2 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

func checkBuildID(id string) error {
	if !lowerHex(id) {
		return fmt.Errorf("invalid vmlinux build-id %q (want lowercase hex)", id)
	}
	return nil
}

func (d *Dir) kernelDir(buildID string) string { return filepath.Join(d.Root, "kernel", buildID) }

// StatePath is the state file of a build-id.
func (d *Dir) StatePath(buildID string) string {
	return filepath.Join(d.kernelDir(buildID), "state.json")
}

// Load reads the state of a build-id; a missing file gives an empty
// State and no error.
func (d *Dir) Load(buildID string) (*State, error) {
	if err := checkBuildID(buildID); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(d.StatePath(buildID))
	if errors.Is(err, fs.ErrNotExist) {
		return &State{Format: Format, BuildID: buildID}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	return parseState(d.StatePath(buildID), buildID, b)
}

func parseState(path, buildID string, b []byte) (*State, error) {
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("read state %s: %w; move it away to start from an empty record", path, err)
	}
	if st.Format != Format {
		return nil, fmt.Errorf("read state %s: format %d, this livefix reads format %d", path, st.Format, Format)
	}
	if buildID != "" && st.BuildID != buildID {
		return nil, fmt.Errorf("read state %s: it names build-id %q; it is not this kernel's record", path, st.BuildID)
	}
	return &st, nil
}

// Save writes the state atomically, then removes the objects it no
// longer names.
func (d *Dir) Save(st *State) error {
	if err := checkBuildID(st.BuildID); err != nil {
		return err
	}
	st.Format = Format
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	if err := WriteFile(d.StatePath(st.BuildID), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	d.collect(st)
	return nil
}

// collect removes objects that st does not name. Failures only leave
// garbage, never a dangling reference.
func (d *Dir) collect(st *State) {
	keep := map[string]bool{}
	for _, l := range []*Level{st.Applied, pendingTarget(st)} {
		if l != nil {
			keep[l.Module+".ko"] = true
			keep[l.Metadata+".json"] = true
		}
	}
	dir := filepath.Join(d.kernelDir(st.BuildID), "objects")
	entries, _ := os.ReadDir(dir)
	removed := false
	for _, e := range entries {
		if !keep[e.Name()] {
			if os.Remove(filepath.Join(dir, e.Name())) == nil {
				removed = true
			}
		}
	}
	if removed {
		_ = syncDir(dir)
	}
}

func pendingTarget(st *State) *Level {
	if st.Pending == nil {
		return nil
	}
	return &st.Pending.Target
}

// PutObject stores data under its SHA-256 with extension ext (".ko" or
// ".json") for build-id and returns the hex digest.
func (d *Dir) PutObject(buildID string, data []byte, ext string) (string, error) {
	if err := checkBuildID(buildID); err != nil {
		return "", err
	}
	sum := sha256.Sum256(data)
	hexSum := hex.EncodeToString(sum[:])
	path := d.ObjectPath(buildID, hexSum, ext)
	if b, err := os.ReadFile(path); err == nil && sha256.Sum256(b) == sum {
		return hexSum, nil
	}
	if err := WriteFile(path, data, 0o644); err != nil {
		return "", fmt.Errorf("store object: %w", err)
	}
	return hexSum, nil
}

// ObjectPath is where PutObject keeps an object.
func (d *Dir) ObjectPath(buildID, sum, ext string) string {
	return filepath.Join(d.kernelDir(buildID), "objects", sum+ext)
}

// VerifyObject reads an object and checks its digest.
func (d *Dir) VerifyObject(buildID, sum, ext string) error {
	path := d.ObjectPath(buildID, sum, ext)
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("stored copy: %w", err)
	}
	got := sha256.Sum256(b)
	if hex.EncodeToString(got[:]) != sum {
		return fmt.Errorf("stored copy %s is corrupt (its SHA-256 is %x)", path, got)
	}
	return nil
}

// Others returns the states of every build-id except buildID, for telling
// the user that a record belongs to another kernel.
func (d *Dir) Others(buildID string) ([]*State, error) {
	entries, err := os.ReadDir(filepath.Join(d.Root, "kernel"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	var out []*State
	for _, e := range entries {
		if !e.IsDir() || e.Name() == buildID || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(d.Root, "kernel", e.Name(), "state.json"))
		if err != nil {
			continue
		}
		st, err := parseState("", e.Name(), b)
		if err != nil {
			continue
		}
		out = append(out, st)
	}
	return out, nil
}
