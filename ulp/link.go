package ulp

import (
	"debug/elf"
	"encoding/binary"
	"fmt"
	"math"
	"sort"

	"github.com/livefix/livefix/elfobj"
)

const pageSize = 4096

// refKind says where a symbol used by the patch lives.
type refKind int

const (
	refPatch  refKind = iota // defined in the patch itself
	refTarget                // in the target object (always within rel32 reach)
	refFar                   // in another object, possibly out of reach
	refWeak                  // unresolved weak reference: address 0
)

// ref is a resolved symbol.
type ref struct {
	name string
	kind refKind
	fn   bool
	// refPatch: section and offset inside the patch.
	sec *elfobj.Section
	off uint64
	// refTarget, refFar: runtime address.
	addr uint64
	// TLS symbols of the target (kind refTarget, tls true): offset in the
	// module's TLS block, and what is known about the module.
	tls     bool
	tlsOff  uint64
	tpoff   int64  // exe: offset from the thread pointer
	tpKnown bool   // tpoff is valid (main executable)
	tpSlot  uint64 // lib: runtime address of its own TPOFF64 slot, or 0
	modID   uint64 // TLS module id, 0 if unknown
}

type slotKind int

const (
	slotAddr  slotKind = iota // 8 bytes: the symbol's address
	slotTPOff                 // 8 bytes: TLS offset from the thread pointer
	slotGD                    // 16 bytes: module id, offset (tls_index)
	slotLD                    // 16 bytes: module id, 0
)

type slotKey struct {
	r    *ref
	kind slotKind
}

// placed is a section of the patch with its offset in the region.
type placed struct {
	sec *elfobj.Section
	off uint64
}

// plan is a patch resolved against one process, ready to be linked at
// any base address within reach of the target.
type plan struct {
	units []*unitObj
	secs  map[*elfobj.Section]uint64 // section -> offset in region
	order []placed
	stubs map[*ref]uint64    // far function -> stub offset
	slots map[slotKey]uint64 // GOT-style slot -> offset
	refs  map[*elfobj.Symbol]*ref
	// Region layout: [0,textEnd) code and stubs, [roOff,rwOff) read-only
	// data and slots (both mapped r-x), [rwOff,size) rw- data.
	textEnd, roOff, rwOff, size uint64
	// addrTaken: something other than a direct call or jump refers to
	// the patch's code (a function pointer in data, a lea): the program
	// may keep such a pointer, so the code is never unmapped.
	addrTaken bool
	funcs     []planFunc
}

type unitObj struct {
	u *Unit
	f *elfobj.File
}

// planFunc is one redirection.
type planFunc struct {
	name     string // in the patch
	origName string
	old      uint64 // runtime address of the running function
	oldSize  uint64
	// cold is the function's .cold part (runtime address, size), which
	// gcc puts apart from it; a thread there is in the function too.
	cold, coldSize uint64
	newSym         *elfobj.Symbol
}

func alignTo(v, a uint64) uint64 {
	if a <= 1 {
		return v
	}
	return (v + a - 1) / a * a
}

// layout assigns offsets to sections, stubs and slots. refs must hold a
// resolution for every symbol a relocation uses.
func (pl *plan) layout() error {
	pl.secs = map[*elfobj.Section]uint64{}
	pl.stubs = map[*ref]uint64{}
	pl.slots = map[slotKey]uint64{}
	var text, ro, rw []*elfobj.Section
	for _, uo := range pl.units {
		for _, s := range uo.f.Sections {
			if s.Flags&elf.SHF_ALLOC == 0 || s.IsRela() {
				continue
			}
			if s.Flags&elf.SHF_TLS != 0 {
				return fmt.Errorf("%s: section %s holds new thread-local data, which a live patch cannot add to running threads", uo.u.Object, s.Name)
			}
			switch {
			case s.Flags&elf.SHF_EXECINSTR != 0:
				text = append(text, s)
			case s.Flags&elf.SHF_WRITE != 0:
				rw = append(rw, s)
			default:
				ro = append(ro, s)
			}
		}
	}
	// Stubs and slots needed by the relocations.
	var stubOrder []*ref
	var slotOrder []slotKey
	needSlot := func(k slotKey) {
		if _, ok := pl.slots[k]; !ok {
			pl.slots[k] = 0
			slotOrder = append(slotOrder, k)
		}
	}
	for _, uo := range pl.units {
		for _, rs := range uo.f.Sections {
			if !rs.IsRela() || rs.Target == nil || rs.Target.Flags&elf.SHF_ALLOC == 0 {
				continue
			}
			for _, r := range rs.Relocs {
				if r.Sym == nil {
					continue
				}
				rf := pl.refs[r.Sym]
				if rf == nil {
					return fmt.Errorf("%s: relocation against unresolved symbol %s", uo.u.Object, r.Sym.DisplayName())
				}
				switch r.Type {
				case elf.R_X86_64_PLT32, elf.R_X86_64_PC32:
					if rf.kind == refFar && rf.fn {
						if _, ok := pl.stubs[rf]; !ok {
							pl.stubs[rf] = 0
							stubOrder = append(stubOrder, rf)
						}
					}
				case elf.R_X86_64_GOTPCREL, elf.R_X86_64_GOTPCRELX, elf.R_X86_64_REX_GOTPCRELX:
					needSlot(slotKey{rf, slotAddr})
				case elf.R_X86_64_GOTTPOFF:
					if rf.tpSlot == 0 {
						needSlot(slotKey{rf, slotTPOff})
					}
				case elf.R_X86_64_TLSGD:
					needSlot(slotKey{rf, slotGD})
				case elf.R_X86_64_TLSLD:
					needSlot(slotKey{rf, slotLD})
				}
			}
		}
	}
	for _, rf := range stubOrder {
		needSlot(slotKey{rf, slotAddr})
	}
	off := uint64(0)
	place := func(ss []*elfobj.Section) {
		for _, s := range ss {
			off = alignTo(off, s.Align)
			pl.secs[s] = off
			pl.order = append(pl.order, placed{s, off})
			off += s.Len()
		}
	}
	place(text)
	off = alignTo(off, 8)
	for _, rf := range stubOrder {
		pl.stubs[rf] = off
		off += 8
	}
	pl.textEnd = off
	off = alignTo(off, pageSize)
	pl.roOff = off
	place(ro)
	off = alignTo(off, 16)
	for _, k := range slotOrder {
		pl.slots[k] = off
		if k.kind == slotGD || k.kind == slotLD {
			off += 16
		} else {
			off += 8
		}
	}
	off = alignTo(off, pageSize)
	pl.rwOff = off
	place(rw)
	pl.size = alignTo(off, pageSize)
	if pl.size == 0 {
		pl.size = pageSize
	}
	return nil
}

