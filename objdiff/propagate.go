package objdiff

import (
	"debug/elf"
	"slices"
	"strings"

	"golang.org/x/arch/x86/x86asm"

	"github.com/livefix/livefix/elfobj"
)

// propagate spreads changes from what changed to what must be replaced
// with it, to a fixed point:
//   - read-only data that refers to changed read-only data changed too
//     (an ops table pointing at a changed policy), and a function using
//     changed read-only data is changed;
//   - the parent of a changed .cold fragment is changed;
//   - a changed static function without an ftrace entry (a SYSCALL_DEFINE
//     body, a static inline helper gcc kept out of line, their clones)
//     cannot be redirected: its new copy is included privately and every
//     caller is changed so that its new copy calls the new helper,
//     recursively through callers that have no ftrace entry either.
//
// Then it applies the function-level refusals, naming the function that
// cannot be patched and, for an escalated caller, why it had to be.
func (d *differ) propagate() {
	d.propagateRodata()
	var work []*entity
	mark := func(f *entity, why string) {
		if (f.state == unchanged || f.state == lineOnly) && !d.ignoredBy(f) {
			f.state, f.why = changed, why
			work = append(work, f)
		}
	}
	for _, f := range d.patched.funcs {
		if f.state == changed || f.state == added {
			work = append(work, f)
			continue
		}
		for _, r := range f.relocs {
			if t := d.patched.resolve(f.sec, r); t.kind == refEntity && d.rodataChanged[t.ent] {
				mark(f, "uses changed read-only "+t.ent.name())
				break
			}
		}
	}
	var users *userIndex
	for len(work) > 0 {
		f := work[0]
		work = work[1:]
		if f.state != changed {
			continue
		}
		if isFragment(f) {
			if p := d.parentOf(f); p != nil {
				mark(p, "its split-off part "+f.name()+" changed")
			}
			continue
		}
		if !d.needFentry() || hasFentry(f.twin) || isInit(f.sec) || isExit(f.sec) {
			continue
		}
		if users == nil {
			users = d.indexUsers()
		}
		var why string
		switch {
		case f.twin.sym.Bind != elf.STB_LOCAL:
			why = ReasonNoFentry + ": the original has no __fentry__ call (notrace or noinstr code), so ftrace cannot redirect it, and it is global, so callers in other files could still reach the old copy"
		case len(users.stored[f]) > 0:
			why = ReasonNoFentry + ": the original has no __fentry__ call and its address is stored in " + strings.Join(users.stored[f], ", ") +
				" (and " + ReasonAddress + "), so the running kernel would keep calling the old copy; patch the code that installs it instead"
		case len(users.taken[f]) > 0:
			why = ReasonNoFentry + ": the original has no __fentry__ call and " + strings.Join(users.taken[f], ", ") + " takes its address (" + ReasonAddress + "), which could outlive the patch"
		}
		if why != "" && !d.orig.fentry {
			why += " (nothing in this file has an ftrace entry: it is compiled without ftrace instrumentation, as the tracer's own kernel/trace is)"
		}
		if why != "" && !d.forced(f, why) {
			d.refuse(f.name(), why)
			continue
		}
		f.state = private
		f.why = "no ftrace entry: new copy included privately, its callers replaced"
		for _, c := range users.callers[f] {
			mark(c, "calls "+f.name()+", which changed and has no ftrace entry")
		}
	}
	for _, f := range d.patched.funcs {
		because := ""
		if strings.HasPrefix(f.why, "calls ") || strings.HasPrefix(f.why, "uses ") {
			because = " (it " + f.why + ")"
		}
		switch {
		case (f.state == changed || f.state == private) && isInit(f.sec):
			d.refuse(f.name(), ReasonInitCode+": __init code has already run and been freed; a live patch cannot change it"+because)
		case f.state == added && isInit(f.sec):
			d.refuse(f.name(), ReasonInitCode+": a new __init function would never run in a live patch")
		case (f.state == changed || f.state == private) && isExit(f.sec):
			d.refuse(f.name(), ReasonExitCode+": __exit code runs only when the module is unloaded and has no ftrace entry, so a live patch cannot change it; the fix takes effect when the module is next loaded"+because)
		}
	}
	d.checkReached()
}

// userIndex records, for each function of the patched object, who calls
// it, who takes its address in code, and which data stores its address.
type userIndex struct {
	callers map[*entity][]*entity
	taken   map[*entity][]string
	stored  map[*entity][]string
}

