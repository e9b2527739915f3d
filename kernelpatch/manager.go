package kernelpatch

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/livefix/livefix/hoststate"
)

// Manager applies and removes kernel live patches the way every livefix
// command and the update agent do: under the state directory's lock,
// after reconciling the persistent record with the kernel, and recording
// the applied level durably so that `livefix boot` re-applies it.
//
// Every method takes the lock (waiting up to LockTimeout), reconciles
// (Result.Repaired says what it repaired), does its work, and records
// the outcome before releasing the lock.
type Manager struct {
	Sys   *System
	State *hoststate.Dir
	// LockTimeout bounds the wait for another command's lock (default 60s).
	LockTimeout time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// DefaultLockTimeout is how long a command waits for another one's lock.
const DefaultLockTimeout = 60 * time.Second

// NewManager returns a Manager for sys with its state under stateRoot.
func NewManager(sys *System, stateRoot string) *Manager {
	return &Manager{Sys: sys, State: hoststate.Open(stateRoot), LockTimeout: DefaultLockTimeout}
}

// ApplyOptions control Apply.
type ApplyOptions struct {
	Options
	// NoPersist loads without recording the level (boot will not
	// re-apply it) and leaves the record as it is.
	NoPersist bool
	// Downgrade allows a level lower than (or equal to) the applied one.
	Downgrade bool
}

// DowngradeError refuses a level that is not higher than the applied one.
type DowngradeError struct {
	Applied   int
	AppliedAs string
	Requested int
	Name      string
}

func (e *DowngradeError) Error() string {
	if e.Requested == e.Applied {
		return fmt.Sprintf("level %d is already applied (as %s); %s is level %d too; nothing was loaded; load a higher level, or pass --downgrade to replace it anyway",
			e.Applied, e.AppliedAs, e.Name, e.Requested)
	}
	return fmt.Sprintf("%s is level %d, lower than the applied level %d (%s); nothing was loaded; pass --downgrade to go back to an older level",
		e.Name, e.Requested, e.Applied, e.AppliedAs)
}

func (m *Manager) now() time.Time {
	if m.Now != nil {
		return m.Now().UTC()
	}
	return time.Now().UTC()
}

// BootID returns the running boot's id (/proc/sys/kernel/random/boot_id),
// empty when unreadable.
func (s *System) BootID() string {
	b, err := os.ReadFile(filepath.Join(s.Proc, "sys/kernel/random/boot_id"))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// session is one locked command.
type session struct {
	m       *Manager
	lock    *hoststate.Lock
	st      *hoststate.State
	bootID  string
	release string
}

func (ss *session) close() { _ = ss.lock.Unlock() }

func (ss *session) save() error {
	ss.st.Release = ss.release
	if err := ss.m.State.Save(ss.st); err != nil {
		return fmt.Errorf("record the state: %w", err)
	}
	return nil
}

// begin takes the lock (wait 0: do not wait), reads this kernel's state
// and reconciles it. The repair line, if any, is returned.
func (m *Manager) begin(ctx context.Context, wait time.Duration, o Options) (*session, string, error) {
	buildID, err := m.Sys.KernelBuildID()
	if err != nil {
		return nil, "", fmt.Errorf("%w; nothing was changed", err)
	}
	release, err := m.Sys.Release()
	if err != nil {
		return nil, "", fmt.Errorf("%w; nothing was changed", err)
	}
	lk, err := m.State.Lock(ctx, wait)
	if err != nil {
		return nil, "", err
	}
	st, err := m.State.Load(buildID)
	if err != nil {
		lk.Unlock()
		return nil, "", fmt.Errorf("%w; nothing was changed", err)
	}
	ss := &session{m: m, lock: lk, st: st, bootID: m.Sys.BootID(), release: release}
	repaired, err := ss.reconcile(ctx, o)
	if err != nil {
		ss.close()
		return nil, repaired, err
	}
	return ss, repaired, nil
}

func (m *Manager) lockTimeout() time.Duration {
	if m.LockTimeout <= 0 {
		return DefaultLockTimeout
	}
	return m.LockTimeout
}

// Apply loads the live patch module at path (metadata NAME.json next to
// it) like System.Load, under the lock, and records it as the applied
// level once its transition completes. A level not higher than the
// applied one is refused (DowngradeError) unless o.Downgrade.
func (m *Manager) Apply(ctx context.Context, path string, o ApplyOptions) (*Result, error) {
	o.Options = o.withDefaults()
	ss, repaired, err := m.begin(ctx, m.lockTimeout(), o.Options)
	if err != nil {
		return &Result{Module: path, Outcome: Unchanged, Repaired: repaired}, fmt.Errorf("load %s: %w", path, err)
	}
	defer ss.close()
	res, err := ss.apply(ctx, path, "", path, o, false)
	res.Repaired = repaired
	return res, err
}

// apply loads path (metadata from metaPath, or next to it) and records
// the outcome in the session's state. source is the path recorded as
// where the patch came from. boot marks a boot-time load.
func (ss *session) apply(ctx context.Context, path, metaPath, source string, o ApplyOptions, boot bool) (*Result, error) {
	st := ss.st
	var target *hoststate.Level
	lo := o.Options
	lo.MetadataPath = metaPath
	lo.BeforeLoad = func(mi *ModuleInfo, meta *Metadata) error {
		level := meta.Level
		if a := st.Applied; a != nil && !o.Downgrade && !boot && level <= a.Level && ss.appliedLive() {
			return &DowngradeError{Applied: a.Level, AppliedAs: a.Name, Requested: level, Name: mi.Name}
		}
		if o.NoPersist {
			return nil
		}
		modData, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("read module: %w; nothing was loaded", err)
		}
		modSum, err := ss.m.State.PutObject(st.BuildID, modData, ".ko")
		if err != nil {
			return fmt.Errorf("%w; nothing was loaded", err)
		}
		metaSum := ""
		if len(meta.Raw) > 0 {
			if metaSum, err = ss.m.State.PutObject(st.BuildID, append(append([]byte(nil), meta.Raw...), '\n'), ".json"); err != nil {
				return fmt.Errorf("%w; nothing was loaded", err)
			}
		}
		target = &hoststate.Level{Name: mi.Name, Level: level, Module: modSum, Metadata: metaSum, Source: source}
		st.Pending = &hoststate.Pending{Op: hoststate.OpLoad, Target: *target, PID: os.Getpid(), BootID: ss.bootID, Started: ss.m.now()}
		if err := ss.save(); err != nil {
			st.Pending = nil
			return fmt.Errorf("%w; nothing was loaded", err)
		}
		return nil
	}
	res, err := ss.m.Sys.Load(ctx, path, lo)
	if target == nil {
		// Refused before the kernel was touched (or not persisted).
		return res, err
	}
	switch res.Outcome {
	case Applied:
		target.AppliedAt = ss.m.now()
		target.BootID = ss.bootID
		st.Applied = target
		st.Pending = nil
		st.Boot.Skipped = nil
		st.Last = &hoststate.Event{Result: hoststate.ResultApplied, Level: target.Level, At: ss.m.now(),
			Message: fmt.Sprintf("level %d (%s) applied", target.Level, target.Name)}
	case Incomplete:
		// The pending record stays: the next command reconciles it.
		st.Last = &hoststate.Event{Result: hoststate.ResultFailed, Level: target.Level, At: ss.m.now(), Message: errString(err)}
	default:
		st.Pending = nil
		st.Last = &hoststate.Event{Result: hoststate.ResultFailed, Level: target.Level, At: ss.m.now(), Message: errString(err)}
	}
	if serr := ss.save(); serr != nil {
		res.Notes = append(res.Notes, serr.Error())
		if err == nil {
			err = fmt.Errorf("load %s: the patch is applied but %w; the next livefix command repairs the record", path, serr)
		}
	}
	return res, err
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// appliedLive reports whether the recorded level is enabled in the
// running kernel (after a reboot it is not, until livefix boot).
func (ss *session) appliedLive() bool {
	a := ss.st.Applied
	if a == nil {
		return false
	}
	enabled, _, err := ss.m.Sys.state(a.Name)
	return err == nil && enabled
}

// Unload disables live patch name if needed and removes its module,
// under the lock; when it is the recorded level the record is removed.
func (m *Manager) Unload(ctx context.Context, name string, o Options) (*Result, error) {
	o = o.withDefaults()
	ss, repaired, err := m.begin(ctx, m.lockTimeout(), o)
	if err != nil {
		return &Result{Name: name, Outcome: Unchanged, Repaired: repaired}, fmt.Errorf("unload %s: %w", name, err)
	}
	defer ss.close()
	res, err := ss.remove(ctx, name, o, false)
	res.Repaired = repaired
	return res, err
}

// Disable disables live patch name under the lock; when it is the
// recorded level the record is removed (a disabled patch is not
// re-applied at boot).
func (m *Manager) Disable(ctx context.Context, name string, o Options) (*Result, error) {
	o = o.withDefaults()
	ss, repaired, err := m.begin(ctx, m.lockTimeout(), o)
	if err != nil {
		return &Result{Name: name, Outcome: Unchanged, Repaired: repaired}, fmt.Errorf("disable %s: %w", name, err)
	}
	defer ss.close()
	res, err := ss.remove(ctx, name, o, true)
	res.Repaired = repaired
	return res, err
}

func (ss *session) remove(ctx context.Context, name string, o Options, disableOnly bool) (*Result, error) {
	st := ss.st
	recorded := st.Applied != nil && st.Applied.Name == name
	if recorded {
		st.Pending = &hoststate.Pending{Op: hoststate.OpUnload, Target: *st.Applied, PID: os.Getpid(), BootID: ss.bootID, Started: ss.m.now()}
		if err := ss.save(); err != nil {
			return &Result{Name: name, Outcome: Unchanged}, fmt.Errorf("unload %s: %w; nothing was changed", name, err)
		}
	}
	var res *Result
	var err error
	if disableOnly {
		res, err = ss.m.Sys.Disable(ctx, name, o)
	} else {
		res, err = ss.m.Sys.Unload(ctx, name, o)
	}
	if !recorded {
		return res, err
	}
	level := st.Applied.Level
	switch {
	case res.Outcome == Unloaded || res.Outcome == Disabled:
		st.Applied = nil
		st.Pending = nil
		st.Last = &hoststate.Event{Result: hoststate.ResultUnloaded, Level: level, At: ss.m.now(),
			Message: fmt.Sprintf("level %d (%s) %s", level, name, res.Outcome)}
	case res.Outcome == Incomplete:
		st.Last = &hoststate.Event{Result: hoststate.ResultFailed, Level: level, At: ss.m.now(), Message: errString(err)}
	default:
		st.Pending = nil
	}
	if serr := ss.save(); serr != nil {
		res.Notes = append(res.Notes, serr.Error())
	}
	return res, err
}

// UnloadAll removes every live patch livefix applied (recorded here or
// in the kernel's runtime records), newest level first.
func (m *Manager) UnloadAll(ctx context.Context, o Options) ([]*Result, string, error) {
	o = o.withDefaults()
	ss, repaired, err := m.begin(ctx, m.lockTimeout(), o)
	if err != nil {
		return nil, repaired, fmt.Errorf("unload --all: %w", err)
	}
	defer ss.close()
	patches, err := m.Sys.List()
	if err != nil {
		return nil, repaired, fmt.Errorf("unload --all: %w; nothing was changed", err)
	}
	var names []string
	for _, p := range patches {
		if p.Livefix || (ss.st.Applied != nil && ss.st.Applied.Name == p.Name) {
			names = append(names, p.Name)
		}
	}
	// Inert modules of replaced or disabled livefix patches.
	for _, n := range m.Sys.recordedNames() {
		if !m.Sys.exists(n) && m.Sys.moduleLoaded(n) {
			names = append(names, n)
		}
	}
	var out []*Result
	var errs []error
	for _, n := range names {
		res, err := ss.remove(ctx, n, o, false)
		out = append(out, res)
		if err != nil {
			errs = append(errs, err)
		}
	}
	if ss.st.Applied != nil && !m.Sys.exists(ss.st.Applied.Name) {
		// Recorded but not loaded in this boot (livefix boot did not run):
		// unload --all also forgets it.
		level := ss.st.Applied.Level
		ss.st.Applied = nil
		ss.st.Last = &hoststate.Event{Result: hoststate.ResultUnloaded, Level: level, At: m.now(), Message: "record removed by unload --all"}
		if err := ss.save(); err != nil {
			errs = append(errs, err)
		}
	}
	return out, repaired, errors.Join(errs...)
}

// moduleLoaded reports whether module name is loaded.
func (s *System) moduleLoaded(name string) bool {
	_, err := os.Stat(filepath.Join(s.Module, name))
	return err == nil
}

// recordedNames lists the patches with a runtime record under StateDir.
func (s *System) recordedNames() []string {
	entries, err := os.ReadDir(s.StateDir)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range entries {
		if n, ok := strings.CutSuffix(e.Name(), ".json"); ok && checkName(n) == nil {
			out = append(out, n)
		}
	}
	return out
}

// Reconcile takes the lock without waiting when wait is false (a
// read-only command must not queue behind a load) and repairs what an
// interrupted command left. It returns the one-line report, empty when
// nothing needed repair, and whether the lock was available.
func (m *Manager) Reconcile(ctx context.Context, wait bool, o Options) (string, bool, error) {
	o = o.withDefaults()
	d := time.Duration(0)
	if wait {
		d = m.lockTimeout()
	}
	ss, repaired, err := m.begin(ctx, d, o)
	var le *hoststate.LockedError
	if errors.As(err, &le) && !wait {
		return "", false, nil
	}
	if errors.Is(err, fs.ErrPermission) && !wait {
		return "", false, nil // not root: a read-only command goes on without repairing
	}
	if err != nil {
		return repaired, true, err
	}
	ss.close()
	return repaired, true, nil
}