// symAddr returns the runtime address of a resolved symbol when the
// region is at base.
func (pl *plan) symAddr(rf *ref, base uint64) uint64 {
	switch rf.kind {
	case refPatch:
		return base + pl.secs[rf.sec] + rf.off
	case refWeak:
		return 0
	}
	return rf.addr
}

// link returns the region's bytes for base.
func (pl *plan) link(base uint64) ([]byte, error) {
	img := make([]byte, pl.size)
	for _, p := range pl.order {
		if p.sec.Type != elf.SHT_NOBITS {
			copy(img[p.off:], p.sec.Data)
		}
	}
	for rf, off := range pl.stubs {
		// jmp *slot(%rip); int3; int3
		slot := pl.slots[slotKey{rf, slotAddr}]
		img[off], img[off+1] = 0xff, 0x25
		binary.LittleEndian.PutUint32(img[off+2:], uint32(int32(int64(slot)-int64(off+6))))
		img[off+6], img[off+7] = 0xcc, 0xcc
	}
	for k, off := range pl.slots {
		switch k.kind {
		case slotAddr:
			binary.LittleEndian.PutUint64(img[off:], pl.symAddr(k.r, base))
		case slotTPOff:
			binary.LittleEndian.PutUint64(img[off:], uint64(k.r.tpoff))
		case slotGD:
			binary.LittleEndian.PutUint64(img[off:], k.r.modID)
			binary.LittleEndian.PutUint64(img[off+8:], k.r.tlsOff)
		case slotLD:
			binary.LittleEndian.PutUint64(img[off:], k.r.modID)
		}
	}
	for _, uo := range pl.units {
		for _, rs := range uo.f.Sections {
			if !rs.IsRela() || rs.Target == nil || rs.Target.Flags&elf.SHF_ALLOC == 0 {
				continue
			}
			soff, ok := pl.secs[rs.Target]
			if !ok {
				continue
			}
			for _, r := range rs.Relocs {
				if err := pl.apply(img, base, soff, rs.Target, r); err != nil {
					return nil, fmt.Errorf("%s: %s+%#x: %w", uo.u.Object, rs.Target.Name, r.Offset, err)
				}
			}
		}
	}
	return img, nil
}

