package objdiff

import (
	"bytes"
	"debug/elf"
	"slices"
	"strings"

	"golang.org/x/arch/x86/x86asm"

	"github.com/livefix/livefix/elfobj"
)

// entity is a function or a data object: a named symbol's byte range in
// its section, with the relocations that fall inside it.
type entity struct {
	sym        *elfobj.Symbol
	sec        *elfobj.Section
	start, end uint64
	isFunc     bool
	relocs     []elfobj.Reloc // offsets relative to the section, sorted
	obj        *object

	twin  *entity // the correlated entity of the other object
	state state
	// why explains state for changed functions (for -v output).
	why string
}

func (e *entity) name() string { return e.sym.Name }

// content returns the entity's bytes; nil for SHT_NOBITS.
func (e *entity) content() []byte {
	if e.sec.Type == elf.SHT_NOBITS {
		return nil
	}
	return e.sec.Data[e.start:e.end]
}

// sameContent reports whether two entities hold the same bytes, an
// uninitialised one counting as zeros, without materialising zeros.
func sameContent(a, b *entity) bool {
	if a.size() != b.size() {
		return false
	}
	ca, cb := a.content(), b.content()
	switch {
	case ca == nil && cb == nil:
		return true
	case ca == nil:
		return allZero(cb)
	case cb == nil:
		return allZero(ca)
	}
	return bytes.Equal(ca, cb)
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func (e *entity) size() uint64 { return e.end - e.start }

// wholeSection reports whether the entity covers its whole section.
func (e *entity) wholeSection() bool {
	return e.start == 0 && e.end == e.sec.Len() && len(e.obj.entities[e.sec]) == 1
}

type state int

const (
	unchanged state = iota
	changed
	lineOnly
	added
	// private: changed, without an ftrace entry; included under its own
	// name and reached through its (changed) callers.
	private
)

// object is one analysed relocatable object.
type object struct {
	f        *elfobj.File
	relocs   map[*elfobj.Section][]elfobj.Reloc
	entities map[*elfobj.Section][]*entity // sorted by start
	funcs    []*entity
	data     []*entity
	// symEnt maps each function or object symbol, aliases included, to
	// its entity.
	symEnt map[*elfobj.Symbol]*entity
	// insns caches the decoded instruction boundaries of code sections.
	insns map[*elfobj.Section][]insn
	// fentry reports whether the object was compiled with -mfentry.
	fentry bool
}

type insn struct{ start, end uint64 }

// isCode reports whether sec holds instructions.
func isCode(sec *elfobj.Section) bool { return sec.Flags&elf.SHF_EXECINSTR != 0 }

func analyse(f *elfobj.File) *object {
	o := &object{
		f:        f,
		relocs:   make(map[*elfobj.Section][]elfobj.Reloc),
		entities: make(map[*elfobj.Section][]*entity),
		insns:    make(map[*elfobj.Section][]insn),
		symEnt:   make(map[*elfobj.Symbol]*entity),
	}
	for _, s := range f.Sections {
		if s.IsRela() && s.Target != nil && !ignoredSection(s.Target) {
			o.relocs[s.Target] = append(o.relocs[s.Target], s.Relocs...)
		}
	}
	for sec, rs := range o.relocs {
		slices.SortStableFunc(rs, func(a, b elfobj.Reloc) int { return cmpU64(a.Offset, b.Offset) })
		o.relocs[sec] = rs
	}
	for _, sym := range f.Symbols {
		if sym.Name == "__fentry__" && sym.Section == nil {
			o.fentry = true
		}
		if sym.Section == nil || sym.Name == "" || ignoredSection(sym.Section) {
			continue
		}
		switch sym.Type {
		case elf.STT_FUNC, elf.STT_GNU_IFUNC, elf.STT_OBJECT, elf.STT_TLS:
		default:
			continue
		}
		if sym.Value > sym.Section.Len() {
			continue
		}
		e := &entity{sym: sym, sec: sym.Section, start: sym.Value, obj: o,
			isFunc: sym.Type == elf.STT_FUNC || sym.Type == elf.STT_GNU_IFUNC}
		o.entities[sym.Section] = append(o.entities[sym.Section], e)
	}
	for sec, all := range o.entities {
		// Globals first among symbols at one place, so that an alias
		// (foo.localalias) folds into the entity of the real name.
		slices.SortStableFunc(all, func(a, b *entity) int {
			if c := cmpU64(a.start, b.start); c != 0 {
				return c
			}
			return cmpBind(a.sym.Bind, b.sym.Bind)
		})
		var es []*entity
		for _, e := range all {
			if n := len(es); n > 0 && es[n-1].start == e.start && es[n-1].sym.Size == e.sym.Size && es[n-1].isFunc == e.isFunc {
				o.symEnt[e.sym] = es[n-1]
				continue
			}
			es = append(es, e)
			o.symEnt[e.sym] = e
		}
		o.entities[sec] = es
		for i, e := range es {
			end := sec.Len()
			if e.sym.Size > 0 && e.start+e.sym.Size <= end {
				end = e.start + e.sym.Size
			} else if i+1 < len(es) && es[i+1].start > e.start {
				end = es[i+1].start
			}
			e.end = end
			rs := o.relocs[sec]
			lo, _ := slices.BinarySearchFunc(rs, e.start, func(r elfobj.Reloc, v uint64) int { return cmpU64(r.Offset, v) })
			hi, _ := slices.BinarySearchFunc(rs, e.end, func(r elfobj.Reloc, v uint64) int { return cmpU64(r.Offset, v) })
			e.relocs = rs[lo:hi]
			if e.isFunc {
				o.funcs = append(o.funcs, e)
			} else {
				o.data = append(o.data, e)
			}
		}
	}
	byPos := func(a, b *entity) int {
		if c := cmpU64(uint64(a.sec.Index), uint64(b.sec.Index)); c != 0 {
			return c
		}
		return cmpU64(a.start, b.start)
	}
	slices.SortFunc(o.funcs, byPos)
	slices.SortFunc(o.data, byPos)
	return o
}

// cmpBind orders global and weak symbols before local ones.
func cmpBind(a, b elf.SymBind) int {
	rank := func(x elf.SymBind) int {
		if x == elf.STB_LOCAL {
			return 1
		}
		return 0
	}
	return rank(a) - rank(b)
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// entityAt returns the entity of sec that contains off, or nil.
func (o *object) entityAt(sec *elfobj.Section, off uint64) *entity {
	for _, e := range o.entities[sec] {
		if off >= e.start && off < e.end || off == e.start {
			return e
		}
	}
	return nil
}

// ignoredSection reports sections that carry no code or data that a live
// patch could change: debug information, notes, unwind tables that are
// regenerated, and annotations for build tools.
func ignoredSection(s *elfobj.Section) bool {
	n := s.Name
	switch {
	case n == "", n == ".comment", n == ".eh_frame", n == ".note.GNU-stack",
		strings.HasPrefix(n, ".debug_"), strings.HasPrefix(n, ".note."),
		strings.HasPrefix(n, ".discard."), strings.HasPrefix(n, ".BTF"),
		strings.HasPrefix(n, ".llvm"), strings.HasPrefix(n, ".gnu.lto"),
		strings.HasPrefix(n, ".rela."), strings.HasPrefix(n, ".rel."):
		return true
	}
	switch s.Type {
	case elf.SHT_SYMTAB, elf.SHT_STRTAB, elf.SHT_GROUP, elf.SHT_RELA, elf.SHT_REL, elf.SHT_NULL:
		return true
	}
	return false
}

// pcRelative reports relocation types whose value is relative to the
// place being relocated.
func pcRelative(t elf.R_X86_64) bool {
	switch t {
	case elf.R_X86_64_PC32, elf.R_X86_64_PLT32, elf.R_X86_64_GOTPCREL,
		elf.R_X86_64_GOTPCRELX, elf.R_X86_64_REX_GOTPCRELX, elf.R_X86_64_PC64,
		elf.R_X86_64_GOTPC32, elf.R_X86_64_PC8, elf.R_X86_64_PC16:
		return true
	}
	return false
}

// decode returns the instruction boundaries of a code section, decoding
// each function from its start and resynchronising on undecodable bytes.
func (o *object) decode(sec *elfobj.Section) []insn {
	if ins, ok := o.insns[sec]; ok {
		return ins
	}
	var ins []insn
	data := sec.Data
	off := uint64(0)
	for off < uint64(len(data)) {
		n := 1
		if in, err := x86asm.Decode(data[off:], 64); err == nil && in.Len > 0 {
			n = in.Len
		}
		ins = append(ins, insn{off, off + uint64(n)})
		off += uint64(n)
	}
	o.insns[sec] = ins
	return ins
}

// insnAt returns the decoded instruction containing off.
func (o *object) insnAt(sec *elfobj.Section, off uint64) (insn, bool) {
	ins := o.decode(sec)
	i, found := slices.BinarySearchFunc(ins, off, func(in insn, v uint64) int { return cmpU64(in.start, v) })
	if found {
		return ins[i], true
	}
	if i > 0 && off < ins[i-1].end {
		return ins[i-1], true
	}
	return insn{}, false
}

// bias is what the CPU adds to a PC-relative relocation's value to reach
// the target: the distance from the relocated field to the end of its
// instruction. Zero for absolute relocations and for data.
func (o *object) bias(sec *elfobj.Section, r elfobj.Reloc) int64 {
	if !pcRelative(r.Type) || !isCode(sec) {
		return 0
	}
	if in, ok := o.insnAt(sec, r.Offset); ok && in.end > r.Offset {
		return int64(in.end - r.Offset)
	}
	return 4
}

type refKind int

const (
	refNone    refKind = iota
	refEntity          // a function or data object of this object
	refExtern          // an undefined symbol
	refLabel           // a named symbol that is neither function nor object
	refString          // a string literal, by content
	refConst           // a mergeable constant, by content
	refAnon            // an anonymous section, by content
	refSection         // any other place, by section name and offset
)

// ref is what a relocation points at.
type ref struct {
	kind refKind
	ent  *entity
	sym  *elfobj.Symbol
	sec  *elfobj.Section
	// off is the effective offset within the entity, section or symbol.
	off     int64
	content []byte
}

// resolve finds what relocation r in section sec points at.
func (o *object) resolve(sec *elfobj.Section, r elfobj.Reloc) ref {
	sym := r.Sym
	if sym == nil {
		return ref{kind: refNone, off: r.Addend}
	}
	eff := r.Addend + o.bias(sec, r)
	if sym.Section == nil {
		return ref{kind: refExtern, sym: sym, off: eff}
	}
	tsec := sym.Section
	at := int64(sym.Value) + eff
	if e, ok := o.symEnt[sym]; ok {
		return ref{kind: refEntity, ent: e, sec: tsec, off: at - int64(e.start)}
	}
	if at >= 0 {
		if e := o.entityAt(tsec, uint64(at)); e != nil {
			return ref{kind: refEntity, ent: e, sec: tsec, off: at - int64(e.start)}
		}
		// One past the end of an array (a loop bound).
		for _, e := range o.entities[tsec] {
			if e.end == uint64(at) && e.end > e.start {
				return ref{kind: refEntity, ent: e, sec: tsec, off: at - int64(e.start)}
			}
		}
	}
	// A global label is a name other objects can use; a local one
	// (.LC0 in a mergeable section) is only a place, compared by content.
	if sym.Type != elf.STT_SECTION && sym.Name != "" && sym.Bind != elf.STB_LOCAL {
		return ref{kind: refLabel, sym: sym, sec: tsec, off: eff}
	}
	if len(o.entities[tsec]) > 0 || ignoredSection(tsec) {
		return ref{kind: refSection, sec: tsec, off: at}
	}
	switch {
	case tsec.Flags&elf.SHF_MERGE != 0 && tsec.Flags&elf.SHF_STRINGS != 0:
		if at >= 0 && at < int64(len(tsec.Data)) {
			s := tsec.Data[at:]
			if i := bytes.IndexByte(s, 0); i >= 0 {
				s = s[:i]
			}
			return ref{kind: refString, sec: tsec, off: at, content: s}
		}
	case tsec.Flags&elf.SHF_MERGE != 0 && tsec.EntSize > 0:
		if at >= 0 && uint64(at)+tsec.EntSize <= uint64(len(tsec.Data)) {
			return ref{kind: refConst, sec: tsec, off: at, content: tsec.Data[at : uint64(at)+tsec.EntSize]}
		}
	}
	return ref{kind: refAnon, sec: tsec, off: at}
}
