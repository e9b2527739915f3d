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
	// ErrInit: ApplyAll leaves pid 1 alone unless Options.IncludeInit.
	ErrInit = errors.New("pid 1 (init) is skipped unless included explicitly")
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
	// IncludeInit lets ApplyAll patch pid 1 too.
	IncludeInit bool
	// Notify, if set, receives what reconciling a record with the
	// process's memory found and did (see reconcile).
	Notify func(pid int, note string)
}

func (o Options) notify(rec *Record) {
	if o.Notify == nil || rec == nil {
		return
	}
	for _, n := range rec.Notes {
		o.Notify(rec.Pid, n)
	}
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
	// Pause is the longest single stop of the process (first thread
	// stopped to last thread resumed): what its threads experience.
	Pause time.Duration `json:"pause_ns"`
	// Stopped is the time the process spent stopped over all Stops.
	// Apply and Unpatch stop every thread once per safety check, until
	// one passes and the jumps are written (Apply) or the entries
	// restored (Unpatch); normally once.
	Stopped time.Duration `json:"stopped_ns"`
	Stops   int           `json:"stops"`
	// OneThread is the time one thread alone was stopped while the
	// others ran (proc.StopOne; a sleeping thread is chosen): to map the
	// patch's memory before the commit (the new code is unreachable
	// then), and to unmap the code of a removed or replaced patch after
	// it (nothing refers to it any more).
	OneThread time.Duration `json:"one_thread_ns,omitempty"`
	// CommitMono is when the jumps were written (Apply) or the entries
	// restored (Unpatch): CLOCK_MONOTONIC nanoseconds, comparable with
	// proc.Event.Mono and proc.MonoNow.
	CommitMono int64 `json:"commit_mono_ns,omitempty"`
	// Attempts counts the safety-check stops; more than one means the
	// check had to let the process run to leave the code being replaced
	// (nudges of single threads within a stop do not count).
	Attempts int    `json:"attempts"`
	Region   uint64 `json:"region,omitempty"`
}

// pauses adds up the stops of one operation.
type pauses struct {
	n              int
	longest, total time.Duration
	one            time.Duration // stops of one thread alone
	commit         int64         // proc.MonoNow() at the commit
}

// ended records the stop of every thread that pr just ended (by Resume,
// Detach or DetachAllBut).
func (ps *pauses) ended(pr *proc.Process) {
	d := pr.StoppedFor()
	ps.n++
	ps.total += d
	ps.longest = max(ps.longest, d)
}

// endedOne records a stop of one thread alone that pr just ended.
func (ps *pauses) endedOne(pr *proc.Process) { ps.one += pr.StoppedFor() }

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
		if pid == 1 && !opts.IncludeInit {
			errs[i] = fmt.Errorf("pid 1: %w (--include-init)", ErrInit)
			continue
		}
		res[i], errs[i] = applyLocked(s, pid, p, opts)
	}
	return pids, res, errs, nil
}

