package agent

import (
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"time"

	"github.com/livefix/livefix/internal/proc"
	"github.com/livefix/livefix/patchrepo"
	"github.com/livefix/livefix/ulp"
)

// UserPatcher applies userspace patches to running processes.
type UserPatcher interface {
	// Lacking returns the processes that map the object with build-id id
	// and do not run level (or higher) of a patch for it.
	Lacking(id string, level int) ([]int, error)
	// Apply applies the .lfp at path to every process that maps its
	// target (livefix process patch --all); it returns how many
	// processes took it and the failures.
	Apply(ctx context.Context, path string) (applied int, failures []string, err error)
}

// UserPlan is the decision and result for one userspace build-id.
type UserPlan struct {
	BuildID   string   `json:"build_id"`
	Name      string   `json:"name"`
	Level     int      `json:"level"`
	Processes int      `json:"processes"` // mapping it without the level
	Applied   int      `json:"applied"`   // processes patched now
	Failures  []string `json:"failures,omitempty"`
}

func (a *Agent) updateUser(ctx context.Context, cat *Catalog, now time.Time, dryRun bool) ([]UserPlan, error) {
	var plans []UserPlan
	best := map[string]*Level{}
	for _, l := range cat.Levels {
		if l.Kind != patchrepo.KindUser {
			continue
		}
		if ok, _ := a.eligible(l, now); ok {
			best[l.BuildID] = l
		}
	}
	for id, l := range best {
		pids, err := a.User.Lacking(id, l.Level)
		if err != nil {
			return plans, fmt.Errorf("userspace %s: %w", id, err)
		}
		if len(pids) == 0 {
			continue
		}
		up := UserPlan{BuildID: id, Name: l.Name, Level: l.Level, Processes: len(pids)}
		if !dryRun {
			dir, err := os.MkdirTemp(mkdirAll(a.downloadDir()), l.Name+"-")
			if err != nil {
				return plans, err
			}
			path, err := cat.download(l, l.Name+".lfp", dir)
			if err == nil {
				up.Applied, up.Failures, err = a.User.Apply(ctx, path)
			}
			os.RemoveAll(dir)
			if err != nil {
				plans = append(plans, up)
				return plans, fmt.Errorf("userspace patch %s level %d: %w", l.Name, l.Level, err)
			}
		}
		plans = append(plans, up)
	}
	return plans, nil
}

// HostUser patches the host's processes through ulp, recording in
// stateDir (ulp.DefaultStateDir when empty).
func HostUser(stateDir string) UserPatcher { return &hostUser{dir: stateDir} }

type hostUser struct{ dir string }

func (h *hostUser) Lacking(id string, level int) ([]int, error) {
	raw, err := hex.DecodeString(id)
	if err != nil {
		return nil, err
	}
	pids, err := proc.MappingProcesses(raw)
	if err != nil {
		return nil, err
	}
	recs, err := ulp.List(h.dir)
	if err != nil {
		return nil, err
	}
	has := map[int]bool{}
	for _, r := range recs {
		for _, p := range r.Patches {
			if p.BuildID == id && p.Level >= level {
				has[r.Pid] = true
			}
		}
	}
	var out []int
	for _, pid := range pids {
		if !has[pid] && pid != os.Getpid() {
			out = append(out, pid)
		}
	}
	return out, nil
}

func (h *hostUser) Apply(ctx context.Context, path string) (int, []string, error) {
	p, err := ulp.ReadFile(path)
	if err != nil {
		return 0, nil, err
	}
	pids, _, errs, err := ulp.ApplyAll(p, ulp.Options{StateDir: h.dir})
	if err != nil {
		return 0, nil, err
	}
	n := 0
	var fails []string
	for i, e := range errs {
		if e != nil {
			fails = append(fails, fmt.Sprintf("pid %d: %v", pids[i], e))
		} else {
			n++
		}
	}
	return n, fails, nil
}
