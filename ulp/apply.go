package ulp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/livefix/livefix/internal/proc"
	"golang.org/x/sys/unix"
)

// Errors returned (wrapped) by Apply and Unpatch.
var (
	// ErrBusy: a thread kept running code that was about to change.
	ErrBusy = errors.New("target is busy in the code to patch")
	// ErrLevel: the process already has a patch for this target at the
	// same or a higher level.
	ErrLevel = errors.New("a patch of the same or a higher level is applied")
	// ErrNotApplied: no such livefix patch in the process.
	ErrNotApplied = errors.New("patch not applied")
	// ErrAlreadyApplied: this exact patch is already applied.
	ErrAlreadyApplied = errors.New("patch already applied")
)

var endbr64 = []byte{0xf3, 0x0f, 0x1e, 0xfa}

// Options tunes Apply and Unpatch.
type Options struct {
	// StateDir records applied patches; DefaultStateDir if empty.
	StateDir string
	// Timeout bounds the wait for the target to leave the code being
	// replaced; zero means 5s.
	Timeout time.Duration
	// AttachTimeout bounds each wait for a thread to stop (see
	// proc.AttachOptions); zero means the proc default.
	AttachTimeout time.Duration
}

func (o Options) timeout() time.Duration {
	if o.Timeout <= 0 {
		return 5 * time.Second
	}
	return o.Timeout
}

// Result reports what Apply or Unpatch did to one process.
type Result struct {
	Pid   int    `json:"pid"`
	Patch string `json:"patch"`
	// Replaced names the lower-level patch that Apply replaced.
	Replaced string `json:"replaced,omitempty"`
	// Pause is how long the process was stopped by the successful
	// attempt (first thread stopped to last thread resumed).
	Pause time.Duration `json:"pause_ns"`
	// Attempts counts stops of the whole process; more than one means
	// the safety check had to let it run to leave the code being
	// replaced (nudges of single threads within a stop do not count).
	Attempts int    `json:"attempts"`
	Region   uint64 `json:"region,omitempty"`
}

// span is an address range with a name, for the safety check.
type span struct {
	lo, hi uint64
	what   string
}

// Apply applies p to process pid.
func Apply(pid int, p *Patch, opts Options) (*Result, error) {
	s, err := openStore(opts.StateDir)
	if err != nil {
		return nil, err
	}
	defer s.close()
	return applyLocked(s, pid, p, opts)
}

// ApplyAll applies p to every process that maps its target. It returns
// one result or error per process (errs[i] belongs to pids[i]).
func ApplyAll(p *Patch, opts Options) (pids []int, res []*Result, errs []error, err error) {
	id, err := p.BuildID()
	if err != nil {
		return nil, nil, nil, err
	}
	pids, err = proc.MappingProcesses(id)
	if err != nil {
		return nil, nil, nil, err
	}
	s, err := openStore(opts.StateDir)
	if err != nil {
		return nil, nil, nil, err
	}
	defer s.close()
	res = make([]*Result, len(pids))
	errs = make([]error, len(pids))
	for i, pid := range pids {
		res[i], errs[i] = applyLocked(s, pid, p, opts)
	}
	return pids, res, errs, nil
}

