package kernelpatch

import (
	"context"
	"errors"
	"fmt"

	"github.com/livefix/livefix/hoststate"
)

// BootOptions control Boot.
type BootOptions struct {
	Options
	// Retry loads even when the crash-loop guard skipped the level, and
	// clears the guard.
	Retry bool
	// Off, when not empty, is the off switch in effect (e.g. "livefix=off
	// on the kernel command line"): Boot applies nothing.
	Off string
}

// Boot outcomes.
const (
	BootApplied        = "applied"         // the recorded level was loaded
	BootAlreadyApplied = "already applied" // it was already enabled
	BootNothing        = "nothing"         // no record for this kernel
	BootOtherKernel    = "other kernel"    // records exist, for other build-ids only
	BootSkipped        = "skipped"         // crash-loop guard
	BootFailed         = "failed"          // loading failed (rolled back or unchanged)
	BootOff            = "off"             // an off switch is set
)

// BootResult says what Boot did.
type BootResult struct {
	Outcome  string  `json:"outcome"`
	Message  string  `json:"message"`
	Level    int     `json:"level,omitempty"`
	Name     string  `json:"name,omitempty"`
	Load     *Result `json:"load,omitempty"`
	Repaired string  `json:"repaired,omitempty"`
}

// ErrSkipped is wrapped by Boot's error when the crash-loop guard skipped
// the level.
var ErrSkipped = errors.New("skipped by the crash-loop guard")

// Boot re-applies the level recorded for the running kernel's build-id,
// from the stored copies. Before loading it records (durably) that a
// boot-time load is in progress and clears that mark when the load ends
// either way; finding the mark still set means the previous boot died
// while loading, and then Boot loads nothing and records the level as
// skipped until `livefix boot --retry` or a `livefix kernel load`.
func (m *Manager) Boot(ctx context.Context, o BootOptions) (*BootResult, error) {
	o.Options = o.withDefaults()
	if o.Off != "" {
		return &BootResult{Outcome: BootOff, Message: "livefix is off (" + o.Off + "); nothing applied"}, nil
	}
	ss, repaired, err := m.begin(ctx, m.lockTimeout(), o.Options)
	if err != nil {
		return &BootResult{Outcome: BootFailed, Message: errString(err), Repaired: repaired}, fmt.Errorf("boot: %w", err)
	}
	defer ss.close()
	res := &BootResult{Repaired: repaired}
	st := ss.st
	a := st.Applied
	if a == nil {
		res.Outcome = BootNothing
		res.Message = "no live patch is recorded for this kernel (build-id " + st.BuildID + "); nothing applied"
		if others, _ := m.State.Others(st.BuildID); len(others) > 0 {
			res.Outcome = BootOtherKernel
			for _, o := range others {
				if o.Applied != nil {
					res.Message = fmt.Sprintf("the record (level %d, %s) belongs to another kernel (release %s, build-id %s), not the running one (build-id %s); nothing applied; the record is kept",
						o.Applied.Level, o.Applied.Name, o.Release, o.BuildID, st.BuildID)
					break
				}
			}
		}
		return res, nil
	}
	res.Level, res.Name = a.Level, a.Name
	if ss.appliedLive() {
		res.Outcome = BootAlreadyApplied
		res.Message = fmt.Sprintf("level %d (%s) is already applied", a.Level, a.Name)
		return res, nil
	}
	skip := func(reason string) (*BootResult, error) {
		res.Outcome = BootSkipped
		res.Message = fmt.Sprintf("level %d skipped: %s; run `livefix boot --retry` to load it anyway", a.Level, reason)
		return res, fmt.Errorf("boot: %s: %w", res.Message, ErrSkipped)
	}
	if o.Retry {
		st.Boot.Skipped = nil
		st.Boot.InProgress = nil
	}
	if sk := st.Boot.Skipped; sk != nil {
		return skip(sk.Reason)
	}
	if ip := st.Boot.InProgress; ip != nil {
		reason := "the previous boot did not finish loading it"
		st.Boot.Skipped = &hoststate.Mark{Name: ip.Name, Level: ip.Level, At: m.now(), BootID: ss.bootID, Reason: reason}
		st.Boot.InProgress = nil
		st.Last = &hoststate.Event{Result: hoststate.ResultSkipped, Level: a.Level, At: m.now(), Message: fmt.Sprintf("level %d skipped: %s", ip.Level, reason)}
		if err := ss.save(); err != nil {
			return res, fmt.Errorf("boot: %w", err)
		}
		return skip(reason)
	}
	fail := func(err error) (*BootResult, error) {
		res.Outcome = BootFailed
		res.Message = err.Error()
		st.Last = &hoststate.Event{Result: hoststate.ResultFailed, Level: a.Level, At: m.now(), Message: err.Error()}
		if serr := ss.save(); serr != nil {
			err = errors.Join(err, serr)
		}
		return res, fmt.Errorf("boot: %w", err)
	}
	if err := m.State.VerifyObject(st.BuildID, a.Module, ".ko"); err != nil {
		return fail(fmt.Errorf("level %d (%s): %w; nothing was loaded; load the patch again with `livefix kernel load`", a.Level, a.Name, err))
	}
	metaPath := ""
	if a.Metadata != "" {
		if err := m.State.VerifyObject(st.BuildID, a.Metadata, ".json"); err != nil {
			return fail(fmt.Errorf("level %d (%s): %w; nothing was loaded; load the patch again with `livefix kernel load`", a.Level, a.Name, err))
		}
		metaPath = m.State.ObjectPath(st.BuildID, a.Metadata, ".json")
	}
	// The crash-loop guard: durable before the kernel is touched.
	st.Boot.InProgress = &hoststate.Mark{Name: a.Name, Level: a.Level, At: m.now(), BootID: ss.bootID}
	if err := ss.save(); err != nil {
		return res, fmt.Errorf("boot: %w; nothing was loaded", err)
	}
	source := a.Source
	lres, lerr := ss.apply(ctx, m.State.ObjectPath(st.BuildID, a.Module, ".ko"), metaPath, source, ApplyOptions{Options: o.Options}, true)
	res.Load = lres
	st.Boot.InProgress = nil
	if lres.Outcome != Applied {
		// The record stays: it is what the host should run; status says
		// that applying it failed.
		st.Applied = a
		return fail(lerr)
	}
	if err := ss.save(); err != nil {
		return res, fmt.Errorf("boot: level %d is applied but %w", a.Level, err)
	}
	res.Outcome = BootApplied
	res.Message = fmt.Sprintf("level %d (%s) applied", a.Level, a.Name)
	return res, lerr
}
