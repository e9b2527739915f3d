package agent

import (
	"context"
	"fmt"
	"io"
	"sort"

	"github.com/livefix/livefix/kernelpatch"
)

// Kernel is the host's kernel load path as the agent uses it. The host
// implementation must serialise against other livefix commands, persist
// what it applied and roll back a transition that does not complete:
// the agent adds no state of its own about the kernel.
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

// HostKernel is the running kernel through package kernelpatch.
func HostKernel() Kernel { return &hostKernel{sys: kernelpatch.Host()} }

type hostKernel struct{ sys *kernelpatch.System }

func (h *hostKernel) BuildID() (string, error) { return h.sys.KernelBuildID() }

func (h *hostKernel) Applied() (int, string, error) {
	ps, err := h.sys.List()
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
	res, err := h.sys.Load(ctx, ko, kernelpatch.Options{Progress: progress})
	if err != nil {
		return err
	}
	if res.Outcome != kernelpatch.Applied {
		return fmt.Errorf("load %s: %s", ko, res.Outcome)
	}
	return nil
}

func (h *hostKernel) Unload(ctx context.Context, progress io.Writer) error {
	ps, err := h.sys.List()
	if err != nil {
		return err
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].Level > ps[j].Level })
	for _, p := range ps {
		if !p.Livefix {
			continue
		}
		if _, err := h.sys.Unload(ctx, p.Name, kernelpatch.Options{Progress: progress}); err != nil {
			return err
		}
	}
	return nil
}
