package kernelpatch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Outcome is the state an operation left the system in.
type Outcome string

const (
	// Unchanged: the operation was refused or failed before it changed
	// anything.
	Unchanged Outcome = "unchanged"
	// Applied: the patch is loaded, enabled and every task runs it.
	Applied Outcome = "applied"
	// RolledBack: the operation started but could not complete, and was
	// undone: the system is as it was before.
	RolledBack Outcome = "rolled back"
	// Disabled: the patch was disabled; every task runs the original code.
	Disabled Outcome = "disabled"
	// Unloaded: the patch is disabled and its module removed.
	Unloaded Outcome = "unloaded"
	// Incomplete: the operation could neither complete nor be undone; the
	// error says what state remains.
	Incomplete Outcome = "incomplete"
)

// Options control the waiting of Load, Disable and Unload.
type Options struct {
	// Timeout bounds each patching transition (default 60s). A transition
	// still running then is reversed.
	Timeout time.Duration
	// Poll is the interval between reads of the transition attribute
	// (default 2ms).
	Poll time.Duration
	// Progress receives human-readable progress lines; nil discards them.
	Progress io.Writer
	// SlowAfter is when waiting starts to name the tasks that block the
	// transition (default 2s); progress is reported once a second.
	SlowAfter time.Duration
	// MetadataPath, when set, is read instead of NAME.json next to the
	// module (Manager loads stored copies this way).
	MetadataPath string
	// BeforeLoad, when set, runs after every check and right before
	// finit_module; an error refuses the load with nothing loaded.
	BeforeLoad func(mi *ModuleInfo, meta *Metadata) error
}

