package kernelpatch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/livefix/livefix/hoststate"
)

// Status codes: `livefix status` exits with them.
const (
	StatusApplied    = 0 // the recorded level is applied
	StatusError      = 1 // status could not be determined
	StatusNothing    = 3 // no patch is recorded for this kernel
	StatusFailed     = 4 // applying failed, was skipped at boot, or has not happened in this boot
	StatusTransition = 5 // a transition is stalled or a change is incomplete
	StatusOff        = 6 // an off switch is set
)

// Status is the host's patch status.
type Status struct {
	Code     int    `json:"code"`
	State    string `json:"state"` // applied, nothing, failed, skipped, not applied, transition, off, error
	Message  string `json:"message"`
	Release  string `json:"release,omitempty"`
	BuildID  string `json:"build_id,omitempty"`
	Version  string `json:"effective_version,omitempty"`
	Level    int    `json:"level"` // highest enabled livefix level in the kernel
	Off      string `json:"off,omitempty"`
	Repaired string `json:"repaired,omitempty"`
	// BusyPID is the pid of a livefix command holding the lock (status
	// then did not reconcile).
	BusyPID  int                `json:"busy_pid,omitempty"`
	Recorded *hoststate.Level   `json:"recorded,omitempty"`
	Pending  *hoststate.Pending `json:"pending,omitempty"`
	Skipped  *hoststate.Mark    `json:"skipped,omitempty"`
	Last     *hoststate.Event   `json:"last,omitempty"`
	Patches  []Patch            `json:"patches"`
}

// Status reconciles (without waiting for the lock) and reports the host's
// patch status. off is the off switch in effect, if any.
func (m *Manager) Status(ctx context.Context, off string, o Options) *Status {
	st := &Status{Off: off, Patches: []Patch{}}
	errStatus := func(err error) *Status {
		st.Code, st.State, st.Message = StatusError, "error", err.Error()
		return st
	}
	repaired, locked, err := m.Reconcile(ctx, false, o)
	st.Repaired = repaired
	if err != nil {
		return errStatus(err)
	}
	if !locked {
		st.BusyPID = hoststate.HolderPID(m.State.LockPath())
	}
	if st.BuildID, err = m.Sys.KernelBuildID(); err != nil {
		return errStatus(err)
	}
	if st.Release, err = m.Sys.Release(); err != nil {
		return errStatus(err)
	}
	rec, err := m.State.Load(st.BuildID)
	if err != nil {
		return errStatus(err)
	}
	st.Recorded, st.Pending, st.Skipped, st.Last = rec.Applied, rec.Pending, rec.Boot.Skipped, rec.Last
	if _, serr := os.Stat(m.Sys.Livepatch); serr == nil {
		patches, err := m.Sys.List()
		if err != nil {
			return errStatus(err)
		}
		st.Patches = append(st.Patches, patches...)
	}
	var recordedLive, transition bool
	transitionName := ""
	for _, p := range st.Patches {
		ours := p.Livefix || (rec.Applied != nil && p.Name == rec.Applied.Name) || (rec.Pending != nil && p.Name == rec.Pending.Target.Name)
		if !ours {
			continue
		}
		if p.Enabled && p.Level > st.Level {
			st.Level = p.Level
		}
		if p.Transition {
			transition, transitionName = true, p.Name
		}
		if rec.Applied != nil && p.Name == rec.Applied.Name && p.Enabled && !p.Transition {
			recordedLive = true
		}
	}
	st.Version = FormatVersion(st.Release, st.Level)
	switch a := rec.Applied; {
	case off != "":
		st.Code, st.State = StatusOff, "off"
		st.Message = "livefix is off (" + off + ")"
		if st.Level > 0 {
			st.Message += fmt.Sprintf("; level %d is applied nonetheless", st.Level)
		} else {
			st.Message += "; no live patch is applied"
		}
	case transition:
		st.Code, st.State = StatusTransition, "transition"
		st.Message = "a patching transition of " + transitionName + " is in progress or stalled (see `livefix kernel list`)"
	case rec.Pending != nil:
		st.Code, st.State = StatusTransition, "transition"
		st.Message = fmt.Sprintf("a %s of level %d (%s) is incomplete", rec.Pending.Op, rec.Pending.Target.Level, rec.Pending.Target.Name)
		if st.BusyPID > 0 {
			st.Message += fmt.Sprintf(" (livefix pid %d is running it)", st.BusyPID)
		} else {
			st.Message += "; the next livefix command repairs it"
		}
	case a == nil:
		st.Code, st.State = StatusNothing, "nothing"
		st.Message = "no live patch recorded for this kernel (" + st.Release + ")"
		if st.Level > 0 {
			st.Message += fmt.Sprintf("; level %d is loaded without a record (--no-persist)", st.Level)
		}
	case recordedLive:
		st.Code, st.State = StatusApplied, "applied"
		st.Message = fmt.Sprintf("level %d (%s) applied: effective version %s", a.Level, a.Name, st.Version)
	case rec.Boot.Skipped != nil:
		st.Code, st.State = StatusFailed, "skipped"
		st.Message = fmt.Sprintf("level %d skipped: %s; run `livefix boot --retry`", rec.Boot.Skipped.Level, rec.Boot.Skipped.Reason)
	case rec.Last != nil && rec.Last.Result == hoststate.ResultFailed:
		st.Code, st.State = StatusFailed, "failed"
		st.Message = fmt.Sprintf("applying level %d (%s) failed: %s", a.Level, a.Name, rec.Last.Message)
	default:
		st.Code, st.State = StatusFailed, "not applied"
		st.Message = fmt.Sprintf("level %d (%s) is recorded but not applied in this boot; run `livefix boot`", a.Level, a.Name)
	}
	return st
}

