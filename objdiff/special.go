package objdiff

import (
	"bytes"
	"fmt"
	"slices"

	"github.com/livefix/livefix/elfobj"
)

// table describes a kernel special section: an array of fixed-size
// entries, each tied to a place in code by a relocation at anchor.
type table struct {
	name    string
	entSize uint64
	anchor  uint64
	// line is the byte range of a __LINE__ field, ignored in comparisons.
	line [2]uint64
	// parallel names a section without relocations whose entries of
	// parallelSize bytes correspond one to one (the ORC unwind table).
	parallel     string
	parallelSize uint64
}

// tables lists the special sections of x86-64 Linux 6.1 objects, with
// their entry layouts (struct bug_entry, exception_table_entry,
// jump_entry, alt_instr, paravirt_patch_site, and arrays of s32 or
// pointers).
var tables = []table{
	{name: "__bug_table", entSize: 12, line: [2]uint64{8, 10}},
	{name: "__ex_table", entSize: 12},
	{name: "__jump_table", entSize: 16},
	{name: ".altinstructions", entSize: 12},
	{name: ".parainstructions", entSize: 16},
	{name: ".smp_locks", entSize: 4},
	{name: ".static_call_sites", entSize: 8},
	{name: ".retpoline_sites", entSize: 4},
	{name: ".return_sites", entSize: 4},
	{name: ".call_sites", entSize: 4},
	{name: ".ibt_endbr_seal", entSize: 4},
	{name: "__mcount_loc", entSize: 8},
	{name: "__patchable_function_entries", entSize: 8},
	{name: ".orc_unwind_ip", entSize: 4, parallel: ".orc_unwind", parallelSize: 6},
}

func tableFor(name string) *table {
	for i := range tables {
		if tables[i].name == name {
			return &tables[i]
		}
	}
	return nil
}

// parallelOf reports whether name is the relocation-free half of a table.
func parallelOf(name string) bool {
	for _, t := range tables {
		if t.parallel == name {
			return true
		}
	}
	return false
}

// tableEntry is one entry of a special section.
type tableEntry struct {
	index  int
	owner  *entity // the function the anchor points into; nil if none
	relocs []elfobj.Reloc
}

// special is a special section of one object split into entries.
type special struct {
	t       *table
	sec     *elfobj.Section
	par     *elfobj.Section // the parallel section, if any
	entries []tableEntry
	// err says why the section could not be split; its entries are then
	// unknown and any included function with entries in it is refused.
	err error
}

func (o *object) specials() []*special {
	var out []*special
	for _, sec := range o.f.Sections {
		t := tableFor(sec.Name)
		if t == nil {
			continue
		}
		sp := &special{t: t, sec: sec}
		out = append(out, sp)
		n := sec.Len()
		if n%t.entSize != 0 {
			sp.err = fmt.Errorf("section %s is %d bytes, not a whole number of %d-byte entries", sec.Name, n, t.entSize)
			continue
		}
		count := int(n / t.entSize)
		if t.parallel != "" {
			sp.par = o.f.SectionByName(t.parallel)
			if sp.par == nil || sp.par.Len() != uint64(count)*t.parallelSize {
				sp.err = fmt.Errorf("section %s does not match %s entry for entry", t.parallel, sec.Name)
				continue
			}
		}
		rs := o.relocs[sec]
		sp.entries = make([]tableEntry, count)
		for i := range sp.entries {
			sp.entries[i].index = i
		}
		for _, r := range rs {
			i := int(r.Offset / t.entSize)
			if i >= count {
				sp.err = fmt.Errorf("section %s has a relocation past its end", sec.Name)
				break
			}
			e := &sp.entries[i]
			e.relocs = append(e.relocs, r)
			if r.Offset%t.entSize == t.anchor {
				if ref := o.resolve(sec, r); ref.kind == refEntity && ref.ent.isFunc {
					e.owner = ref.ent
				}
			}
		}
	}
	return out
}

// entryKey describes an entry for comparison, relative to its owner, with
// its line field masked when maskLine is set.
func (d *differ) entryKey(o *object, sp *special, e tableEntry, maskLine bool) string {
	start := uint64(e.index) * sp.t.entSize
	var b []byte
	if sp.sec.Data != nil {
		b = slices.Clone(sp.sec.Data[start : start+sp.t.entSize])
	}
	if maskLine && sp.t.line[1] > 0 {
		for i := sp.t.line[0]; i < sp.t.line[1]; i++ {
			b[i] = 0
		}
	}
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "%x", b)
	if sp.par != nil {
		fmt.Fprintf(&buf, "/%x", sp.par.Data[uint64(e.index)*sp.t.parallelSize:uint64(e.index+1)*sp.t.parallelSize])
	}
	for _, r := range e.relocs {
		fmt.Fprintf(&buf, "|%d %d %s", r.Offset-start, r.Type, d.refKey(o, o.resolve(sp.sec, r), false))
	}
	return buf.String()
}

// entriesOf returns, per special section name, the keys of the entries
// that belong to function f, in order.
func (d *differ) entriesOf(f *entity, maskLine bool) map[string][]string {
	m := make(map[string][]string)
	for _, oe := range d.owned[f] {
		m[oe.sp.sec.Name] = append(m[oe.sp.sec.Name], d.entryKey(f.obj, oe.sp, oe.e, maskLine))
	}
	return m
}

// ownedEntry is a special section entry seen from the function it
// belongs to.
type ownedEntry struct {
	sp *special
	e  tableEntry
}

// indexSpecials splits the special sections of o and files each entry
// under the function it belongs to.
func (d *differ) indexSpecials(o *object) {
	d.specs[o] = o.specials()
	for _, sp := range d.specs[o] {
		for _, e := range sp.entries {
			if e.owner != nil {
				d.owned[e.owner] = append(d.owned[e.owner], ownedEntry{sp, e})
			}
		}
	}
}

// specialDiff compares the special section entries of two correlated
// functions. It reports whether anything differs, and whether everything
// but __LINE__ fields is the same.
func (d *differ) specialDiff(a, b *entity) (differs, lineOnly bool, what string) {
	full := func(ma, mb map[string][]string) string {
		names := make(map[string]bool)
		for n := range ma {
			names[n] = true
		}
		for n := range mb {
			names[n] = true
		}
		keys := make([]string, 0, len(names))
		for n := range names {
			keys = append(keys, n)
		}
		slices.Sort(keys)
		for _, n := range keys {
			if !slices.Equal(ma[n], mb[n]) {
				return n
			}
		}
		return ""
	}
	if n := full(d.entriesOf(a, false), d.entriesOf(b, false)); n == "" {
		return false, false, ""
	} else if m := full(d.entriesOf(a, true), d.entriesOf(b, true)); m == "" {
		return true, true, n
	} else {
		return true, false, m
	}
}
