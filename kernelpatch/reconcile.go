package kernelpatch

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"time"

	"github.com/livefix/livefix/hoststate"
)

// reconcile compares the state with the kernel and repairs what an
// interrupted command left: a pending load or unload (the module loaded
// with no record, the record with no module, a transition left half
// done), the recorded level missing from the kernel in the boot that
// applied it, and inert modules of replaced livefix patches. It returns
// one line saying what it repaired, empty when nothing was needed.
func (ss *session) reconcile(ctx context.Context, o Options) (string, error) {
	var did []string
	changed := false
	st := ss.st
	s := ss.m.Sys
	if p := st.Pending; p != nil {
		changed = true
		msg, err := ss.finishPending(ctx, p, o)
		did = append(did, msg)
		if err != nil {
			_ = ss.save()
			return "repaired: " + strings.Join(did, "; "), err
		}
	}
	if a := st.Applied; a != nil && a.BootID != "" && a.BootID == ss.bootID {
		enabled, transition, err := s.state(a.Name)
		if errors.Is(err, fs.ErrNotExist) || (err == nil && !enabled && !transition) {
			did = append(did, fmt.Sprintf("level %d (%s) was recorded in this boot but is no longer in the kernel (removed outside livefix?); removed the record", a.Level, a.Name))
			st.Applied = nil
			changed = true
		}
	}
	if changed {
		if len(did) > 0 {
			st.Last = &hoststate.Event{Result: hoststate.ResultRepaired, At: ss.m.now(), Message: strings.Join(did, "; ")}
			if st.Applied != nil {
				st.Last.Level = st.Applied.Level
			}
		}
		if err := ss.save(); err != nil {
			return "repaired: " + strings.Join(did, "; "), err
		}
	}
	if len(did) == 0 {
		return "", nil
	}
	return "repaired: " + strings.Join(did, "; "), nil
}

// finishPending brings a change that a killed command left half done to
// an end the state can name, and records it.
func (ss *session) finishPending(ctx context.Context, p *hoststate.Pending, o Options) (string, error) {
	st := ss.st
	s := ss.m.Sys
	t := p.Target
	who := fmt.Sprintf("the interrupted %s of level %d (%s, pid %d)", p.Op, t.Level, t.Name, p.PID)
	if p.BootID != "" && ss.bootID != "" && p.BootID != ss.bootID {
		// Started in an earlier boot: nothing of it survives in this kernel.
		st.Pending = nil
		if p.Op == hoststate.OpUnload {
			st.Applied = nil
			return who + " was in an earlier boot: recorded it as unloaded", nil
		}
		return who + " was in an earlier boot: dropped it, the record keeps the previous level", nil
	}
	switch p.Op {
	case hoststate.OpLoad:
		enabled, transition, err := s.state(t.Name)
		if err == nil && transition {
			fmt.Fprintf(o.Progress, "%s left its transition running; waiting for it\n", who)
			werr := s.waitTransition(ctx, t.Name, enabled, o, &Result{})
			if werr == nil && enabled {
				return ss.loadCompleted(ctx, p, who+": its transition completed now; recorded level "+fmt.Sprint(t.Level), o), nil
			}
			if enabled {
				res := &Result{}
				rerr := s.rollBackLoad(t.Name, t.Name, werr, o, res)
				if res.Outcome != RolledBack {
					return who + ": its transition did not complete and could not be reversed", rerr
				}
				st.Pending = nil
				return who + ": its transition did not complete; reversed it and removed the module; the record keeps the previous level", nil
			}
			// A reverse transition (the load was being rolled back).
			if gerr := s.waitGone(t.Name, o.Timeout); gerr != nil {
				return who + ": its rollback did not finish", gerr
			}
			enabled, transition, err = false, false, fs.ErrNotExist
		}
		if err == nil && enabled && !transition {
			return ss.loadCompleted(ctx, p, who+": its transition had completed; recorded level "+fmt.Sprint(t.Level), o), nil
		}
		if err == nil && !enabled {
			// Disabled by a rollback that was interrupted.
			if gerr := s.waitGone(t.Name, o.Timeout); gerr != nil {
				return who + ": its rollback did not finish", gerr
			}
		}
		if s.moduleLoaded(t.Name) {
			if derr := s.deleteModule(ctx, t.Name, o); derr != nil {
				return who + ": the module stays loaded (inert)", fmt.Errorf("remove module %s: %w", t.Name, derr)
			}
			s.removeRecord(t.Name)
			st.Pending = nil
			return who + " was not applied: removed its module; the record keeps the previous level", nil
		}
		st.Pending = nil
		return who + " had not loaded anything; the record keeps the previous level", nil
	case hoststate.OpUnload:
		if s.exists(t.Name) || s.moduleLoaded(t.Name) {
			res, err := s.Unload(ctx, t.Name, o)
			if err != nil && res.Outcome != Unloaded && res.Outcome != Disabled {
				return who + ": finishing it failed", err
			}
		}
		st.Pending = nil
		st.Applied = nil
		return who + ": finished it; nothing is recorded now", nil
	}
	st.Pending = nil
	return fmt.Sprintf("dropped an unknown pending operation %q", p.Op), nil
}

// loadCompleted records a pending load whose transition completed, and
// removes the modules it replaced.
func (ss *session) loadCompleted(ctx context.Context, p *hoststate.Pending, msg string, o Options) string {
	st := ss.st
	s := ss.m.Sys
	t := p.Target
	t.AppliedAt = ss.m.now()
	t.BootID = ss.bootID
	if old := st.Applied; old != nil && old.Name != t.Name && !s.exists(old.Name) && s.moduleLoaded(old.Name) {
		if err := s.deleteModule(ctx, old.Name, o); err == nil {
			s.removeRecord(old.Name)
			msg += "; removed the replaced module " + old.Name
		}
	}
	st.Applied = &t
	st.Pending = nil
	st.Boot.Skipped = nil
	if _, err := s.readRecord(t.Name); err != nil {
		_ = s.writeRecord(t.Name, record{Module: t.Source, Loaded: ss.m.now().Format(time.RFC3339), Metadata: Metadata{Name: t.Name, Level: t.Level}})
	}
	return msg
}
