package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/livefix/livefix/agent/agentstatus"
)

// Status is the agent's last view of the repository, kept in
// STATE/agent/status.json for livefix status and info (agentstatus, which
// the livefix command reads without linking this package).
type Status = agentstatus.Status

// StatusPath is the status file in a state directory.
func StatusPath(stateDir string) string { return agentstatus.StatusPath(stateDir) }

// ReadStatus reads the agent status of a state directory; nil and no
// error when the agent never ran.
func ReadStatus(stateDir string) (*Status, error) { return agentstatus.ReadStatus(stateDir) }

// record writes the status after an update attempt. Errors writing it
// are reported to the progress writer: the update itself stands.
func (a *Agent) record(rep *Report, uerr error) {
	old := a.status.last
	if old == nil || statID(StatusPath(a.Config.StateDir)) != a.status.file {
		old, _ = ReadStatus(a.Config.StateDir)
	}
	s := Status{Repository: a.Config.Repository, Channel: a.Config.Channel, LastCheck: rep.Time, Reachable: true}
	if old != nil {
		s.LastSuccess, s.LastChange, s.AvailableLevel, s.CVEs, s.Summary = old.LastSuccess, old.LastChange, old.AvailableLevel, old.CVEs, old.Summary
	}
	s.KernelBuildID, s.AppliedLevel = rep.KernelBuildID, rep.Applied
	switch {
	case uerr != nil:
		s.Error = uerr.Error()
		s.Reachable = !errors.Is(uerr, ErrUnreachable)
		s.Result = fmt.Sprintf("kept level %d: %v", rep.Applied, uerr)
		if rep.Kernel.Action != "" && rep.Kernel.Action != ActionNone {
			s.Result = fmt.Sprintf("%s to level %d failed, level %d kept: %v", rep.Kernel.Action, rep.Kernel.To, rep.Applied, uerr)
		}
	default:
		s.LastSuccess = rep.Time
		s.AvailableLevel, s.CVEs, s.Summary, s.NextDue, s.User = rep.Available, rep.CVEs, rep.Summary, rep.NextDue, rep.User
		s.Result = rep.Kernel.Reason
		if rep.Done {
			s.LastChange = rep.Time
			s.Result = fmt.Sprintf("%s: level %d -> %d (%s)", rep.Kernel.Action, rep.Kernel.From, rep.Kernel.To, rep.Kernel.Reason)
		} else if rep.DryRun && rep.Kernel.Action != ActionNone {
			s.Result = fmt.Sprintf("would %s: level %d -> %d (%s)", rep.Kernel.Action, rep.Kernel.From, rep.Kernel.To, rep.Kernel.Reason)
		}
	}
	b, _ := json.MarshalIndent(s, "", "  ")
	// Renamed into place (readers see a whole file) but not fsynced: the
	// status is rewritten at every check, and a fleet of agents on one
	// disk would otherwise queue on fsync.
	name := StatusPath(a.Config.StateDir)
	id, err := replaceFile(name, append(b, '\n'), 0o644)
	if errors.Is(err, fs.ErrNotExist) {
		if err = os.MkdirAll(a.stateDir(), 0o755); err == nil {
			id, err = replaceFile(name, append(b, '\n'), 0o644)
		}
	}
	a.status.last, a.status.file = &s, id
	if err != nil {
		a.status.last = nil
		fmt.Fprintf(a.progress(), "warning: %v\n", err)
	}
}

// statusCache is the status this agent wrote last and the identity of
// the file it wrote, so that the next record need not read it back.
type statusCache struct {
	last *Status
	file fileID
}

// replaceFile writes through a temporary file and rename, without
// fsync, and returns the identity of the file written.
func replaceFile(name string, data []byte, mode os.FileMode) (fileID, error) {
	f, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".*")
	if err != nil {
		return fileID{}, fmt.Errorf("write %s: %w", name, err)
	}
	_, err = f.Write(data)
	if err == nil && mode != 0o600 { // CreateTemp's mode
		err = f.Chmod(mode)
	}
	var id fileID
	if err == nil {
		var fi os.FileInfo
		if fi, err = f.Stat(); err == nil {
			id = identity(fi)
		}
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), name)
	}
	if err != nil {
		os.Remove(f.Name())
		return fileID{}, fmt.Errorf("write %s: %w", name, err)
	}
	return id, nil
}
