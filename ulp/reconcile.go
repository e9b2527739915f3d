package ulp

import (
	"bytes"
	"fmt"
	"os"
	"strconv"

	"github.com/livefix/livefix/internal/proc"
)

// Records and memory are kept in agreement by write-ahead records and a
// reconcile step at the start of every command:
//
//   - before the commit stop of an apply, the record is written with the
//     new patch in state "applying" (and, for a level replacement, the
//     patch it replaces under Replaces); before the commit stop of an
//     unpatch, the patches to remove are written in state "removing";
//     the final record is written after the commit;
//   - each command that loads a record first reads every recorded entry
//     from the process's memory (/proc/PID/mem, no stop) and the first
//     bytes of the patch's region: all entries hold our jumps (and the
//     region is ours) means applied; none means not applied (also after
//     an exec, which replaces the whole address space); anything in
//     between (a livefix killed inside the commit stop) is repaired by
//     writing back the original bytes of the entries that hold a jump, in
//     one stop (restoring an entry is safe at any instant: the new code
//     stays mapped), so the process ends up unpatched and unrecorded;
//   - a forked child has its parent's memory, jumps and region included:
//     a process the store does not know whose memory shows a recorded
//     patch of another process is given a record of its own (adopted),
//     so it is listed and can be unpatched.
//
// A livefix killed after mapping a region but before the commit leaves
// that region mapped and unreferenced (the patch's size, a few pages);
// one killed after the commit of a level replacement but before the last
// stop leaves the replaced patch's region mapped: both are reported and
// never unmapped later, because a killed command's stack check is gone.

// Applied.State values.
const (
	stateApplying = "applying"
	stateRemoving = "removing"
)

// entryState counts the recorded entries of a that hold our jump, the
// original bytes, or something else (unreadable included).
type entryState struct{ jumps, origs, others int }

func inspect(mem *os.File, a *Applied) (entryState, bool) {
	var st entryState
	cur := make([]byte, 5)
	for _, r := range a.Funcs {
		_, err := mem.ReadAt(cur, int64(r.At))
		switch {
		case err != nil:
			st.others++
		case bytes.Equal(cur, jmpBytes(r.At, r.New)):
			st.jumps++
		case bytes.Equal(cur, r.Orig):
			st.origs++
		default:
			st.others++
		}
	}
	head := len(a.Head) == 0
	if !head {
		b := make([]byte, len(a.Head))
		_, err := mem.ReadAt(b, int64(a.Region))
		head = err == nil && bytes.Equal(b, a.Head)
	}
	return st, head
}

// write is a repair: bytes to put back at an address.
type write struct {
	addr uint64
	b    []byte
	what string
}

// reconcile makes rec agree with the memory of its process, repairing
// what a killed livefix left; it returns true if rec changed.
func reconcile(rec *Record) bool {
	mem, err := os.Open("/proc/" + strconv.Itoa(rec.Pid) + "/mem")
	if err != nil {
		return false // the process is gone: load drops the record
	}
	defer mem.Close()
	var keep []Applied
	var repairs []write
	changed := false
	note := func(format string, args ...any) {
		rec.Notes = append(rec.Notes, fmt.Sprintf(format, args...))
		changed = true
	}
	undoJumps := func(a *Applied) {
		cur := make([]byte, 5)
		for _, r := range a.Funcs {
			if _, err := mem.ReadAt(cur, int64(r.At)); err == nil && bytes.Equal(cur, jmpBytes(r.At, r.New)) {
				repairs = append(repairs, write{r.At, r.Orig, r.Name})
			}
		}
	}
	for _, a := range rec.Patches {
		st, head := inspect(mem, &a)
		n := len(a.Funcs)
		full := st.jumps == n && head
		switch {
		case a.Replaces != nil:
			old := *a.Replaces
			ost, ohead := inspect(mem, &old)
			switch {
			case full:
				a.State, a.Replaces = "", nil
				keep = append(keep, a)
				note("patch %s level %d replaced %s (a livefix was interrupted before unmapping the old patch, whose %d bytes at %#x stay mapped)", a.Name, a.Level, old.Name, old.Size, old.Region)
			case st.jumps == 0 && ost.jumps == len(old.Funcs) && ohead:
				old.State = ""
				keep = append(keep, old)
				note("patch %s was not applied (an interrupted livefix); %s is still applied", a.Name, old.Name)
			default:
				undoJumps(&a)
				undoJumps(&old)
				note("patches %s and %s were half replaced by an interrupted livefix: both removed (the original code runs)", a.Name, old.Name)
			}
		case full:
			if a.State != "" {
				note("patch %s: an interrupted livefix %s it; memory shows it applied", a.Name, map[string]string{stateApplying: "was applying", stateRemoving: "was removing"}[a.State])
				a.State = ""
			}
			keep = append(keep, a)
		case st.jumps == 0:
			switch {
			case a.State == stateApplying:
				note("patch %s was not applied (an interrupted livefix; its region of %d bytes at %#x may stay mapped, unused)", a.Name, a.Size, a.Region)
			case a.State == stateRemoving:
				note("patch %s was removed (by an interrupted livefix)", a.Name)
			case st.origs == n:
				note("patch %s is no longer in memory (the entries hold the original code): record dropped", a.Name)
			default:
				note("patch %s is no longer in memory (the process exec'd or replaced the code): record dropped", a.Name)
			}
		default:
			undoJumps(&a)
			note("patch %s was half applied or half removed (%d of %d entries redirected): the redirected ones were restored, the original code runs", a.Name, st.jumps, n)
		}
	}
	if len(repairs) > 0 {
		if err := repair(rec.Pid, repairs); err != nil {
			// Keep the record as it was: the next command tries again.
			rec.Notes = append(rec.Notes, fmt.Sprintf("repair failed, record kept: %v", err))
			return true
		}
	}
	if changed {
		rec.Patches = keep
	}
	return changed
}

// repair writes ws into pid in one stop.
func repair(pid int, ws []write) error {
	pr, err := proc.AttachRun(pid, proc.AttachOptions{}, func(pr *proc.Process) error {
		var werr error
		for _, w := range ws {
			if err := pr.WriteMem(w.addr, w.b); err != nil {
				werr = fmt.Errorf("restore entry of %s: %w", w.what, err)
				break
			}
		}
		if err := pr.Detach(); err != nil && werr == nil {
			werr = err
		}
		return werr
	})
	if err != nil && pr != nil {
		pr.Detach()
	}
	return err
}

// adopt gives pid (which has no record) the recorded patches of other
// processes whose jumps and region its memory shows: pid is a forked
// child (or grandchild) of a patched process.
func adopt(rec *Record, others []*Record) bool {
	mem, err := os.Open("/proc/" + strconv.Itoa(rec.Pid) + "/mem")
	if err != nil {
		return false
	}
	defer mem.Close()
	seen := map[uint64]bool{}
	for _, o := range others {
		if o.Pid == rec.Pid {
			continue
		}
		for _, a := range o.Patches {
			if a.State != "" || a.Replaces != nil || len(a.Head) == 0 || seen[a.Region] {
				continue
			}
			if st, head := inspect(mem, &a); head && st.jumps == len(a.Funcs) {
				seen[a.Region] = true
				rec.Patches = append(rec.Patches, a)
				rec.Notes = append(rec.Notes, fmt.Sprintf("has patch %s of pid %d (inherited by fork): now recorded", a.Name, o.Pid))
			}
		}
	}
	return len(seen) > 0
}