func applyLocked(s *store, pid int, p *Patch, opts Options) (*Result, error) {
	id, err := p.BuildID()
	if err != nil {
		return nil, err
	}
	proc.Mark("apply: locked")
	rec, err := s.load(pid)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", err, proc.ErrNoProcess)
	}
	opts.notify(rec)
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
	// The unwind tables (the .eh_frame of every object) load meanwhile:
	// the commit stop needs them; nothing before it does.
	unw := loadUnwinder(pid, v.objs)
	defer unw.release()
	proc.Mark("apply: target mapped objects read")
	pl, err := prepare(p, v)
	if err != nil {
		return nil, fmt.Errorf("pid %d: patch %s: %w", pid, p.Name, err)
	}
	proc.Mark("apply: prepared")
	var spans []span
	for _, f := range pl.funcs {
		spans = append(spans, span{f.old, f.old + max(f.oldSize, 1), f.origName})
		if f.cold != 0 {
			spans = append(spans, span{f.cold, f.cold + max(f.coldSize, 1), f.origName + " (its .cold part)"})
		}
	}
	if old != nil {
		spans = append(spans, span{old.Region, old.Region + old.TextEnd, "patch " + old.Name})
		for _, r := range old.Funcs {
			spans = append(spans, span{r.Addr, r.Addr + max(r.Size, 1), r.Name})
		}
	}
	defer quietGC()()
	var ps pauses
	others := append([]Applied(nil), rec.Patches...)
	if old != nil {
		others = append(others[:oldIdx:oldIdx], others[oldIdx+1:]...)
	}
	intent := func(a *Applied) error {
		w := *a
		w.State, w.Replaces = stateApplying, old
		r := *rec
		r.Patches = append(append([]Applied(nil), others...), w)
		return s.save(&r)
	}
	a, attempts, err := install(pid, v, pl, p, old, spans, unw, opts, &ps, intent)
	proc.Mark("apply: installed")
	if a == nil {
		// Nothing changed: the record as it was (the intent, if written,
		// is replaced).
		if serr := s.save(rec); serr != nil {
			err = errors.Join(err, serr)
		}
		return nil, err
	}
	if err != nil {
		err = fmt.Errorf("pid %d patched with %s, but: %w", pid, p.Name, err)
	}
	a.Pause = ps.longest
	res := &Result{Pid: pid, Patch: p.Name, Pause: ps.longest, Stopped: ps.total, Stops: ps.n, OneThread: ps.one, Attempts: attempts, Region: a.Region, CommitMono: ps.commit}
	if old != nil {
		res.Replaced = old.Name
		rec.Kept = append(rec.Kept, keptOf(*old)...)
		rec.Patches = append(rec.Patches[:oldIdx], rec.Patches[oldIdx+1:]...)
	}
	rec.Patches = append(rec.Patches, *a)
	if serr := s.save(rec); serr != nil {
		err = errors.Join(err, fmt.Errorf("pid %d patched with %s, but %w", pid, p.Name, serr))
	}
	proc.Mark("apply: recorded")
	return res, err
}

// stopSafely stops the process at a moment when no thread is in spans
// and calls commit in that same stop, retrying until the timeout; it
// returns the number of safety-check stops. commit must end the stop
// (Resume or Detach). Each stop is one call of in, which runs its
// argument on the tracer thread (proc.Run, or proc.AttachRun for a first
// stop that attaches), so stopping, reading every thread's registers and
// stack, the check and commit run without a hand-off between threads. On ErrBusy,
// and when commit fails, the process is left stopped, so that the caller
// can clean up in the same stop; after other errors it may have been
// detached.
//
// When some threads are in the way, only those are let run for a few
// microseconds (proc.Nudge) while the others stay stopped: a thread in a
// short function leaves it at once. If a few nudges do not help (a
// thread is parked there), the whole process runs for a while before the
// next stop, so that it never stays stopped for long.
func stopSafely(in func(stop func(*proc.Process) error) error, spans []span, unw *unwinder, opts Options, ps *pauses, commit func() error) (int, error) {
	sort.Slice(spans, func(i, j int) bool { return spans[i].lo < spans[j].lo })
	const nudges = 8
	deadline := time.Now().Add(opts.timeout())
	wait := 100 * time.Microsecond
	stops := 0
	for {
		safe := false
		err := in(func(pr *proc.Process) error {
			var stacks []proc.ThreadStack
			var err error
			if pr.Stopped() {
				stacks, err = pr.Stacks(maxStackWords)
			} else {
				stacks, err = pr.StopStacks(maxStackWords)
			}
			if err != nil {
				return err
			}
			stops++
			for n := 0; ; n++ {
				tids, why := inTheWay(pr, stacks, spans, unw)
				if len(tids) == 0 {
					safe = true
					return commit()
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("%s after %d stops in %v: %w", why, stops, opts.timeout(), ErrBusy)
				}
				if n == nudges {
					break
				}
				if err := pr.Nudge(tids, 10*time.Microsecond); err != nil {
					return err
				}
				if stacks, err = pr.Stacks(maxStackWords); err != nil {
					return err
				}
			}
			if err := pr.Resume(); err != nil {
				return err
			}
			ps.ended(pr)
			return nil
		})
		if err != nil || safe {
			return stops, err
		}
		time.Sleep(wait)
		wait = min(wait*2, 10*time.Millisecond)
	}
}

// maxStackWords bounds the conservative stack scan per thread (2 MiB).
const maxStackWords = 1 << 18