func (o Options) withDefaults() Options {
	if o.Timeout <= 0 {
		o.Timeout = 60 * time.Second
	}
	if o.Poll <= 0 {
		o.Poll = 2 * time.Millisecond
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.SlowAfter <= 0 {
		o.SlowAfter = 2 * time.Second
	}
	return o
}

// Result reports what an operation did. It is returned with errors too:
// Outcome then says in which state the system was left.
type Result struct {
	Name           string        `json:"name"`
	Module         string        `json:"module,omitempty"`
	Outcome        Outcome       `json:"outcome"`
	Level          int           `json:"level,omitempty"`
	LoadTime       time.Duration `json:"load_ns,omitempty"`       // finit_module
	TransitionTime time.Duration `json:"transition_ns,omitempty"` // until every task switched
	Total          time.Duration `json:"total_ns"`
	Replaced       []string      `json:"replaced,omitempty"` // patches this one atomically replaced
	Blockers       []Task        `json:"blockers,omitempty"` // tasks that blocked a transition that timed out
	Notes          []string      `json:"notes,omitempty"`
	Repaired       string        `json:"repaired,omitempty"` // what reconciling repaired first, one line
}

// Task is a task whose patch state lags behind a transition.
type Task struct {
	PID   int      `json:"pid"`
	TID   int      `json:"tid"`
	Comm  string   `json:"comm"`
	Stack []string `json:"stack,omitempty"` // kernel stack, top first, when readable
}

func (t Task) String() string {
	s := t.Comm + "[" + strconv.Itoa(t.TID) + "]"
	if len(t.Stack) > 0 {
		s += " in " + t.Stack[0]
	}
	return s
}

// errTimeout is wrapped when a transition does not finish in time.
var errTimeout = errors.New("transition did not complete")

// Load loads the live patch module at path, waits for its patching
// transition and records it. See the package documentation for what it
// checks and how it rolls back.
func (s *System) Load(ctx context.Context, path string, o Options) (*Result, error) {
	o = o.withDefaults()
	start := time.Now()
	res := &Result{Module: path, Outcome: Unchanged}
	done := func(err error) (*Result, error) {
		res.Total = time.Since(start)
		return res, err
	}
	mi, err := ReadModuleInfo(path)
	if err != nil {
		return done(fmt.Errorf("load: %w; nothing was loaded", err))
	}
	res.Name = mi.Name
	if !mi.Livepatch {
		return done(fmt.Errorf("load %s: module %s is not a live patch (its modinfo has no livepatch=Y); nothing was loaded; load ordinary modules with modprobe", path, mi.Name))
	}
	metaPath := o.MetadataPath
	if metaPath == "" {
		metaPath = MetadataPath(path)
	}
	meta, err := readMetadataFile(metaPath)
	if err != nil {
		return done(fmt.Errorf("load %s: %w; nothing was loaded", path, err))
	}
	if meta != nil {
		if err := s.CheckCompatible(filepath.Base(path), meta); err != nil {
			return done(fmt.Errorf("load: %w", err))
		}
		if meta.Name != "" && meta.Name != mi.Name {
			return done(fmt.Errorf("load %s: %s describes live patch %s but the module is %s: the .json and the module do not belong together; nothing was loaded; use the pair livefix-build wrote",
				path, filepath.Base(metaPath), meta.Name, mi.Name))
		}
		if meta.Level > 0 && mi.Level > 0 && meta.Level != mi.Level {
			return done(fmt.Errorf("load %s: %s says level %d but the module says level %d: the .json and the module do not belong together; nothing was loaded",
				path, filepath.Base(metaPath), meta.Level, mi.Level))
		}
		res.Level = meta.Level
	} else {
		meta = &Metadata{Name: mi.Name}
		res.Notes = append(res.Notes, "no "+filepath.Base(MetadataPath(path))+" next to the module: kernel release and build-id not checked (the kernel still checks vermagic)")
	}
	if res.Level == 0 {
		res.Level = mi.Level
		meta.Level = mi.Level
	}
	if s.exists(mi.Name) {
		return done(fmt.Errorf("load %s: live patch %s is already loaded; nothing was changed; remove it first with `livefix kernel unload %s`", path, mi.Name, mi.Name))
	}
	if _, err := os.Stat(filepath.Join(s.Module, mi.Name)); err == nil {
		return done(fmt.Errorf("load %s: a module named %s is already loaded (a disabled live patch?); nothing was changed; remove it first with `livefix kernel unload %s`", path, mi.Name, mi.Name))
	}
	enabledBefore := s.enabledPatches()
	if o.BeforeLoad != nil {
		if err := o.BeforeLoad(mi, meta); err != nil {
			return done(fmt.Errorf("load %s: %w", path, err))
		}
	}

	f, err := os.Open(path)
	if err != nil {
		return done(fmt.Errorf("load: %w; nothing was loaded", err))
	}
	fmt.Fprintf(o.Progress, "loading %s (%s)\n", mi.Name, path)
	t0 := time.Now()
	err = s.LoadModule(f, "")
	f.Close()
	res.LoadTime = time.Since(t0)
	if err != nil {
		return done(s.loadError(path, mi.Name, err))
	}
	if !s.exists(mi.Name) {
		// init succeeded but registered no patch: take the module out again.
		derr := s.deleteModule(ctx, mi.Name, o)
		if derr != nil {
			res.Outcome = Incomplete
			return done(fmt.Errorf("load %s: module %s loaded but registered no live patch in %s, and removing it failed: %w; remove it with rmmod %s",
				path, mi.Name, s.Livepatch, derr, mi.Name))
		}
		return done(fmt.Errorf("load %s: module %s loaded but registered no live patch in %s; removed it again; nothing changed", path, mi.Name, s.Livepatch))
	}
	fmt.Fprintf(o.Progress, "module loaded in %s; patching transition started\n", round(res.LoadTime))

	t1 := time.Now()
	err = s.waitTransition(ctx, mi.Name, true, o, res)
	res.TransitionTime = time.Since(t1)
	if err == nil {
		if enabled, _, serr := s.state(mi.Name); serr != nil || !enabled {
			// Someone reversed the transition from outside (echo 0 > enabled).
			res.Outcome = Unchanged
			if s.waitGone(mi.Name, o.Timeout) == nil && s.deleteModule(context.Background(), mi.Name, o) == nil {
				res.Outcome = RolledBack
				return done(fmt.Errorf("load %s: the patching transition of %s was reversed by someone else; removed the module; the system is as before", path, mi.Name))
			}
			res.Outcome = Incomplete
			return done(fmt.Errorf("load %s: the patching transition of %s was reversed by someone else and the module could not be removed; run `livefix kernel unload %s`", path, mi.Name, mi.Name))
		}
		res.Outcome = Applied
		fmt.Fprintf(o.Progress, "transition complete in %s: %s is applied\n", round(res.TransitionTime), mi.Name)
		s.finishReplace(ctx, enabledBefore, mi.Name, o, res)
		rec := record{Module: path, Loaded: time.Now().UTC().Format(time.RFC3339), Metadata: *meta}
		if werr := s.writeRecord(mi.Name, rec); werr != nil {
			res.Notes = append(res.Notes, fmt.Sprintf("could not record the patch's level in %s: %v", s.StateDir, werr))
		}
		return done(nil)
	}
	return done(s.rollBackLoad(path, mi.Name, err, o, res))
}

// rollBackLoad reverses a patching transition that failed with cause and
// removes the module.
func (s *System) rollBackLoad(path, name string, cause error, o Options, res *Result) error {
	fmt.Fprintf(o.Progress, "%v; reversing the transition\n", cause)
	werr := s.setEnabled(name, false)
	if werr != nil && s.exists(name) {
		res.Outcome = Incomplete
		return fmt.Errorf("load %s: %w; reversing it failed: %v; the patch stays loaded: retry `livefix kernel unload %s`", path, cause, werr, name)
	}
	// The caller's context may be what ended the wait: the way back gets
	// its own deadline.
	bctx := context.Background()
	if err := s.waitTransition(bctx, name, false, o, &Result{}); err != nil && !errors.Is(err, fs.ErrNotExist) {
		res.Outcome = Incomplete
		return fmt.Errorf("load %s: %w, and the reverse transition did not finish either (%v); %s is still loaded and in transition: check `livefix kernel list`, then retry `livefix kernel unload %s`",
			path, cause, err, name, name)
	}
	if err := s.waitGone(name, o.Timeout); err != nil {
		res.Outcome = Incomplete
		return fmt.Errorf("load %s: %w; the transition was reversed but the kernel did not release the patch: %v; retry `livefix kernel unload %s`", path, cause, err, name)
	}
	if err := s.deleteModule(bctx, name, o); err != nil {
		res.Outcome = Incomplete
		return fmt.Errorf("load %s: %w; the transition was reversed (the original code runs again) but removing module %s failed: %v; run `livefix kernel unload %s`", path, cause, name, err, name)
	}
	res.Outcome = RolledBack
	fmt.Fprintf(o.Progress, "rolled back: %s reversed and unloaded; the kernel runs the original code, as before\n", name)
	return fmt.Errorf("load %s: %w; rolled back: the transition was reversed and the module removed, the system is as before", path, cause)
}

// loadError explains a failed finit_module.
func (s *System) loadError(path, name string, err error) error {
	var hint string
	switch {
	case errors.Is(err, syscall.EEXIST):
		hint = "a module with this name is already loaded; unload it first"
	case errors.Is(err, syscall.ENOEXEC), errors.Is(err, syscall.EINVAL):
		hint = "the module does not fit the running kernel or the patch refused to apply (see the kernel's messages); rebuild it for `uname -r`"
	case errors.Is(err, syscall.EPERM):
		hint = "loading modules needs root (CAP_SYS_MODULE) and is blocked by lockdown or kernel.modules_disabled"
	case errors.Is(err, syscall.EKEYREJECTED), errors.Is(err, syscall.EKEYEXPIRED), errors.Is(err, syscall.ENOKEY):
		hint = "the kernel enforces module signatures; sign the module with a key the kernel trusts"
	case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ENODEV):
		hint = "the patch targets a function or symbol the running kernel does not have; rebuild it for `uname -r`"
	case errors.Is(err, syscall.EBUSY):
		hint = "another live patch transition is in progress; wait for it (livefix kernel list) and retry"
	}
	msg := fmt.Sprintf("load %s: finit_module: %v", path, err)
	if hint != "" {
		msg += " (" + hint + ")"
	}
	if lines := s.kmsgLines(6, name, "livepatch"); len(lines) > 0 {
		msg += "; kernel log: " + strings.Join(lines, " | ")
	}
	return fmt.Errorf("%s; nothing was loaded: %w", msg, err)
}

