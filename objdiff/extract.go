package objdiff

import (
	"debug/elf"
	"fmt"
	"slices"
	"strings"

	"github.com/livefix/livefix/elfobj"
)

// extraction builds the output object.
type extraction struct {
	d      *differ
	out    *elfobj.File
	pieces map[*entity]*elfobj.Symbol          // included entity -> its symbol in out
	anon   map[*elfobj.Section]*elfobj.Section // copied whole section -> copy
	secSym map[*elfobj.Section]*elfobj.Symbol  // out section -> its section symbol
	ext    map[string]*elfobj.Symbol
	exts   map[string]Extern
	queue  []*elfobj.Section // copied sections whose relocations are pending
	err    error
}

// included reports whether the patch carries its own copy of e.
func (d *differ) included(e *entity) bool {
	if e.obj != d.patched {
		return false
	}
	if isSpecialStatic(e) {
		return d.statics[e]
	}
	switch {
	case e.state == changed && !e.isFunc:
		return d.rodataChanged[e]
	case e.state == changed, e.state == added, e.state == private:
		return true
	case isFragment(e):
		p := d.parentOf(e)
		return p != nil && (p.state == changed || p.state == added || p.state == private)
	}
	return false
}

func (d *differ) extract(res *Result) (*elfobj.File, error) {
	x := &extraction{
		d:      d,
		out:    &elfobj.File{OSABI: d.patched.f.OSABI, Sections: []*elfobj.Section{{}}, Symbols: []*elfobj.Symbol{{}}},
		pieces: make(map[*entity]*elfobj.Symbol),
		anon:   make(map[*elfobj.Section]*elfobj.Section),
		secSym: make(map[*elfobj.Section]*elfobj.Symbol),
		ext:    make(map[string]*elfobj.Symbol),
		exts:   make(map[string]Extern),
	}
	var inc []*entity
	for _, es := range [][]*entity{d.patched.funcs, d.patched.data} {
		for _, e := range es {
			if !isSpecialStatic(e) && d.included(e) {
				inc = append(inc, e)
			}
		}
	}
	inc = append(inc, d.neededStatics(inc)...)
	// Sections and symbols first, so that references between included
	// parts resolve to each other whatever their order. Dynamic debug
	// descriptors share one __dyndbg section, the array the kernel reads
	// when it loads the patch module; every other part gets a section of
	// its own.
	type piece struct {
		e    *entity
		sec  *elfobj.Section
		base uint64 // the entity's offset in sec
	}
	var ps []piece
	var dyndbg *elfobj.Section
	for _, e := range inc {
		var s *elfobj.Section
		base := uint64(0)
		if isDyndbg(e) {
			if dyndbg == nil {
				// The kernel walks the section as an array of struct
				// _ddebug (8-byte aligned): no padding between entries.
				dyndbg = &elfobj.Section{Name: dyndbgSection, Type: e.sec.Type, Flags: e.sec.Flags &^ elf.SHF_GROUP, Align: 8, Data: []byte{}}
				x.addSection(dyndbg)
			}
			s = dyndbg
			if r := uint64(len(s.Data)) % 8; r != 0 {
				s.Data = append(s.Data, make([]byte, 8-r)...)
			}
			base = uint64(len(s.Data))
			s.Data = append(s.Data, e.content()...)
		} else {
			name := e.sec.Name
			if !e.wholeSection() {
				name = e.sec.Name + "." + e.name()
			}
			s = &elfobj.Section{Name: name, Type: e.sec.Type, Flags: e.sec.Flags &^ elf.SHF_GROUP, Align: e.sec.Align, EntSize: e.sec.EntSize}
			if e.sec.Type == elf.SHT_NOBITS {
				s.Size = e.size()
			} else {
				s.Data = slices.Clone(e.content())
			}
			x.addSection(s)
		}
		sym := &elfobj.Symbol{Name: e.name(), Bind: e.sym.Bind, Type: e.sym.Type, Other: e.sym.Other, Section: s, Value: base + e.sym.Value - e.start, Size: e.sym.Size}
		if e.state == private && sym.Bind != elf.STB_LOCAL {
			// A global without an ftrace entry, included privately
			// because KPATCH_FORCE_UNSAFE says so: only the included
			// callers use the new copy, under a name of its own.
			sym.Name, sym.Bind, sym.Other = e.name()+".livefix", elf.STB_LOCAL, 0
		}
		x.out.Symbols = append(x.out.Symbols, sym)
		x.pieces[e] = sym
		ps = append(ps, piece{e, s, base})
	}
	relas := make(map[*elfobj.Section]*elfobj.Section)
	var relaOrder []*elfobj.Section
	for _, p := range ps {
		rs := relas[p.sec]
		if rs == nil {
			rs = &elfobj.Section{Name: ".rela" + p.sec.Name, Type: elf.SHT_RELA, Flags: elf.SHF_INFO_LINK, Align: 8, Target: p.sec}
			relas[p.sec] = rs
			relaOrder = append(relaOrder, rs)
		}
		for _, r := range p.e.relocs {
			nr := x.retarget(p.e.sec, r)
			nr.Offset = p.base + r.Offset - p.e.start
			rs.Relocs = append(rs.Relocs, nr)
		}
	}
	for _, rs := range relaOrder {
		if len(rs.Relocs) > 0 {
			x.out.Sections = append(x.out.Sections, rs)
		}
	}
	x.specials()
	x.drain()
	if x.err != nil {
		return nil, x.err
	}
	x.out.Sections = append(x.out.Sections, &elfobj.Section{Name: ".note.GNU-stack", Type: elf.SHT_PROGBITS, Align: 1, Data: []byte{}})
	if err := x.avoidClashes(res); err != nil {
		return nil, err
	}
	for _, e := range x.exts {
		res.Externals = append(res.Externals, e)
	}
	slices.SortFunc(res.Externals, func(a, b Extern) int { return strings.Compare(a.Name, b.Name) })
	return x.out, nil
}