func (pl *plan) apply(img []byte, base, soff uint64, sec *elfobj.Section, r elfobj.Reloc) error {
	if r.Type == elf.R_X86_64_NONE {
		return nil
	}
	if sec.Type == elf.SHT_NOBITS {
		return fmt.Errorf("relocation in a bss section")
	}
	var rf *ref
	if r.Sym != nil {
		rf = pl.refs[r.Sym]
	}
	if rf == nil {
		return fmt.Errorf("relocation %v without a resolved symbol", r.Type)
	}
	at := soff + r.Offset
	P := base + at
	if rf.kind == refPatch && rf.sec != nil && rf.sec.Flags&elf.SHF_EXECINSTR != 0 && !directBranch(img, sec, at, r.Type) {
		pl.addrTaken = true
	}
	S := pl.symAddr(rf, base)
	A := r.Addend
	name := rf.name
	put32 := func(v int64, signed bool) error {
		if at+4 > uint64(len(img)) {
			return fmt.Errorf("relocation past the end of its section")
		}
		if signed && (v < math.MinInt32 || v > math.MaxInt32) {
			return fmt.Errorf("%v to %s: displacement %#x does not fit in 32 bits", r.Type, name, v)
		}
		if !signed && (v < 0 || v > math.MaxUint32) {
			return fmt.Errorf("%v to %s: address %#x does not fit in 32 bits (non-PIC code needs the patch below 4 GiB)", r.Type, name, v)
		}
		binary.LittleEndian.PutUint32(img[at:], uint32(v))
		return nil
	}
	put64 := func(v uint64) error {
		if at+8 > uint64(len(img)) {
			return fmt.Errorf("relocation past the end of its section")
		}
		binary.LittleEndian.PutUint64(img[at:], v)
		return nil
	}
	slot := func(k slotKind) uint64 { return base + pl.slots[slotKey{rf, k}] }
	if rf.tls != isTLSReloc(r.Type) && rf.kind != refWeak {
		return fmt.Errorf("%v used with %s, which is %sthread-local", r.Type, name, map[bool]string{true: "", false: "not "}[rf.tls])
	}
	switch r.Type {
	case elf.R_X86_64_64:
		return put64(S + uint64(A))
	case elf.R_X86_64_PC64:
		return put64(S + uint64(A) - P)
	case elf.R_X86_64_PC32, elf.R_X86_64_PLT32:
		if off, ok := pl.stubs[rf]; ok {
			S = base + off
		}
		if rf.kind == refFar && !rf.fn {
			v := int64(S) + A - int64(P)
			if v < math.MinInt32 || v > math.MaxInt32 {
				return fmt.Errorf("%s is data in another object, out of reach of a 32-bit displacement; compile with -fPIC so it is accessed through the GOT", name)
			}
		}
		return put32(int64(S)+A-int64(P), true)
	case elf.R_X86_64_32:
		return put32(int64(S)+A, false)
	case elf.R_X86_64_32S:
		return put32(int64(S)+A, true)
	case elf.R_X86_64_GOTPCREL, elf.R_X86_64_GOTPCRELX, elf.R_X86_64_REX_GOTPCRELX:
		return put32(int64(slot(slotAddr))+A-int64(P), true)
	case elf.R_X86_64_GOTTPOFF:
		g := rf.tpSlot
		if g == 0 {
			if !rf.tpKnown {
				return fmt.Errorf("thread-local %s: its offset from the thread pointer is unknown (the library has no initial-exec GOT entry for it)", name)
			}
			g = slot(slotTPOff)
		}
		return put32(int64(g)+A-int64(P), true)
	case elf.R_X86_64_TPOFF32:
		if !rf.tpKnown {
			return fmt.Errorf("thread-local %s: local-exec access outside the main executable", name)
		}
		return put32(rf.tpoff+A, true)
	case elf.R_X86_64_TLSGD, elf.R_X86_64_TLSLD:
		if rf.modID == 0 {
			return fmt.Errorf("thread-local %s: the TLS module id of its object is unknown (no DTPMOD64 entry to copy it from)", name)
		}
		k := slotGD
		if r.Type == elf.R_X86_64_TLSLD {
			k = slotLD
		}
		return put32(int64(slot(k))+A-int64(P), true)
	case elf.R_X86_64_DTPOFF32:
		return put32(int64(rf.tlsOff)+A, true)
	case elf.R_X86_64_DTPOFF64:
		return put64(rf.tlsOff + uint64(A))
	}
	return fmt.Errorf("unsupported relocation type %v (against %s)", r.Type, name)
}

// directBranch reports whether the relocated field at img[at] is the
// displacement of a call, jmp or jcc in code (not an address taken).
func directBranch(img []byte, sec *elfobj.Section, at uint64, t elf.R_X86_64) bool {
	if sec.Flags&elf.SHF_EXECINSTR == 0 || (t != elf.R_X86_64_PC32 && t != elf.R_X86_64_PLT32) || at < 2 {
		return false
	}
	op := img[at-1]
	return op == 0xe8 || op == 0xe9 || (img[at-2] == 0x0f && op&0xf0 == 0x80)
}

func isTLSReloc(t elf.R_X86_64) bool {
	switch t {
	case elf.R_X86_64_GOTTPOFF, elf.R_X86_64_TPOFF32, elf.R_X86_64_TLSGD, elf.R_X86_64_TLSLD,
		elf.R_X86_64_DTPOFF32, elf.R_X86_64_DTPOFF64, elf.R_X86_64_TPOFF64:
		return true
	}
	return false
}

// newAddr returns where a redirected function's replacement is.
func (pl *plan) newAddr(f planFunc, base uint64) uint64 {
	return pl.symAddr(pl.refs[f.newSym], base)
}

func sortFuncs(fs []planFunc) {
	sort.Slice(fs, func(i, j int) bool { return fs[i].old < fs[j].old })
}