// finishReplace reports the patches the new one atomically replaced and
// removes their modules, which are inert once replaced.
func (s *System) finishReplace(ctx context.Context, before []string, name string, o Options, res *Result) {
	for _, old := range before {
		if old == name {
			continue
		}
		if enabled, _, err := s.state(old); err == nil && enabled {
			continue // not replaced: patches without replace coexist
		}
		res.Replaced = append(res.Replaced, old)
		fmt.Fprintf(o.Progress, "%s replaced %s atomically\n", name, old)
		if err := s.waitGone(old, o.Timeout); err != nil {
			res.Notes = append(res.Notes, fmt.Sprintf("replaced patch %s was not released: %v; remove it later with `livefix kernel unload %s`", old, err, old))
			continue
		}
		if err := s.deleteModule(ctx, old, o); err != nil {
			res.Notes = append(res.Notes, fmt.Sprintf("replaced patch %s is inert but its module stays loaded: %v; remove it with `livefix kernel unload %s`", old, err, old))
			continue
		}
		s.removeRecord(old)
		fmt.Fprintf(o.Progress, "removed the module of replaced patch %s\n", old)
	}
}

// Disable disables live patch name and waits until every task runs the
// original code again. If that transition does not finish in time it is
// reversed, and the patch stays enabled.
func (s *System) Disable(ctx context.Context, name string, o Options) (*Result, error) {
	o = o.withDefaults()
	start := time.Now()
	res := &Result{Name: name, Outcome: Unchanged}
	done := func(err error) (*Result, error) {
		res.Total = time.Since(start)
		return res, err
	}
	if err := checkName(name); err != nil {
		return done(fmt.Errorf("disable: %w", err))
	}
	enabled, transition, err := s.state(name)
	if errors.Is(err, fs.ErrNotExist) {
		return done(fmt.Errorf("disable %s: no such live patch in %s; see `livefix kernel list`", name, s.Livepatch))
	}
	if err != nil {
		return done(fmt.Errorf("disable %s: %w", name, err))
	}
	if rec, err := s.readRecord(name); err == nil {
		res.Level = rec.Metadata.Level
	}
	if transition {
		return done(fmt.Errorf("disable %s: a transition of this patch is in progress; nothing was changed; wait for it (livefix kernel list) and retry", name))
	}
	if !enabled {
		return done(fmt.Errorf("disable %s: the patch is already disabled; nothing was changed", name))
	}
	fmt.Fprintf(o.Progress, "disabling %s\n", name)
	t0 := time.Now()
	if err := s.setEnabled(name, false); err != nil {
		return done(fmt.Errorf("disable %s: %w; nothing was changed (another transition in progress? see `livefix kernel list`)", name, err))
	}
	err = s.waitTransition(ctx, name, false, o, res)
	res.TransitionTime = time.Since(t0)
	if err == nil || errors.Is(err, fs.ErrNotExist) {
		res.Outcome = Disabled
		fmt.Fprintf(o.Progress, "transition complete in %s: %s is disabled\n", round(res.TransitionTime), name)
		if gerr := s.waitGone(name, o.Timeout); gerr != nil {
			res.Notes = append(res.Notes, gerr.Error())
		}
		return done(nil)
	}
	// Reverse: re-enable, which the kernel allows during the transition.
	fmt.Fprintf(o.Progress, "%v; reversing the transition\n", err)
	if werr := s.setEnabled(name, true); werr != nil {
		res.Outcome = Incomplete
		return done(fmt.Errorf("disable %s: %w; reversing it failed: %v; the unpatching transition goes on: check `livefix kernel list`", name, err, werr))
	}
	if rerr := s.waitTransition(context.Background(), name, true, o, &Result{}); rerr != nil {
		res.Outcome = Incomplete
		return done(fmt.Errorf("disable %s: %w; the reverse transition did not finish either (%v): check `livefix kernel list`", name, err, rerr))
	}
	res.Outcome = RolledBack
	return done(fmt.Errorf("disable %s: %w; rolled back: the patch is enabled again, as before", name, err))
}