func (x *extraction) addSection(s *elfobj.Section) {
	x.out.Sections = append(x.out.Sections, s)
	sym := &elfobj.Symbol{Bind: elf.STB_LOCAL, Type: elf.STT_SECTION, Section: s}
	x.out.Symbols = append(x.out.Symbols, sym)
	x.secSym[s] = sym
}

// retarget rewrites a relocation of the patched object for the output:
// to the included copy of its target, to a copied anonymous section, or
// to an undefined symbol named as the running target names it.
func (x *extraction) retarget(sec *elfobj.Section, r elfobj.Reloc) elfobj.Reloc {
	d := x.d
	t := d.patched.resolve(sec, r)
	nr := elfobj.Reloc{Type: r.Type, Addend: r.Addend}
	symVal := int64(0)
	if r.Sym != nil {
		symVal = int64(r.Sym.Value)
	}
	switch t.kind {
	case refNone:
	case refEntity:
		nr.Addend = symVal + r.Addend - int64(t.ent.start)
		if t.off == 0 && d.redirected(t.ent) && tableFor(sec.Name) == nil && !d.patched.isBranch(sec, r) {
			// The address of a replaced function, stored by the new
			// code (a work item, a timer, an ops table): it must be the
			// original's, which the live patch redirects to whichever
			// level is current, never this module's copy, which is freed
			// when a later level replaces this one.
			nr.Sym = x.external(t.ent.twin.name(), t.ent.twin.sym.Bind == elf.STB_LOCAL, true, t.ent.sym.Type)
			if u := d.patched.entityAt(sec, r.Offset); u != nil && !slices.Contains(d.addrOrig[t.ent], u.name()) {
				d.addrOrig[t.ent] = append(d.addrOrig[t.ent], u.name())
			}
			break
		}
		if sym, ok := x.pieces[t.ent]; ok {
			// The symbol's value already places the entity in its output
			// section (a descriptor's offset in the shared __dyndbg).
			nr.Sym = sym
			break
		}
		if t.ent.twin == nil {
			x.fail(fmt.Errorf("%s refers to %s, which is neither in the original nor included", sec.Name, t.ent.name()))
			return nr
		}
		nr.Sym = x.external(t.ent.twin.name(), t.ent.twin.sym.Bind == elf.STB_LOCAL, t.ent.isFunc, t.ent.sym.Type)
	case refExtern:
		nr.Sym = x.external(t.sym.Name, false, t.sym.Type == elf.STT_FUNC, t.sym.Type)
		if t.sym.Bind == elf.STB_WEAK {
			nr.Sym.Bind = elf.STB_WEAK
		}
	default:
		if t.sec.Flags&elf.SHF_WRITE != 0 && len(d.patched.entities[t.sec]) > 0 {
			x.fail(fmt.Errorf("%s refers to an anonymous part of writable section %s at %#x; the engine cannot tell which running object that is", sec.Name, t.sec.Name, t.off))
			return nr
		}
		c := x.copySection(t.sec)
		nr.Sym = x.secSym[c]
		nr.Addend = symVal + r.Addend
	}
	return nr
}

// copySection includes a whole anonymous section (string literals,
// constants, a jump table) once and returns its copy.
func (x *extraction) copySection(s *elfobj.Section) *elfobj.Section {
	if c, ok := x.anon[s]; ok {
		return c
	}
	c := &elfobj.Section{Name: s.Name, Type: s.Type, Flags: s.Flags &^ elf.SHF_GROUP, Align: s.Align, EntSize: s.EntSize, Size: s.Size, Data: slices.Clone(s.Data)}
	x.anon[s] = c
	x.addSection(c)
	x.queue = append(x.queue, s)
	return c
}

