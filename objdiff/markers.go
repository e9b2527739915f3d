package objdiff

import (
	"bytes"
	"slices"
	"strings"
)

// Marker sections that livefix's kpatch-macros.h leaves in the patched
// object and that change what the engine decides (the build removes them
// afterwards, see klp).
const (
	// IgnoreSectionsMarker holds pointers to section names
	// (KPATCH_IGNORE_SECTION): changes in those sections are ignored.
	IgnoreSectionsMarker = ".livefix.ignore.sections"
	// ForceUnsafeMarker holds pointers to functions (KPATCH_FORCE_UNSAFE):
	// the patch author states that the old and new copies may run at the
	// same time, so the engine includes them where it would refuse only
	// because the old copy stays reachable.
	ForceUnsafeMarker = ".livefix.force_unsafe"
)

// ReasonIgnoreMissing: KPATCH_IGNORE_SECTION names a section that neither
// object has.
const ReasonIgnoreMissing = "ignored section missing"

// Verdicts for the markers.
const (
	VerdictIgnored = "ignored" // changed, in a section KPATCH_IGNORE_SECTION ignores: the running copy stays
	VerdictForced  = "FORCED"  // KPATCH_FORCE_UNSAFE overrode a refusal: the old copy may still run
)

// readMarkers reads the patched object's KPATCH_IGNORE_SECTION and
// KPATCH_FORCE_UNSAFE markers.
func (d *differ) readMarkers() {
	o := d.patched
	for _, sec := range o.f.Sections {
		switch sec.Name {
		case IgnoreSectionsMarker:
			for _, r := range o.relocs[sec] {
				t := o.resolve(sec, r)
				if t.sec == nil || t.off < 0 || t.off >= int64(len(t.sec.Data)) {
					continue
				}
				name := t.sec.Data[t.off:]
				if i := bytes.IndexByte(name, 0); i >= 0 {
					name = name[:i]
				}
				d.ignoreSec[string(name)] = true
			}
		case ForceUnsafeMarker:
			for _, r := range o.relocs[sec] {
				switch t := o.resolve(sec, r); {
				case t.kind == refEntity && t.ent.isFunc:
					d.force[t.ent.name()] = true
				case t.kind == refExtern:
					d.force[t.sym.Name] = true
				}
			}
		}
	}
	for name := range d.ignoreSec {
		if d.orig.f.SectionByName(name) == nil && d.patched.f.SectionByName(name) == nil {
			d.refuse(name, ReasonIgnoreMissing+": KPATCH_IGNORE_SECTION(\""+name+"\") names a section neither object has (with -ffunction-sections a function foo is in .text.foo, an object bar in .data.bar or .rodata.bar)")
		}
	}
}

// ignoredBy reports whether KPATCH_IGNORE_SECTION covers e's section.
func (d *differ) ignoredBy(e *entity) bool {
	return len(d.ignoreSec) > 0 && (d.ignoreSec[e.sec.Name] || e.twin != nil && d.ignoreSec[e.twin.sec.Name])
}

// applyIgnores turns changes in ignored sections back into no change,
// before propagation: the running copies stay, and nothing that uses them
// is changed on their account.
func (d *differ) applyIgnores() {
	if len(d.ignoreSec) == 0 {
		return
	}
	for _, list := range [][]*entity{d.patched.funcs, d.patched.data} {
		for _, e := range list {
			if e.twin == nil || !d.ignoredBy(e) {
				continue
			}
			if e.state == changed || e.state == lineOnly || !sameContent(e.twin, e) || d.relocDiff(e.twin, e) != "" {
				d.ignoredEnts = append(d.ignoredEnts, e)
			}
			e.state = unchanged
			delete(d.rodataChanged, e)
		}
	}
}

// forced reports whether KPATCH_FORCE_UNSAFE covers function f and, if
// so, records the refusal it overrides.
func (d *differ) forced(f *entity, reason string) bool {
	if !d.force[f.name()] && (f.twin == nil || !d.force[f.twin.name()]) {
		return false
	}
	d.overridden = append(d.overridden, Refusal{Symbol: f.name(), Reason: reason})
	return true
}

// markerExplanations says what the markers did, for --explain.
func (d *differ) markerExplanations() []Explanation {
	var out []Explanation
	for _, e := range d.ignoredEnts {
		sec := e.sec.Name
		if !d.ignoreSec[sec] {
			sec = e.twin.sec.Name // the original's: a new value moved it (.data.x to .bss.x)
		}
		out = append(out, Explanation{e.name(), VerdictIgnored, "changed, but its section " + sec + " is ignored (KPATCH_IGNORE_SECTION): the running copy stays and nothing is patched on its account"})
	}
	for name := range d.ignoreSec {
		if (d.orig.f.SectionByName(name) != nil || d.patched.f.SectionByName(name) != nil) && !slices.ContainsFunc(d.ignoredEnts, func(e *entity) bool { return e.sec.Name == name || e.twin.sec.Name == name }) {
			out = append(out, Explanation{name, VerdictIgnored, "section ignored (KPATCH_IGNORE_SECTION); nothing in it changed"})
		}
	}
	seen := map[string]bool{}
	for _, r := range d.overridden {
		seen[r.Symbol] = true
		out = append(out, Explanation{r.Symbol, VerdictForced, "WARNING: included although unsafe, because the patch marks it KPATCH_FORCE_UNSAFE; the engine would have refused it: " + r.Reason +
			". The old copy keeps running wherever it is still reached: the patch author vouches that both copies may run at once"})
	}
	for name := range d.force {
		if !seen[name] {
			out = append(out, Explanation{name, VerdictForced, "marked KPATCH_FORCE_UNSAFE, but nothing about it needed forcing"})
		}
	}
	return out
}

// forcedNames lists the overridden refusals, sorted by symbol.
func (d *differ) forcedRefusals() []Refusal {
	out := slices.Clone(d.overridden)
	slices.SortFunc(out, func(a, b Refusal) int { return strings.Compare(a.Symbol, b.Symbol) })
	return out
}