// Unload disables live patch name if it is enabled, then removes its
// module. It also removes the module of a patch that is already disabled
// or was replaced.
func (s *System) Unload(ctx context.Context, name string, o Options) (*Result, error) {
	o = o.withDefaults()
	start := time.Now()
	res := &Result{Name: name, Outcome: Unchanged}
	if err := checkName(name); err != nil {
		res.Total = time.Since(start)
		return res, fmt.Errorf("unload: %w", err)
	}
	if s.exists(name) {
		if enabled, transition, err := s.state(name); err == nil && (enabled || transition) {
			dres, err := s.Disable(ctx, name, o)
			if err != nil {
				dres.Total = time.Since(start)
				return dres, fmt.Errorf("unload: %w", err)
			}
			res = dres
		}
		if err := s.waitGone(name, o.Timeout); err != nil {
			res.Total = time.Since(start)
			if res.Outcome == Disabled {
				return res, fmt.Errorf("unload %s: disabled, but %v; the module stays loaded: retry `livefix kernel unload %s`", name, err, name)
			}
			return res, fmt.Errorf("unload %s: %v; nothing was changed", name, err)
		}
	}
	if _, err := os.Stat(filepath.Join(s.Module, name)); err != nil {
		res.Total = time.Since(start)
		if res.Outcome == Disabled {
			s.removeRecord(name)
			return res, nil // removed by someone else meanwhile
		}
		return res, fmt.Errorf("unload %s: no module %s is loaded; see `livefix kernel list`", name, name)
	}
	if err := s.deleteModule(ctx, name, o); err != nil {
		res.Total = time.Since(start)
		if res.Outcome == Disabled {
			return res, fmt.Errorf("unload %s: the patch is disabled (the original code runs) but removing the module failed: %w; retry `livefix kernel unload %s`", name, err, name)
		}
		return res, fmt.Errorf("unload %s: %w; nothing was changed", name, err)
	}
	s.removeRecord(name)
	res.Outcome = Unloaded
	res.Total = time.Since(start)
	fmt.Fprintf(o.Progress, "module %s removed\n", name)
	return res, nil
}