// drain copies the relocations of copied sections, which may copy more.
func (x *extraction) drain() {
	for len(x.queue) > 0 {
		s := x.queue[0]
		x.queue = x.queue[1:]
		c := x.anon[s]
		rs := &elfobj.Section{Name: ".rela" + c.Name, Type: elf.SHT_RELA, Flags: elf.SHF_INFO_LINK, Align: 8, Target: c}
		for _, r := range x.d.patched.relocs[s] {
			nr := x.retarget(s, r)
			nr.Offset = r.Offset
			rs.Relocs = append(rs.Relocs, nr)
		}
		if len(rs.Relocs) > 0 {
			x.out.Sections = append(x.out.Sections, rs)
		}
	}
}

// specials copies the entries of special sections that belong to
// included functions.
func (x *extraction) specials() {
	for _, sp := range x.d.specs[x.d.patched] {
		var keep []tableEntry
		for _, e := range sp.entries {
			if e.owner != nil && x.pieces[e.owner] != nil {
				keep = append(keep, e)
			}
		}
		if len(keep) == 0 {
			continue
		}
		c := &elfobj.Section{Name: sp.sec.Name, Type: sp.sec.Type, Flags: sp.sec.Flags &^ elf.SHF_GROUP, Align: sp.sec.Align, EntSize: sp.sec.EntSize, Data: []byte{}}
		rs := &elfobj.Section{Name: ".rela" + c.Name, Type: elf.SHT_RELA, Flags: elf.SHF_INFO_LINK, Align: 8, Target: c}
		var par *elfobj.Section
		if sp.par != nil {
			par = &elfobj.Section{Name: sp.par.Name, Type: sp.par.Type, Flags: sp.par.Flags &^ elf.SHF_GROUP, Align: sp.par.Align, EntSize: sp.par.EntSize, Data: []byte{}}
		}
		n := sp.t.entSize
		for i, e := range keep {
			start := uint64(e.index) * n
			c.Data = append(c.Data, sp.sec.Data[start:start+n]...)
			for _, r := range e.relocs {
				nr := x.retarget(sp.sec, r)
				nr.Offset = uint64(i)*n + (r.Offset - start)
				rs.Relocs = append(rs.Relocs, nr)
			}
			if par != nil {
				ps := uint64(e.index) * sp.t.parallelSize
				par.Data = append(par.Data, sp.par.Data[ps:ps+sp.t.parallelSize]...)
			}
		}
		x.addSection(c)
		x.out.Sections = append(x.out.Sections, rs)
		if par != nil {
			x.addSection(par)
		}
	}
}

func (x *extraction) external(name string, local, fn bool, typ elf.SymType) *elfobj.Symbol {
	if s, ok := x.ext[name]; ok {
		return s
	}
	if typ == elf.STT_SECTION {
		typ = elf.STT_NOTYPE
	}
	s := &elfobj.Symbol{Name: name, Bind: elf.STB_GLOBAL, Type: typ, Shndx: elf.SHN_UNDEF}
	x.out.Symbols = append(x.out.Symbols, s)
	x.ext[name] = s
	x.exts[name] = Extern{Name: name, Local: local, Func: fn}
	return s
}

func (x *extraction) fail(err error) {
	if x.err == nil {
		x.err = err
	}
}

// avoidClashes renames included local symbols whose name is also an
// external reference (a renumbered clone can take the running name of
// another), so that both stay distinct.
func (x *extraction) avoidClashes(res *Result) error {
	d := x.d
	for e, sym := range x.pieces {
		if _, clash := x.ext[sym.Name]; !clash {
			continue
		}
		if sym.Bind != elf.STB_LOCAL && !d.redirected(e) {
			return fmt.Errorf("included symbol %s has the name of an unchanged symbol it refers to", sym.Name)
		}
		old := sym.Name
		sym.Name = old + ".livefix"
		for i := range res.Funcs {
			if res.Funcs[i].Name == old && e.isFunc {
				res.Funcs[i].Name = sym.Name
			}
		}
	}
	return nil
}

// neededStatics returns the special statics (and dynamic debug
// descriptors) that the included entities and their special section
// entries refer to, in object order, and records them in d.statics.
func (d *differ) neededStatics(inc []*entity) []*entity {
	var work []*entity
	mark := func(sec *elfobj.Section, rs []elfobj.Reloc) {
		for _, r := range rs {
			if t := d.patched.resolve(sec, r); t.kind == refEntity && isSpecialStatic(t.ent) && !d.statics[t.ent] {
				d.statics[t.ent] = true
				work = append(work, t.ent)
			}
		}
	}
	for _, e := range inc {
		mark(e.sec, e.relocs)
		for _, oe := range d.owned[e] {
			mark(oe.sp.sec, oe.e.relocs)
		}
	}
	for len(work) > 0 {
		e := work[0]
		work = work[1:]
		mark(e.sec, e.relocs)
	}
	var out []*entity
	for _, e := range d.patched.data {
		if d.statics[e] {
			out = append(out, e)
		}
	}
	return out
}

// redirected reports a function the live patch redirects: a changed
// function of the patched object with a twin in the original.
func (d *differ) redirected(e *entity) bool {
	return e.obj == d.patched && e.isFunc && e.state == changed && !isFragment(e) && e.twin != nil
}
