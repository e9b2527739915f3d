package elfobj

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"os"
)

const (
	ehdrSize  = 64
	shdrSize  = 64
	symSize   = 24
	relaSize  = 24
	relSize   = 16
	maxRelocs = 1 << 26
	maxAlign  = 1 << 21
	maxNobits = 1 << 32
)

var le = binary.LittleEndian

// Open reads the relocatable object at path.
func Open(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	f, err := Read(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

type rawShdr struct {
	name, typ          uint32
	flags, addr, off   uint64
	size               uint64
	link, info         uint32
	addralign, entsize uint64
}

// Read parses a relocatable object. The returned File does not alias
// data.
func Read(data []byte) (*File, error) {
	if !bytes.HasPrefix(data, []byte(elf.ELFMAG)) {
		if len(data) < len(elf.ELFMAG) && bytes.HasPrefix([]byte(elf.ELFMAG), data) {
			return nil, formatErr("file is %d bytes, shorter than an ELF header (truncated?)", len(data))
		}
		return nil, formatErr("no ELF magic: not an object file")
	}
	if len(data) < ehdrSize {
		return nil, formatErr("file is %d bytes, shorter than an ELF header (truncated?)", len(data))
	}
	if elf.Class(data[elf.EI_CLASS]) != elf.ELFCLASS64 {
		return nil, formatErr("class %v, want ELFCLASS64", elf.Class(data[elf.EI_CLASS]))
	}
	if elf.Data(data[elf.EI_DATA]) != elf.ELFDATA2LSB {
		return nil, formatErr("data encoding %v, want little endian", elf.Data(data[elf.EI_DATA]))
	}
	if t := elf.Type(le.Uint16(data[16:])); t != elf.ET_REL {
		return nil, formatErr("type %v, want ET_REL (compile with -c)", t)
	}
	if m := elf.Machine(le.Uint16(data[18:])); m != elf.EM_X86_64 {
		return nil, formatErr("machine %v, want EM_X86_64", m)
	}
	f := &File{
		OSABI:      elf.OSABI(data[elf.EI_OSABI]),
		ABIVersion: data[elf.EI_ABIVERSION],
		Flags:      le.Uint32(data[48:]),
	}
	shoff := le.Uint64(data[40:])
	shentsize := le.Uint16(data[58:])
	shnum := uint64(le.Uint16(data[60:]))
	shstrndx := uint32(le.Uint16(data[62:]))
	if shnum == 0 && shoff == 0 {
		return nil, formatErr("no section header table")
	}
	if shentsize != shdrSize {
		return nil, formatErr("section header size %d, want %d", shentsize, shdrSize)
	}
	if shoff > uint64(len(data)) || uint64(len(data))-shoff < shdrSize {
		return nil, formatErr("section header table at %#x is outside the file (truncated?)", shoff)
	}
	if shnum == 0 {
		// Extended numbering: the count lives in section 0.
		shnum = le.Uint64(data[shoff+32:])
	}
	if shstrndx == uint32(elf.SHN_XINDEX) {
		shstrndx = le.Uint32(data[shoff+40:])
	}
	if shnum > (uint64(len(data))-shoff)/shdrSize {
		return nil, formatErr("%d section headers at %#x do not fit in %d bytes (truncated?)", shnum, shoff, len(data))
	}
	hdrs := make([]rawShdr, shnum)
	for i := range hdrs {
		b := data[shoff+uint64(i)*shdrSize:]
		hdrs[i] = rawShdr{
			name: le.Uint32(b[0:]), typ: le.Uint32(b[4:]), flags: le.Uint64(b[8:]),
			addr: le.Uint64(b[16:]), off: le.Uint64(b[24:]), size: le.Uint64(b[32:]),
			link: le.Uint32(b[40:]), info: le.Uint32(b[44:]),
			addralign: le.Uint64(b[48:]), entsize: le.Uint64(b[56:]),
		}
	}
	if shstrndx == 0 || uint64(shstrndx) >= shnum {
		return nil, formatErr("section name table index %d out of range", shstrndx)
	}
	f.Sections = make([]*Section, shnum)
	for i, h := range hdrs {
		if h.addralign > maxAlign || h.addralign&(h.addralign-1) != 0 {
			return nil, formatErr("section %d: alignment %#x is not a power of two up to %#x", i, h.addralign, maxAlign)
		}
		s := &Section{
			Type: elf.SectionType(h.typ), Flags: elf.SectionFlag(h.flags),
			Addr: h.addr, Align: h.addralign, EntSize: h.entsize, Index: i,
		}
		if s.Type == elf.SHT_NOBITS || i == 0 {
			if s.Type == elf.SHT_NOBITS && h.size > maxNobits {
				return nil, formatErr("section %d: %d bytes of uninitialised data is more than an object can hold", i, h.size)
			}
			s.Size = h.size
		} else {
			if h.off > uint64(len(data)) || h.size > uint64(len(data))-h.off {
				return nil, formatErr("section %d: contents [%#x, +%#x) are outside the file (truncated?)", i, h.off, h.size)
			}
			s.Data = bytes.Clone(data[h.off : h.off+h.size])
			if s.Data == nil {
				s.Data = []byte{}
			}
		}
		f.Sections[i] = s
	}
	shstr := f.Sections[shstrndx]
	if shstr.Type != elf.SHT_STRTAB {
		return nil, formatErr("section name table %d is %v, not SHT_STRTAB", shstrndx, shstr.Type)
	}
	for i, h := range hdrs {
		name, ok := cstring(shstr.Data, h.name)
		if !ok {
			return nil, formatErr("section %d: name offset %#x out of range", i, h.name)
		}
		f.Sections[i].Name = name
	}

	// The symbol table.
	var symtab *Section
	for i, s := range f.Sections {
		switch s.Type {
		case elf.SHT_SYMTAB:
			if symtab != nil {
				return nil, formatErr("more than one symbol table")
			}
			symtab = s
		case elf.SHT_SYMTAB_SHNDX:
			return nil, formatErr("section %d (%s): extended section indices are not supported", i, s.Name)
		case elf.SHT_DYNSYM, elf.SHT_DYNAMIC:
			return nil, formatErr("section %d (%s): %v in a relocatable object", i, s.Name, s.Type)
		}
	}
	if symtab != nil {
		h := hdrs[symtab.Index]
		if uint64(h.link) >= shnum || f.Sections[h.link].Type != elf.SHT_STRTAB {
			return nil, formatErr("symbol table links to section %d, not a string table", h.link)
		}
		if h.link == shstrndx {
			return nil, formatErr("symbol names share the section name table; not supported")
		}
		strtab := f.Sections[h.link]
		symtab.Link = strtab
		if len(symtab.Data)%symSize != 0 {
			return nil, formatErr("symbol table size %d is not a multiple of %d", len(symtab.Data), symSize)
		}
		n := len(symtab.Data) / symSize
		f.Symbols = make([]*Symbol, n)
		for i := 0; i < n; i++ {
			b := symtab.Data[i*symSize:]
			name, ok := cstring(strtab.Data, le.Uint32(b[0:]))
			if !ok {
				return nil, formatErr("symbol %d: name offset out of range", i)
			}
			info := b[4]
			sym := &Symbol{
				Name: name, Bind: elf.ST_BIND(info), Type: elf.ST_TYPE(info), Other: b[5],
				Value: le.Uint64(b[8:]), Size: le.Uint64(b[16:]), Index: i,
			}
			shndx := elf.SectionIndex(le.Uint16(b[6:]))
			switch {
			case shndx == elf.SHN_UNDEF || shndx >= elf.SHN_LORESERVE:
				if shndx == elf.SHN_XINDEX {
					return nil, formatErr("symbol %d (%s): extended section index not supported", i, name)
				}
				sym.Shndx = shndx
			case uint64(shndx) < shnum:
				sym.Section = f.Sections[shndx]
			default:
				return nil, formatErr("symbol %d (%s): section index %d out of range", i, name, shndx)
			}
			f.Symbols[i] = sym
		}
	}
	if len(f.Symbols) == 0 {
		f.Symbols = []*Symbol{{}}
	}

	// Links, relocations, groups.
	for i, s := range f.Sections {
		h := hdrs[i]
		switch s.Type {
		case elf.SHT_SYMTAB, elf.SHT_STRTAB, elf.SHT_NULL:
			// Regenerated by Write.
		case elf.SHT_RELA, elf.SHT_REL:
			if err := readRelocs(f, s, h, symtab); err != nil {
				return nil, err
			}
		case elf.SHT_GROUP:
			if err := readGroup(f, s, h, symtab); err != nil {
				return nil, err
			}
		default:
			s.Info = h.info
			if h.link != 0 {
				if uint64(h.link) >= shnum {
					return nil, formatErr("section %d (%s): link %d out of range", i, s.Name, h.link)
				}
				s.Link = f.Sections[h.link]
			}
		}
	}
	return f, nil
}

func readRelocs(f *File, s *Section, h rawShdr, symtab *Section) error {
	if symtab == nil || h.link != uint32(symtab.Index) {
		return formatErr("relocation section %s does not link to the symbol table", s.Name)
	}
	if h.info == 0 || uint64(h.info) >= uint64(len(f.Sections)) {
		return formatErr("relocation section %s: target section %d out of range", s.Name, h.info)
	}
	s.Target = f.Sections[h.info]
	ent := relaSize
	if s.Type == elf.SHT_REL {
		ent = relSize
	}
	if len(s.Data)%ent != 0 {
		return formatErr("relocation section %s: size %d is not a multiple of %d", s.Name, len(s.Data), ent)
	}
	n := len(s.Data) / ent
	if n > maxRelocs {
		return formatErr("relocation section %s: %d relocations is too many", s.Name, n)
	}
	s.Relocs = make([]Reloc, n)
	for j := range s.Relocs {
		b := s.Data[j*ent:]
		info := le.Uint64(b[8:])
		symi := info >> 32
		if symi >= uint64(len(f.Symbols)) {
			return formatErr("relocation section %s: entry %d names symbol %d, out of range", s.Name, j, symi)
		}
		r := Reloc{Offset: le.Uint64(b[0:]), Type: elf.R_X86_64(uint32(info))}
		if symi != 0 {
			r.Sym = f.Symbols[symi]
		}
		if ent == relaSize {
			r.Addend = int64(le.Uint64(b[16:]))
		}
		s.Relocs[j] = r
	}
	s.Data = nil
	return nil
}

func readGroup(f *File, s *Section, h rawShdr, symtab *Section) error {
	if symtab == nil || h.link != uint32(symtab.Index) || uint64(h.info) >= uint64(len(f.Symbols)) {
		return formatErr("group section %s: bad signature symbol", s.Name)
	}
	if len(s.Data) < 4 || len(s.Data)%4 != 0 {
		return formatErr("group section %s: size %d is malformed", s.Name, len(s.Data))
	}
	s.Signature = f.Symbols[h.info]
	s.GroupFlags = le.Uint32(s.Data)
	for off := 4; off < len(s.Data); off += 4 {
		idx := le.Uint32(s.Data[off:])
		if idx == 0 || uint64(idx) >= uint64(len(f.Sections)) {
			return formatErr("group section %s: member %d out of range", s.Name, idx)
		}
		s.Members = append(s.Members, f.Sections[idx])
	}
	s.Data = nil
	return nil
}

func cstring(tab []byte, off uint32) (string, bool) {
	if uint64(off) >= uint64(len(tab)) {
		return "", off == 0
	}
	end := bytes.IndexByte(tab[off:], 0)
	if end < 0 {
		return "", false
	}
	return string(tab[off : off+uint32(end)]), true
}