// PatchInfo describes one applied live patch for `livefix info`.
type PatchInfo struct {
	Name      string    `json:"name"`
	Level     int       `json:"level"`
	Enabled   bool      `json:"enabled"`
	Recorded  bool      `json:"recorded"` // the persistent record names it
	BuiltAt   time.Time `json:"built_at,omitzero"`
	AppliedAt string    `json:"applied_at,omitempty"`
	CVEs      []string  `json:"cves"`
	Summary   string    `json:"summary,omitempty"`
	Functions []string  `json:"functions"` // OBJECT:FUNCTION
}

// infoMeta is the part of livefix-build's NAME.json that info shows.
type infoMeta struct {
	BuiltAt time.Time `json:"built_at"`
	CVEs    []string  `json:"cves"`
	Summary string    `json:"summary"`
}

// Info lists the live patches livefix applied that the kernel has
// enabled, with what their metadata says they fix.
func (m *Manager) Info() ([]PatchInfo, error) {
	buildID, err := m.Sys.KernelBuildID()
	if err != nil {
		return nil, err
	}
	rec, err := m.State.Load(buildID)
	if err != nil {
		return nil, err
	}
	var patches []Patch
	if _, serr := os.Stat(m.Sys.Livepatch); serr == nil {
		if patches, err = m.Sys.List(); err != nil {
			return nil, err
		}
	}
	out := []PatchInfo{}
	for _, p := range patches {
		recorded := rec.Applied != nil && rec.Applied.Name == p.Name
		if !p.Livefix && !recorded {
			continue
		}
		pi := PatchInfo{Name: p.Name, Level: p.Level, Enabled: p.Enabled, Recorded: recorded, AppliedAt: p.Loaded, CVEs: []string{}, Functions: []string{}}
		var raw []byte
		if r, err := m.Sys.readRecord(p.Name); err == nil {
			raw = r.Metadata.Raw
		}
		if recorded {
			if pi.Level == 0 {
				pi.Level = rec.Applied.Level
			}
			pi.AppliedAt = rec.Applied.AppliedAt.Format(time.RFC3339)
			if len(raw) == 0 && rec.Applied.Metadata != "" {
				raw, _ = os.ReadFile(m.State.ObjectPath(buildID, rec.Applied.Metadata, ".json"))
			}
		}
		if len(raw) > 0 {
			var im infoMeta
			if err := json.Unmarshal(raw, &im); err == nil {
				pi.BuiltAt, pi.Summary = im.BuiltAt, im.Summary
				if im.CVEs != nil {
					pi.CVEs = im.CVEs
				}
			}
		}
		for _, o := range p.Objects {
			for _, f := range o.Functions {
				pi.Functions = append(pi.Functions, o.Name+":"+f.Name)
			}
		}
		sort.Strings(pi.Functions)
		out = append(out, pi)
	}
	return out, nil
}

// IsLocked reports whether err is a lock timeout.
func IsLocked(err error) bool {
	var le *hoststate.LockedError
	return errors.As(err, &le)
}
