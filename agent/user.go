package agent

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/livefix/livefix/agent/agentstatus"
	"github.com/livefix/livefix/internal/proc"
	"github.com/livefix/livefix/patchrepo"
	"github.com/livefix/livefix/ulp"
)

// UserPatcher applies userspace patches to running processes.
type UserPatcher interface {
	// Levels returns, for every running process that maps the object with
	// build-id id, the level of the livefix patch it runs for it (0: none).
	Levels(id string) (map[int]int, error)
	// Apply applies the .lfp at path to every process that maps its
	// target and runs a lower level (livefix process patch --all); it
	// returns how many processes took it and the failures.
	Apply(ctx context.Context, path string) (applied int, failures []string, err error)
	// Remove removes every patch for build-id id from every process.
	Remove(ctx context.Context, id string) (removed int, failures []string, err error)
}

// UserPlan is the decision and result for one userspace build-id.
type UserPlan = agentstatus.UserPlan

func (a *Agent) updateUser(ctx context.Context, cat *Catalog, now time.Time, dryRun bool) ([]UserPlan, error) {
	ids := map[string]bool{}
	for _, l := range cat.Levels {
		if l.Kind == patchrepo.KindUser {
			ids[l.BuildID] = true
		}
	}
	sorted := make([]string, 0, len(ids))
	for id := range ids {
		sorted = append(sorted, id)
	}
	sort.Strings(sorted)
	var plans []UserPlan
	for _, id := range sorted {
		levels := cat.ForBuildID(patchrepo.KindUser, id)
		var best *Level
		revoked := map[int]*Level{}
		for _, l := range levels {
			if ok, _ := a.eligible(l, now); ok {
				best = l
			}
			if l.Revoked != nil {
				revoked[l.Level] = l
			}
		}
		running, err := a.User.Levels(id)
		if err != nil {
			return plans, fmt.Errorf("userspace %s: %w", id, err)
		}
		var bad *Level
		pending := 0
		for _, lv := range running {
			if r := revoked[lv]; r != nil {
				bad = r
			}
			if best != nil && lv < best.Level {
				pending++
			}
		}
		if bad == nil && pending == 0 {
			continue
		}
		up := UserPlan{BuildID: id, Action: ActionApply, Processes: pending}
		if best != nil {
			up.Name, up.Level = best.Name, best.Level
			up.Reason = fmt.Sprintf("level %d is the highest %s level for it", best.Level, a.Config.Channel)
		}
		if bad != nil {
			up.Action, up.Processes = ActionDowngrade, len(running)
			up.Reason = fmt.Sprintf("level %d was revoked (%s)", bad.Level, bad.Revoked.Reason)
			if best == nil {
				up.Action, up.Name = ActionUnload, bad.Name
			}
		}
		if !dryRun {
			err = a.changeUser(ctx, cat, &up, bad != nil, best)
		}
		plans = append(plans, up)
		if err != nil {
			return plans, err
		}
	}
	return plans, nil
}

func (a *Agent) changeUser(ctx context.Context, cat *Catalog, up *UserPlan, remove bool, best *Level) error {
	var path string
	if best != nil {
		// Download and verify before touching any process.
		dir, err := a.newScratch(best.Name + "-")
		if err != nil {
			return err
		}
		defer dir.remove()
		if path, err = cat.download(ctx, best, best.Name+".lfp", dir); err != nil {
			return err
		}
	}
	if remove {
		n, fails, err := a.User.Remove(ctx, up.BuildID)
		up.Applied, up.Failures = n, fails
		if err != nil {
			return fmt.Errorf("userspace %s: remove revoked patch: %w", up.BuildID, err)
		}
	}
	if path == "" {
		return nil
	}
	n, fails, err := a.User.Apply(ctx, path)
	up.Applied, up.Failures = max(up.Applied, n), append(up.Failures, fails...)
	if err != nil {
		return fmt.Errorf("userspace patch %s level %d: %w", best.Name, best.Level, err)
	}
	return nil
}

// HostUser patches the host's processes through ulp, recording in
// stateDir (ulp.DefaultStateDir when empty).
func HostUser(stateDir string) UserPatcher { return &hostUser{dir: stateDir} }

type hostUser struct{ dir string }

func (h *hostUser) Levels(id string) (map[int]int, error) {
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
	out := map[int]int{}
	for _, pid := range pids {
		if pid != os.Getpid() {
			out[pid] = 0
		}
	}
	for _, r := range recs {
		if _, ok := out[r.Pid]; !ok {
			continue
		}
		for _, p := range r.Patches {
			if p.BuildID == id && p.Level > out[r.Pid] {
				out[r.Pid] = p.Level
			}
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
		switch {
		case e == nil:
			n++
		case errors.Is(e, ulp.ErrLevel): // already at this level or higher
		default:
			fails = append(fails, fmt.Sprintf("pid %d: %v", pids[i], e))
		}
	}
	return n, fails, nil
}

func (h *hostUser) Remove(ctx context.Context, id string) (int, []string, error) {
	recs, err := ulp.List(h.dir)
	if err != nil {
		return 0, nil, err
	}
	names := map[string]bool{}
	for _, r := range recs {
		for _, p := range r.Patches {
			if p.BuildID == id {
				names[p.Name] = true
			}
		}
	}
	n := 0
	var fails []string
	for name := range names {
		res, errs, err := ulp.UnpatchAll(name, ulp.Options{StateDir: h.dir})
		if err != nil {
			return n, fails, err
		}
		n += len(res)
		for _, e := range errs {
			fails = append(fails, e.Error())
		}
	}
	return n, fails, nil
}