// waitTransition polls patch name until its transition is over. patching
// says which way it goes, for naming the tasks that lag. The error wraps
// errTimeout, the context's error, or fs.ErrNotExist when the patch was
// freed (which ends an unpatching transition).
func (s *System) waitTransition(ctx context.Context, name string, patching bool, o Options, res *Result) error {
	start := time.Now()
	deadline := start.Add(o.Timeout)
	nextReport := start.Add(time.Second)
	tick := time.NewTicker(o.Poll)
	defer tick.Stop()
	verb := "patched"
	if !patching {
		verb = "unpatched"
	}
	for {
		_, transition, err := s.state(name)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				if patching {
					return fmt.Errorf("live patch %s disappeared during its transition: %w", name, err)
				}
				return err
			}
			return fmt.Errorf("live patch %s: %w", name, err)
		}
		if !transition {
			return nil
		}
		now := time.Now()
		if now.After(deadline) {
			res.Blockers = s.laggingTasks(patching, true)
			return fmt.Errorf("%w within %s: %s", errTimeout, o.Timeout, describeTasks(res.Blockers, verb))
		}
		if now.After(nextReport) {
			slow := now.Sub(start) >= o.SlowAfter
			tasks := s.laggingTasks(patching, slow)
			line := fmt.Sprintf("waiting for the transition (%s): ", round(now.Sub(start)))
			if slow {
				line += describeTasks(tasks, verb)
			} else {
				line += fmt.Sprintf("%d task(s) not yet %s", len(tasks), verb)
			}
			fmt.Fprintln(o.Progress, line)
			nextReport = now.Add(time.Second)
		}
		select {
		case <-ctx.Done():
			res.Blockers = s.laggingTasks(patching, true)
			return fmt.Errorf("transition interrupted (%w): %s", ctx.Err(), describeTasks(res.Blockers, verb))
		case <-tick.C:
		}
	}
}