func (d *differ) indexUsers() *userIndex {
	u := &userIndex{callers: map[*entity][]*entity{}, taken: map[*entity][]string{}, stored: map[*entity][]string{}}
	o := d.patched
	for _, g := range o.funcs {
		for _, r := range g.relocs {
			t := o.resolve(g.sec, r)
			if t.kind != refEntity || !t.ent.isFunc || t.ent == g {
				continue
			}
			if o.isBranch(g.sec, r) {
				if cs := u.callers[t.ent]; len(cs) == 0 || cs[len(cs)-1] != g {
					u.callers[t.ent] = append(cs, g)
				}
			} else if !slices.Contains(u.taken[t.ent], g.name()) {
				u.taken[t.ent] = append(u.taken[t.ent], g.name())
			}
		}
	}
	for sec, rs := range o.relocs {
		if isCode(sec) || tableFor(sec.Name) != nil || exportSection(sec.Name) || ignoredSection(sec) || sec.Name == ForceUnsafeMarker {
			continue
		}
		for _, r := range rs {
			t := o.resolve(sec, r)
			if t.kind != refEntity || !t.ent.isFunc {
				continue
			}
			where := sec.Name
			if e := o.entityAt(sec, r.Offset); e != nil {
				where = e.name()
			}
			if !slices.Contains(u.stored[t.ent], where) {
				u.stored[t.ent] = append(u.stored[t.ent], where)
			}
		}
	}
	for _, m := range []map[*entity][]string{u.taken, u.stored} {
		for _, v := range m {
			slices.Sort(v)
		}
	}
	return u
}

// isBranch reports whether relocation r of code section sec is the
// target of a direct call or jump.
func (o *object) isBranch(sec *elfobj.Section, r elfobj.Reloc) bool {
	if !isCode(sec) || !pcRelative(r.Type) {
		return false
	}
	in, ok := o.insnAt(sec, r.Offset)
	if !ok || in.end != r.Offset+4 {
		return false
	}
	dec, err := x86asm.Decode(sec.Data[in.start:in.end], 64)
	if err != nil {
		return false
	}
	switch dec.Op {
	case x86asm.CALL, x86asm.JMP, x86asm.JA, x86asm.JAE, x86asm.JB, x86asm.JBE, x86asm.JE, x86asm.JNE,
		x86asm.JG, x86asm.JGE, x86asm.JL, x86asm.JLE, x86asm.JS, x86asm.JNS, x86asm.JO, x86asm.JNO, x86asm.JP, x86asm.JNP:
		_, rel := dec.Args[0].(x86asm.Rel)
		return rel
	}
	return false
}

// propagateRodata marks local read-only data that refers to changed
// read-only data as changed, to a fixed point: a table of pointers means
// something else when what it points at changed.
func (d *differ) propagateRodata() {
	if len(d.rodataChanged) == 0 {
		return
	}
	for grew := true; grew; {
		grew = false
		for _, e := range d.patched.data {
			if e.twin == nil || d.rodataChanged[e] || e.sec.Flags&elf.SHF_WRITE != 0 || isInit(e.sec) || isSpecialStatic(e) {
				continue
			}
			for _, r := range e.relocs {
				if t := d.patched.resolve(e.sec, r); t.kind == refEntity && d.rodataChanged[t.ent] {
					if e.sym.Bind != elf.STB_LOCAL {
						d.refuse(e.name(), ReasonDataInit+": global read-only object refers to changed "+t.ent.name()+"; code outside this file would keep reading the old copy")
						break
					}
					e.state = changed
					d.rodataChanged[e] = true
					d.rodataWhy(e, t.ent)
					grew = true
					break
				}
			}
		}
	}
}

func (d *differ) rodataWhy(e, via *entity) {
	e.why = "refers to changed read-only " + via.name()
}

// checkReached refuses changed read-only data that no included function
// uses, directly or through other changed read-only data: it is reached
// only through code or data the patch does not replace (an ops table
// registered at boot, a writable structure), so dropping it would
// silently leave the old values in force.
func (d *differ) checkReached() {
	if len(d.rodataChanged) == 0 {
		return
	}
	reached := map[*entity]bool{}
	var work []*entity
	for _, f := range d.patched.funcs {
		if f.state != changed && f.state != added && f.state != private {
			continue
		}
		for _, r := range f.relocs {
			if t := d.patched.resolve(f.sec, r); t.kind == refEntity && d.rodataChanged[t.ent] && !reached[t.ent] {
				reached[t.ent] = true
				work = append(work, t.ent)
			}
		}
	}
	for len(work) > 0 {
		e := work[0]
		work = work[1:]
		for _, r := range e.relocs {
			if t := d.patched.resolve(e.sec, r); t.kind == refEntity && d.rodataChanged[t.ent] && !reached[t.ent] {
				reached[t.ent] = true
				work = append(work, t.ent)
			}
		}
	}
	for _, e := range d.patched.data {
		if !d.rodataChanged[e] || reached[e] {
			continue
		}
		users := d.usersOf(e)
		via := "nothing the patch replaces"
		if len(users) > 0 {
			via = strings.Join(users, ", ")
		}
		d.refuse(e.name(), ReasonUnreached+": it is used only by "+via+
			", which the patch does not replace, so the running kernel would keep the old values; change the code that reads it, or copy the data into a new object used by changed code")
	}
}

// usersOf names the functions and data of the patched object whose
// relocations point at e.
func (d *differ) usersOf(e *entity) []string {
	var out []string
	for sec, rs := range d.patched.relocs {
		for _, r := range rs {
			if t := d.patched.resolve(sec, r); t.kind == refEntity && t.ent == e {
				name := sec.Name
				if u := d.patched.entityAt(sec, r.Offset); u != nil {
					name = u.name()
				}
				if !slices.Contains(out, name) {
					out = append(out, name)
				}
			}
		}
	}
	slices.Sort(out)
	return out
}