func applyLocked(s *store, pid int, p *Patch, opts Options) (*Result, error) {
	id, err := p.BuildID()
	if err != nil {
		return nil, err
	}
	rec, err := s.load(pid)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", err, proc.ErrNoProcess)
	}
	sum := p.Checksum()
	var old *Applied
	oldIdx := -1
	for i := range rec.Patches {
		a := &rec.Patches[i]
		if a.BuildID != p.Target.BuildID {
			continue
		}
		if a.Checksum == sum {
			return nil, fmt.Errorf("pid %d: %s: %w", pid, p.Name, ErrAlreadyApplied)
		}
		if a.Level >= p.Level {
			return nil, fmt.Errorf("pid %d has patch %s level %d for %s; rebuild %s with a higher --level to replace it: %w", pid, a.Name, a.Level, a.Target, p.Name, ErrLevel)
		}
		old, oldIdx = a, i
	}
	v, err := newView(pid, id)
	if err != nil {
		return nil, err
	}
	defer v.close()
	pl, err := prepare(p, v)
	if err != nil {
		return nil, fmt.Errorf("pid %d: patch %s: %w", pid, p.Name, err)
	}
	var spans []span
	for _, f := range pl.funcs {
		spans = append(spans, span{f.old, f.old + max(f.oldSize, 1), f.origName})
	}
	if old != nil {
		spans = append(spans, span{old.Region, old.Region + old.TextEnd, "patch " + old.Name})
		for _, r := range old.Funcs {
			spans = append(spans, span{r.Addr, r.Addr + max(r.Size, 1), r.Name})
		}
	}
	defer boost()()
	pr, attempts, err := stopSafely(pid, spans, opts)
	if err != nil {
		return nil, err
	}
	applied, err := install(pr, v, pl, p, old)
	derr := pr.Detach()
	if err != nil {
		return nil, fmt.Errorf("pid %d: patch %s (process left unchanged): %w", pid, p.Name, errors.Join(err, derr))
	}
	if derr != nil {
		return nil, fmt.Errorf("pid %d: detach after patching %s: %w", pid, p.Name, derr)
	}
	applied.Pause = pr.StoppedFor()
	res := &Result{Pid: pid, Patch: p.Name, Pause: applied.Pause, Attempts: attempts, Region: applied.Region}
	if old != nil {
		res.Replaced = old.Name
		rec.Patches = append(rec.Patches[:oldIdx], rec.Patches[oldIdx+1:]...)
	}
	rec.Patches = append(rec.Patches, *applied)
	if err := s.save(rec); err != nil {
		return res, fmt.Errorf("pid %d patched with %s, but %w", pid, p.Name, err)
	}
	return res, nil
}

// stopSafely attaches to pid and returns it stopped at a moment when no
// thread is in spans, retrying until the timeout. On failure the process
// is detached and running.
//
// When some threads are in the way, only those are let run for a few
// microseconds (proc.Nudge) while the others stay stopped: a thread in a
// short function leaves it at once. If a few nudges do not help (a
// thread is parked there), the whole process runs for a while before the
// next stop, so that it never stays stopped for long.
func stopSafely(pid int, spans []span, opts Options) (*proc.Process, int, error) {
	sort.Slice(spans, func(i, j int) bool { return spans[i].lo < spans[j].lo })
	pr, err := proc.Attach(pid, proc.AttachOptions{Timeout: opts.AttachTimeout})
	if err != nil {
		return nil, 0, err
	}
	const nudges = 8
	deadline := time.Now().Add(opts.timeout())
	wait := 100 * time.Microsecond
	stops := 1
	for n := 0; ; n++ {
		tids, why, err := inTheWay(pr, spans)
		if err != nil {
			pr.Detach()
			return nil, stops, err
		}
		if len(tids) == 0 {
			return pr, stops, nil
		}
		if time.Now().After(deadline) {
			derr := pr.Detach()
			return nil, stops, errors.Join(fmt.Errorf("pid %d: %s after %d stops in %v (process left unchanged): %w", pid, why, stops, opts.timeout(), ErrBusy), derr)
		}
		if n%(nudges+1) < nudges {
			if err := pr.Nudge(tids, 10*time.Microsecond); err != nil {
				return nil, stops, err
			}
			continue
		}
		if err := pr.Resume(); err != nil {
			return nil, stops, err
		}
		time.Sleep(wait)
		wait = min(wait*2, 10*time.Millisecond)
		if err := pr.Stop(); err != nil {
			return nil, stops, err
		}
		stops++
	}
}

// maxStackWords bounds the conservative stack scan per thread (2 MiB).
const maxStackWords = 1 << 18

// inTheWay returns the threads whose ip or stack refers into spans, and
// a description of the first one.
func inTheWay(pr *proc.Process, spans []span) ([]int, string, error) {
	find := func(a uint64) *span {
		i := sort.Search(len(spans), func(i int) bool { return spans[i].hi > a })
		for ; i < len(spans) && spans[i].lo <= a; i++ {
			if a < spans[i].hi {
				return &spans[i]
			}
		}
		return nil
	}
	var tids []int
	why := ""
	for _, tid := range pr.Threads() {
		regs, err := pr.Regs(tid)
		if errors.Is(err, proc.ErrNoProcess) {
			continue // the thread exited
		}
		if err != nil {
			return nil, "", err
		}
		if sp := find(regs.Rip); sp != nil {
			tids = append(tids, tid)
			if why == "" {
				why = fmt.Sprintf("thread %d is executing %s", tid, sp.what)
			}
			continue
		}
		words, err := pr.StackWords(tid, maxStackWords)
		if err != nil {
			return nil, "", err
		}
		for _, w := range words {
			if sp := find(w); sp != nil {
				tids = append(tids, tid)
				if why == "" {
					why = fmt.Sprintf("thread %d has a return address into %s on its stack", tid, sp.what)
				}
				break
			}
		}
	}
	return tids, why, nil
}