// inTheWay returns the threads whose ip or one of whose return addresses
// lies in spans, and a description of the first one. With an unwinder
// the return addresses are those of the thread's frames, as the call
// frame information finds them (through signal frames and onto the
// interrupted stack of a sigaltstack handler); where unwinding stops
// early, and without an unwinder, every word of the rest of the stack
// counts (a conservative scan).
func inTheWay(pr *proc.Process, stacks []proc.ThreadStack, spans []span, unw *unwinder) ([]int, string) {
	find := func(a uint64) *span {
		i := sort.Search(len(spans), func(i int) bool { return spans[i].hi > a })
		for ; i < len(spans) && spans[i].lo <= a; i++ {
			if a < spans[i].hi {
				return &spans[i]
			}
		}
		return nil
	}
	more := func(a uint64) ([]uint64, error) { return pr.WordsAt(a, maxStackWords) }
	var tids []int
	why := ""
	for _, st := range stacks {
		if sp := find(st.Rip); sp != nil {
			tids = append(tids, st.Tid)
			if why == "" {
				why = fmt.Sprintf("thread %d is executing %s", st.Tid, sp.what)
			}
			continue
		}
		ras, scan := []uint64(nil), st.Words
		if unw != nil {
			ras, scan = unw.returnAddrs(st, more)
		}
		hit := false
		for _, w := range ras {
			if sp := find(w); sp != nil {
				hit = true
				if why == "" {
					why = fmt.Sprintf("thread %d is in a call from %s (return address %#x)", st.Tid, sp.what, w)
				}
				break
			}
		}
		for _, w := range scan {
			if hit {
				break
			}
			if sp := find(w); sp != nil {
				hit = true
				if why == "" {
					why = fmt.Sprintf("thread %d has a return address into %s on its stack", st.Tid, sp.what)
				}
			}
		}
		if hit {
			tids = append(tids, st.Tid)
		}
	}
	return tids, why
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

// jump is one redirect, computed before the commit stop.
type jump struct {
	at  uint64
	cur []byte // the 5 bytes at at when prepared; still there at commit
	jmp []byte
	r   Redirect
}

// install applies the plan to pid, stopping every thread only once (if
// the safety check passes at once), each stop one request to the tracer
// thread (proc.Run):
//
//  1. attach and stop one thread alone, a sleeping one if there is one
//     (proc.AttachOptions.OneThread), the others running on: map the
//     region within reach of the target (and make its data part
//     writable) with syscalls injected in that thread, resume it; then,
//     with the process running, link the image for that address and
//     write it (the new code is not reachable before the jumps exist, so
//     this is safe at any instant) and compute every jump;
//  2. stop every thread until the safety check passes (stopSafely),
//     check that the entries still hold what was read in step 1, write
//     the jumps, put back the entries of a replaced patch that the new
//     one does not redirect, and detach; when a lower level was
//     replaced, every thread but one is detached, and that one unmaps
//     the replaced code (which nothing can reach any more) before it is
//     detached too.
//
// If the check never passes or anything fails before the jumps are
// complete, the jumps written so far are restored and the region is
// unmapped (in the stop at hand, or in a cleanup stop), so that the
// process is exactly as before. An error with a non-nil Applied means the
// patch is in place but something after the commit failed.
func install(pid int, v *view, pl *plan, p *Patch, old *Applied, spans []span, unw *unwinderLoad, opts Options, ps *pauses, intent func(*Applied) error) (a *Applied, attempts int, err error) {
	fail := func(err error) error {
		return fmt.Errorf("pid %d: patch %s (process left unchanged): %w", pid, p.Name, err)
	}
	// The free gaps are looked up before the stop; a gap taken meanwhile
	// only makes the mmap try the next one.
	maps, err := proc.ReadMaps(pid)
	if err != nil {
		return nil, 0, fail(err)
	}
	// Stop 1, in the same request to the tracer thread as the attach.
	// Each injected syscall costs a single-step inside the pause, so the
	// region is mapped read+execute at once (writes go through
	// /proc/PID/mem, which may write read-only mappings of a traced
	// process) and only a writable data part needs an mprotect. The
	// read-only data and slots thus share the r-x protection of the code.
	var base uint64
	proc.Mark("apply: stop 1 (one thread, map the region)")
	pr, err := proc.AttachRun(pid, proc.AttachOptions{Timeout: opts.AttachTimeout, OneThread: true}, func(pr *proc.Process) error {
		var err error
		all := pr.Stopped() // the attach stopped every thread (rare fallback)
		base, err = pr.MmapNearIn(maps, v.target.Start(), v.target.End(), pl.size, unix.PROT_READ|unix.PROT_EXEC)
		if err != nil {
			return fmt.Errorf("allocate %d bytes near %s: %w", pl.size, v.target.Path, err)
		}
		if pl.size > pl.rwOff {
			if err := pr.Mprotect(base+pl.rwOff, pl.size-pl.rwOff, unix.PROT_READ|unix.PROT_WRITE); err != nil {
				return err
			}
		}
		if err := pr.Resume(); err != nil {
			return err
		}
		if all {
			ps.ended(pr)
		} else {
			ps.endedOne(pr)
		}
		return nil
	})
	if pr == nil {
		return nil, 0, fail(err)
	}
	if err != nil && base == 0 {
		return nil, 0, fail(errors.Join(err, release(pr, ps)))
	}
	// From here on, until the jumps are committed, every failure undoes
	// what was written, unmaps the region and detaches.
	var u undo
	committed := false
	defer func() {
		if err == nil || committed {
			return
		}
		if cerr := cleanup(pr, u, base, pl.size, ps); cerr != nil {
			err = fmt.Errorf("%w; restoring the process also failed: %w", err, cerr)
		}
		err = fail(err)
	}()
	if err != nil {
		return nil, 0, err
	}

	// The process runs: link, write and prepare the jumps.
	proc.Mark("apply: link")
	img, err := pl.link(base)
	if err != nil {
		return nil, 0, err
	}
	if err := pr.WriteMem(base, img); err != nil {
		return nil, 0, err
	}
	jumps, err := planJumps(pr, pl, base, old, v)
	if err != nil {
		return nil, 0, err
	}
	a = &Applied{
		Name: p.Name, Level: p.Level, BuildID: p.Target.BuildID, Target: v.target.Path,
		Checksum: p.Checksum(), Region: base, Size: pl.size, TextEnd: pl.textEnd, AppliedAt: time.Now().UTC(),
		Head: bytes.Clone(img[:min(len(img), 16)]),
	}
	if !pl.addrTaken {
		a.Unmap = min(alignTo(pl.textEnd, pageSize), pl.size)
	}
	for _, j := range jumps {
		a.Funcs = append(a.Funcs, j.r)
	}
	// Write-ahead: a livefix killed in the commit stop leaves a record
	// that the next command reconciles with memory.
	if err := intent(a); err != nil {
		return nil, 0, err
	}
	proc.Mark("apply: intent recorded")
	var restores []Redirect
	if old != nil {
		done := map[uint64]bool{}
		for _, j := range jumps {
			done[j.r.Addr] = true
		}
		for _, r := range old.Funcs {
			if !done[r.Addr] {
				restores = append(restores, r)
			}
		}
	}

	// Stop 2, repeated until the check passes: the commit.
	in := func(stop func(*proc.Process) error) error {
		return pr.Run(func() error { return stop(pr) })
	}
	unwr := unw.get()
	proc.Mark("apply: stop 2 (all threads, commit)")
	attempts, err = stopSafely(in, spans, unwr, opts, ps, func() error {
		var cur [5]byte
		for _, j := range jumps {
			if err := pr.ReadMem(j.at, cur[:]); err != nil {
				return fmt.Errorf("read entry of %s: %w", j.r.Name, err)
			}
			if !bytes.Equal(cur[:], j.cur) {
				return fmt.Errorf("entry of %s changed while the patch was prepared (changed by someone else?)", j.r.Name)
			}
			if err := pr.WriteMem(j.at, j.jmp); err != nil {
				return fmt.Errorf("redirect %s: %w", j.r.Name, err)
			}
			at0, cur0 := j.at, j.cur
			u = append(u, func() error { return pr.WriteMem(at0, cur0) })
		}
		for _, r := range restores {
			if err := restoreEntry(pr, r, old.Name); err != nil {
				return err
			}
			u = append(u, func() error { return pr.WriteMem(r.At, jmpBytes(r.At, r.New)) })
		}
		committed = true
		ps.commit = proc.MonoNow()
		proc.MarkAt(ps.commit, "committed")
		if old == nil || old.Unmap == 0 {
			if err := release(pr, ps); err != nil {
				// The jumps are in place; the kernel detaches the rest.
				return fmt.Errorf("detach: %w", err)
			}
			return nil
		}
		// The replaced patch is no longer referenced (the safety check
		// covered its code): one thread unmaps it, the others run.
		return unmapAfter(pr, ps, []Applied{*old}, "the replaced patch ")
	})
	if err != nil && !committed {
		return nil, attempts, err
	}
	return a, attempts, err
}

// unmapAfter, in a stop of every thread after the commit, detaches all
// threads but one, unmaps the code of the patches sel with that one and
// detaches it: code that nothing refers to any more can go while the
// rest of the process runs.
func unmapAfter(pr *proc.Process, ps *pauses, sel []Applied, what string) error {
	if err := pr.DetachAllBut(pr.Pid()); err != nil {
		return fmt.Errorf("detach: %w", err)
	}
	ps.ended(pr)
	var merr error
	for _, a := range sel {
		if a.Unmap == 0 {
			continue
		}
		if err := pr.Munmap(a.Region, a.Unmap); err != nil {
			merr = errors.Join(merr, fmt.Errorf("unmap %s%s: %w", what, a.Name, err))
		}
	}
	err := pr.Detach()
	if !errors.Is(err, proc.ErrDetached) {
		ps.endedOne(pr)
	} else {
		err = nil
	}
	return errors.Join(merr, err)
}

// planJumps reads the entries of the functions to redirect (the process
// may be running) and computes the jumps.
func planJumps(pr *proc.Process, pl *plan, base uint64, old *Applied, v *view) ([]jump, error) {
	oldBy := map[uint64]*Redirect{}
	if old != nil {
		for i := range old.Funcs {
			oldBy[old.Funcs[i].Addr] = &old.Funcs[i]
		}
	}
	var jumps []jump
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
		cur := bytes.Clone(entry[at-f.old : at-f.old+5])
		// The original bytes come from the file, never from memory,
		// which may hold a jump nobody recorded.
		orig, err := v.timg.code(at-v.target.Bias, 5)
		if err != nil {
			return nil, fmt.Errorf("read entry of %s from %s: %w", f.origName, v.target.Path, err)
		}
		if r := oldBy[f.old]; r != nil {
			if !bytes.Equal(cur, jmpBytes(r.At, r.New)) {
				return nil, fmt.Errorf("entry of %s no longer holds the jump of patch %s (changed by someone else?)", f.origName, old.Name)
			}
			if !bytes.Equal(r.Orig, orig) {
				return nil, fmt.Errorf("entry of %s: patch %s recorded original bytes % x, the file has % x", f.origName, old.Name, r.Orig, orig)
			}
		} else if !bytes.Equal(cur, orig) {
			return nil, fmt.Errorf("entry of %s holds % x in memory but % x in %s: the code was changed by something livefix has no record of (another live patching tool?); refusing to patch over it", f.origName, cur, orig, v.target.Path)
		}
		nw := pl.newAddr(f, base)
		d := int64(nw) - int64(at+5)
		if d < -1<<31 || d >= 1<<31 {
			return nil, fmt.Errorf("replacement of %s at %#x is out of jump reach from %#x", f.origName, nw, at)
		}
		jumps = append(jumps, jump{at: at, cur: cur, jmp: jmpBytes(at, nw),
			r: Redirect{Name: f.origName, Addr: f.old, Size: f.oldSize, At: at, Orig: orig, New: nw}})
	}
	return jumps, nil
}