func describeTasks(tasks []Task, verb string) string {
	if len(tasks) == 0 {
		return "no task is reported as lagging (the kernel retries once a second)"
	}
	const show = 8
	var names []string
	for i, t := range tasks {
		if i == show {
			names = append(names, fmt.Sprintf("and %d more", len(tasks)-show))
			break
		}
		names = append(names, t.String())
	}
	return fmt.Sprintf("%d task(s) not yet %s: %s", len(tasks), verb, strings.Join(names, ", "))
}

// laggingTasks lists the tasks whose /proc/PID/task/TID/patch_state is
// still the state the transition moves away from (0 while patching, 1
// while unpatching). withStacks adds their kernel stacks.
func (s *System) laggingTasks(patching bool, withStacks bool) []Task {
	lag := "0"
	if !patching {
		lag = "1"
	}
	paths, _ := filepath.Glob(filepath.Join(s.Proc, "[0-9]*", "task", "[0-9]*", "patch_state"))
	var out []Task
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil || strings.TrimSpace(string(b)) != lag {
			continue
		}
		taskDir := filepath.Dir(p)
		t := Task{}
		t.TID, _ = strconv.Atoi(filepath.Base(taskDir))
		t.PID, _ = strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(taskDir))))
		if c, err := os.ReadFile(filepath.Join(taskDir, "comm")); err == nil {
			t.Comm = strings.TrimSpace(string(c))
		}
		if withStacks {
			if st, err := os.ReadFile(filepath.Join(taskDir, "stack")); err == nil {
				for _, l := range strings.Split(strings.TrimSpace(string(st)), "\n") {
					if l = strings.TrimSpace(l); l != "" {
						t.Stack = append(t.Stack, strings.TrimPrefix(l, "[<0>] "))
					}
				}
			}
		}
		out = append(out, t)
	}
	slices.SortFunc(out, func(a, b Task) int { return a.TID - b.TID })
	return out
}

// enabledPatches lists the enabled live patches.
func (s *System) enabledPatches() []string {
	entries, _ := os.ReadDir(s.Livepatch)
	var out []string
	for _, e := range entries {
		if enabled, _, err := s.state(e.Name()); err == nil && enabled {
			out = append(out, e.Name())
		}
	}
	return out
}

// waitGone waits until the kernel has freed patch name (its sysfs
// directory is removed asynchronously after an unpatching transition).
func (s *System) waitGone(name string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for s.exists(name) {
		if time.Now().After(deadline) {
			return fmt.Errorf("the kernel has not released live patch %s after %s", name, timeout)
		}
		time.Sleep(2 * time.Millisecond)
	}
	return nil
}

// deleteModule removes a module, retrying while it is still referenced
// (the kernel drops a freed patch's module reference asynchronously).
func (s *System) deleteModule(ctx context.Context, name string, o Options) error {
	deadline := time.Now().Add(o.Timeout)
	for {
		err := s.DeleteModule(name)
		if err == nil {
			return nil
		}
		if !errors.Is(err, syscall.EAGAIN) && !errors.Is(err, syscall.EBUSY) || time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("delete_module %s: %w", name, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// round shortens a duration for progress lines.
func round(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(10 * time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(100 * time.Microsecond)
	}
	return d
}