// undo is the list of changes made to a stopped process, reverted in
// reverse order if a later step fails.
type undo []func() error

func (u undo) run() error {
	var errs []error
	for i := len(u) - 1; i >= 0; i-- {
		if err := u[i](); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// install writes the patch into the stopped process and redirects the
// functions; on error everything it changed is restored.
func install(pr *proc.Process, v *view, pl *plan, p *Patch, old *Applied) (a *Applied, err error) {
	var u undo
	defer func() {
		if err != nil {
			if uerr := u.run(); uerr != nil {
				err = fmt.Errorf("%w; restoring the process also failed: %w", err, uerr)
			}
		}
	}()
	// Each injected syscall costs a single-step inside the pause, so the
	// region is mapped read+execute at once (writes go through
	// /proc/PID/mem, which may write read-only mappings of a traced
	// process) and only a writable data part needs an mprotect. The
	// read-only data and slots thus share the r-x protection of the code.
	base, err := pr.MmapNear(v.target.Start(), v.target.End(), pl.size, unix.PROT_READ|unix.PROT_EXEC)
	if err != nil {
		return nil, fmt.Errorf("allocate %d bytes near %s: %w", pl.size, v.target.Path, err)
	}
	u = append(u, func() error { return pr.Munmap(base, pl.size) })
	img, err := pl.link(base)
	if err != nil {
		return nil, err
	}
	if err := pr.WriteMem(base, img); err != nil {
		return nil, err
	}
	if pl.size > pl.rwOff {
		if err := pr.Mprotect(base+pl.rwOff, pl.size-pl.rwOff, unix.PROT_READ|unix.PROT_WRITE); err != nil {
			return nil, err
		}
	}
	a = &Applied{
		Name: p.Name, Level: p.Level, BuildID: p.Target.BuildID, Target: v.target.Path,
		Checksum: p.Checksum(), Region: base, Size: pl.size, TextEnd: pl.textEnd, AppliedAt: time.Now().UTC(),
	}
	oldBy := map[uint64]*Redirect{}
	if old != nil {
		for i := range old.Funcs {
			oldBy[old.Funcs[i].Addr] = &old.Funcs[i]
		}
	}
	done := map[uint64]bool{}
	for _, f := range pl.funcs {
		entry := make([]byte, 9)
		if err := pr.ReadMem(f.old, entry); err != nil {
			return nil, fmt.Errorf("read entry of %s: %w", f.origName, err)
		}
		at := f.old
		if bytes.Equal(entry[:4], endbr64) {
			at += 4
		}
		if f.oldSize > 0 && at+5 > f.old+f.oldSize {
			return nil, fmt.Errorf("function %s is %d bytes, too short for a 5-byte jump", f.origName, f.oldSize)
		}
		cur := entry[at-f.old : at-f.old+5]
		orig := bytes.Clone(cur)
		if r := oldBy[f.old]; r != nil {
			orig = r.Orig
			if !bytes.Equal(cur, jmpBytes(r.At, r.New)) {
				return nil, fmt.Errorf("entry of %s no longer holds the jump of patch %s (changed by someone else?)", f.origName, old.Name)
			}
		}
		nw := pl.newAddr(f, base)
		d := int64(nw) - int64(at+5)
		if d < -1<<31 || d >= 1<<31 {
			return nil, fmt.Errorf("replacement of %s at %#x is out of jump reach from %#x", f.origName, nw, at)
		}
		if err := pr.WriteMem(at, jmpBytes(at, nw)); err != nil {
			return nil, fmt.Errorf("redirect %s: %w", f.origName, err)
		}
		at0, cur0 := at, bytes.Clone(cur)
		u = append(u, func() error { return pr.WriteMem(at0, cur0) })
		a.Funcs = append(a.Funcs, Redirect{Name: f.origName, Addr: f.old, Size: f.oldSize, At: at, Orig: orig, New: nw})
		done[f.old] = true
	}
	if old != nil {
		for _, r := range old.Funcs {
			if done[r.Addr] {
				continue
			}
			if err := restoreEntry(pr, r, old.Name); err != nil {
				return nil, err
			}
			r := r
			u = append(u, func() error { return pr.WriteMem(r.At, jmpBytes(r.At, r.New)) })
		}
		// Past this point nothing can fail in a way that needs undoing:
		// the old region is no longer referenced.
		if err := pr.Munmap(old.Region, old.Size); err != nil {
			return nil, fmt.Errorf("unmap replaced patch %s: %w", old.Name, err)
		}
	}
	return a, nil
}

func jmpBytes(at, to uint64) []byte {
	b := []byte{0xe9, 0, 0, 0, 0}
	binary.LittleEndian.PutUint32(b[1:], uint32(int32(int64(to)-int64(at+5))))
	return b
}

// restoreEntry puts back the bytes a redirect replaced, after checking
// that its jump is still there.
func restoreEntry(pr *proc.Process, r Redirect, patch string) error {
	cur := make([]byte, 5)
	if err := pr.ReadMem(r.At, cur); err != nil {
		return fmt.Errorf("read entry of %s: %w", r.Name, err)
	}
	if !bytes.Equal(cur, jmpBytes(r.At, r.New)) {
		return fmt.Errorf("entry of %s no longer holds the jump of patch %s (changed by someone else?)", r.Name, patch)
	}
	if err := pr.WriteMem(r.At, r.Orig); err != nil {
		return fmt.Errorf("restore entry of %s: %w", r.Name, err)
	}
	return nil
}

// Unpatch removes the patch called name (every livefix patch if name is
// empty) from pid.
func Unpatch(pid int, name string, opts Options) ([]*Result, error) {
	s, err := openStore(opts.StateDir)
	if err != nil {
		return nil, err
	}
	defer s.close()
	return unpatchLocked(s, pid, name, opts)
}

// UnpatchAll removes name (or every patch) from every recorded process.
func UnpatchAll(name string, opts Options) ([]*Result, []error, error) {
	s, err := openStore(opts.StateDir)
	if err != nil {
		return nil, nil, err
	}
	defer s.close()
	recs, err := s.all()
	if err != nil {
		return nil, nil, err
	}
	var res []*Result
	var errs []error
	for _, rec := range recs {
		has := false
		for _, a := range rec.Patches {
			has = has || name == "" || a.Name == name
		}
		if !has {
			continue
		}
		r, err := unpatchLocked(s, rec.Pid, name, opts)
		res = append(res, r...)
		if err != nil {
			errs = append(errs, err)
		}
	}
	return res, errs, nil
}

func unpatchLocked(s *store, pid int, name string, opts Options) ([]*Result, error) {
	rec, err := s.load(pid)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", err, proc.ErrNoProcess)
	}
	var sel, keep []Applied
	for _, a := range rec.Patches {
		if name == "" || a.Name == name {
			sel = append(sel, a)
		} else {
			keep = append(keep, a)
		}
	}
	if len(sel) == 0 {
		if name == "" {
			return nil, fmt.Errorf("pid %d has no livefix patch: %w", pid, ErrNotApplied)
		}
		return nil, fmt.Errorf("pid %d has no patch named %s: %w", pid, name, ErrNotApplied)
	}
	var spans []span
	for _, a := range sel {
		spans = append(spans, span{a.Region, a.Region + a.TextEnd, "patch " + a.Name})
	}
	defer boost()()
	pr, attempts, err := stopSafely(pid, spans, opts)
	if err != nil {
		return nil, err
	}
	var u undo
	var ierr error
	for _, a := range sel {
		for _, r := range a.Funcs {
			if ierr = restoreEntry(pr, r, a.Name); ierr != nil {
				break
			}
			r := r
			u = append(u, func() error { return pr.WriteMem(r.At, jmpBytes(r.At, r.New)) })
		}
		if ierr != nil {
			break
		}
	}
	if ierr != nil {
		if uerr := u.run(); uerr != nil {
			ierr = fmt.Errorf("%w; restoring the process also failed: %w", ierr, uerr)
		}
		derr := pr.Detach()
		return nil, fmt.Errorf("pid %d: unpatch (process left unchanged): %w", pid, errors.Join(ierr, derr))
	}
	var merr error
	for _, a := range sel {
		if err := pr.Munmap(a.Region, a.Size); err != nil {
			merr = errors.Join(merr, fmt.Errorf("unmap patch %s: %w", a.Name, err))
		}
	}
	derr := pr.Detach()
	pause := pr.StoppedFor()
	rec.Patches = keep
	serr := s.save(rec)
	var res []*Result
	for _, a := range sel {
		res = append(res, &Result{Pid: pid, Patch: a.Name, Pause: pause, Attempts: attempts, Region: a.Region})
	}
	if err := errors.Join(merr, derr, serr); err != nil {
		return res, fmt.Errorf("pid %d: unpatched, but: %w", pid, err)
	}
	return res, nil
}