// cleanup undoes u and unmaps [base, base+size) in the current stop, or
// in a new one if the process is running, and detaches.
func cleanup(pr *proc.Process, u undo, base, size uint64, ps *pauses) error {
	return pr.Run(func() error {
		if !pr.Stopped() {
			if err := pr.Stop(); err != nil {
				return fmt.Errorf("stop to clean up: %w", err)
			}
		}
		var errs []error
		if err := u.run(); err != nil {
			errs = append(errs, err)
		}
		if err := pr.Munmap(base, size); err != nil {
			errs = append(errs, err)
		}
		if err := release(pr, ps); err != nil {
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	})
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
	proc.Mark("unpatch: locked")
	rec, err := s.load(pid)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", err, proc.ErrNoProcess)
	}
	opts.notify(rec)
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
	// The unwind tables load while the intent is written.
	unw := noUnwinder()
	if objs, err := proc.Objects(pid); err == nil {
		unw = loadUnwinder(pid, objs)
	}
	defer unw.release()
	var spans []span
	for _, a := range sel {
		spans = append(spans, span{a.Region, a.Region + a.TextEnd, "patch " + a.Name})
	}
	defer quietGC()()
	var ps pauses
	intent := *rec
	intent.Patches = append([]Applied(nil), keep...)
	for _, a := range sel {
		a.State = stateRemoving
		intent.Patches = append(intent.Patches, a)
	}
	if err := s.save(&intent); err != nil {
		return nil, fmt.Errorf("pid %d: unpatch (process left unchanged): %w", pid, err)
	}
	proc.Mark("unpatch: intent recorded")
	attempts, committed, err := remove(pid, sel, spans, unw, opts, &ps)
	if !committed {
		if serr := s.save(rec); serr != nil {
			err = errors.Join(err, serr)
		}
		return nil, fmt.Errorf("pid %d: unpatch (process left unchanged): %w", pid, err)
	}
	rec.Patches = keep
	for _, a := range sel {
		rec.Kept = append(rec.Kept, keptOf(a)...)
	}
	serr := s.save(rec)
	proc.Mark("unpatch: recorded")
	var res []*Result
	for _, a := range sel {
		res = append(res, &Result{Pid: pid, Patch: a.Name, Pause: ps.longest, Stopped: ps.total, Stops: ps.n, OneThread: ps.one, Attempts: attempts, Region: a.Region, CommitMono: ps.commit})
	}
	if err := errors.Join(err, serr); err != nil {
		return res, fmt.Errorf("pid %d: unpatched, but: %w", pid, err)
	}
	return res, nil
}

