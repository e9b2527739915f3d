package agent

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/livefix/livefix/hoststate"
	"github.com/livefix/livefix/kernelpatch"
)

// Kernel is the host's kernel load path as the agent uses it. The host
// implementation serialises against other livefix commands, persists what
// it applied (re-applied at boot) and rolls back a transition that does
// not complete: the agent adds no state of its own about the kernel.
type Kernel interface {
	// BuildID is the running kernel's GNU build-id (hex).
	BuildID() (string, error)
	// Applied is the livefix patch level applied to the running kernel
	// (0 and "" when none) and its patch name.
	Applied() (level int, name string, err error)
	// Apply loads the module at ko (its NAME.json beside it) and waits for
	// its transition; downgrade allows a lower level than the applied one.
	Apply(ctx context.Context, ko string, downgrade bool, progress io.Writer) error
	// Unload removes every livefix patch from the running kernel.
	Unload(ctx context.Context, progress io.Writer) error
}

// HostKernel is the running kernel through the host's Manager (lock,
// reconcile, persistent record, rollback) with state in stateDir ("" =
// $LIVEFIX_STATE_DIR or /var/lib/livefix).
func HostKernel(stateDir string, lockTimeout time.Duration) Kernel {
	m := kernelpatch.NewManager(kernelpatch.Host(), hoststate.Root(stateDir))
	if lockTimeout > 0 {
		m.LockTimeout = lockTimeout
	}
	return &hostKernel{m: m}
}

// ManagerKernel uses an existing Manager (tests, other systems).
func ManagerKernel(m *kernelpatch.Manager) Kernel { return &hostKernel{m: m} }

type hostKernel struct{ m *kernelpatch.Manager }

func (h *hostKernel) BuildID() (string, error) { return h.m.Sys.KernelBuildID() }

// Applied is the level recorded for the running kernel, or, when none is
// recorded, the highest enabled livefix level (loaded with --no-persist).
func (h *hostKernel) Applied() (int, string, error) {
	bid, err := h.m.Sys.KernelBuildID()
	if err != nil {
		return 0, "", err
	}
	st, err := hoststate.Open(h.m.State.Root).Load(bid)
	if err != nil {
		return 0, "", err
	}
	if st != nil && st.Applied != nil {
		return st.Applied.Level, st.Applied.Name, nil
	}
	ps, err := h.m.Sys.List()
	if err != nil {
		return 0, "", err
	}
	level, name := 0, ""
	for _, p := range ps {
		if p.Enabled && p.Livefix && p.Level > level {
			level, name = p.Level, p.Name
		}
	}
	return level, name, nil
}

func (h *hostKernel) Apply(ctx context.Context, ko string, downgrade bool, progress io.Writer) error {
	res, err := h.m.Apply(ctx, ko, kernelpatch.ApplyOptions{Options: kernelpatch.Options{Progress: progress}, Downgrade: downgrade})
	if err != nil {
		return err
	}
	if res.Outcome != kernelpatch.Applied {
		return fmt.Errorf("load %s: %s", ko, res.Outcome)
	}
	return nil
}

func (h *hostKernel) Unload(ctx context.Context, progress io.Writer) error {
	_, _, err := h.m.UnloadAll(ctx, kernelpatch.Options{Progress: progress})
	return err
}