// remove takes the patches sel out of pid in one stop of every thread
// (repeated until the safety check passes), which checks and restores
// every entry; then one thread alone unmaps the regions' code, which
// nothing refers to any more, while the others run (unmapAfter).
// committed reports that the entries were restored; an error then
// concerns only the unmapping.
func remove(pid int, sel []Applied, spans []span, unw *unwinderLoad, opts Options, ps *pauses) (attempts int, committed bool, err error) {
	// The first stop is the attach itself.
	var pr *proc.Process
	in := func(stop func(*proc.Process) error) error {
		if pr != nil {
			return pr.Run(func() error { return stop(pr) })
		}
		_, err := proc.AttachRun(pid, proc.AttachOptions{Timeout: opts.AttachTimeout}, func(p *proc.Process) error {
			pr = p // commit below uses it
			return stop(p)
		})
		return err
	}
	unwr := unw.get()
	proc.Mark("unpatch: stop (all threads, restore entries)")
	attempts, err = stopSafely(in, spans, unwr, opts, ps, func() error {
		var u undo
		for _, a := range sel {
			for _, r := range a.Funcs {
				if err := restoreEntry(pr, r, a.Name); err != nil {
					if uerr := u.run(); uerr != nil {
						err = fmt.Errorf("%w; restoring the process also failed: %w", err, uerr)
					}
					return err
				}
				u = append(u, func() error { return pr.WriteMem(r.At, jmpBytes(r.At, r.New)) })
			}
		}
		committed = true
		ps.commit = proc.MonoNow()
		proc.MarkAt(ps.commit, "committed")
		unmap := false
		for _, a := range sel {
			unmap = unmap || a.Unmap > 0
		}
		if !unmap {
			return release(pr, ps)
		}
		return unmapAfter(pr, ps, sel, "patch ")
	})
	if err != nil {
		if committed || pr == nil {
			return attempts, committed, err
		}
		return attempts, false, errors.Join(err, release(pr, ps))
	}
	return attempts, true, nil
}

// release detaches pr if it is still attached (stopped or running) and
// records the stop that ends.
func release(pr *proc.Process, ps *pauses) error {
	err := pr.Detach()
	if errors.Is(err, proc.ErrDetached) {
		return nil // already released after a failure
	}
	ps.ended(pr)
	return err
}

// keptOf is what removing a leaves mapped.
func keptOf(a Applied) []Kept {
	if a.Unmap >= a.Size {
		return nil
	}
	return []Kept{{Patch: a.Name, Region: a.Region + a.Unmap, Size: a.Size - a.Unmap}}
}
