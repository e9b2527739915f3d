package elfobj

import (
	"debug/elf"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// WriteFile writes the object to path atomically: a temporary file in
// the same directory is renamed into place only once it is complete.
func (f *File) WriteFile(path string) error {
	data, err := f.Write()
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".elfobj-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// buildStrtab lays out a string table holding every name, sharing tails
// (".text.f" inside ".rela.text.f") as assemblers do, and returns it with
// each name's offset.
func buildStrtab(names []string) ([]byte, map[string]uint32) {
	uniq := slices.Compact(slices.Sorted(slices.Values(names)))
	// Longest-first among strings sorted by their reversal puts each
	// string right after the strings it may be a tail of.
	rev := func(s string) string {
		b := []byte(s)
		slices.Reverse(b)
		return string(b)
	}
	slices.SortFunc(uniq, func(a, b string) int { return strings.Compare(rev(b), rev(a)) })
	buf := []byte{0}
	off := map[string]uint32{"": 0}
	prev := ""
	var prevOff uint32
	for _, n := range uniq {
		if n == "" {
			continue
		}
		if strings.HasSuffix(prev, n) {
			off[n] = prevOff + uint32(len(prev)-len(n))
			continue
		}
		prev, prevOff = n, uint32(len(buf))
		off[n] = prevOff
		buf = append(buf, n...)
		buf = append(buf, 0)
	}
	return buf, off
}

// Write lays the object out and returns its bytes. It regenerates the
// symbol table, the string tables, relocation and group contents, and
// every index and link, and updates the Index fields of sections and
// symbols. It reports an error when a reference points outside the file
// (a relocation naming a symbol that is not in Symbols, for instance).
func (f *File) Write() ([]byte, error) {
	if len(f.Sections) == 0 || f.Sections[0].Type != elf.SHT_NULL {
		f.Sections = append([]*Section{{}}, f.Sections...)
	}
	if len(f.Symbols) == 0 || f.Symbols[0].Name != "" || f.Symbols[0].Section != nil || f.Symbols[0].Type != elf.STT_NOTYPE {
		f.Symbols = append([]*Symbol{{}}, f.Symbols...)
	}
	symtab, strtab, shstrtab := f.ensureTables()

	// Section indices.
	secIndex := make(map[*Section]int, len(f.Sections))
	for i, s := range f.Sections {
		if _, dup := secIndex[s]; dup {
			return nil, fmt.Errorf("write object: section %s appears twice", s.Name)
		}
		s.Index = i
		secIndex[s] = i
	}

	// Symbol order: null, locals, then the rest, each group stable.
	syms := make([]*Symbol, 0, len(f.Symbols))
	syms = append(syms, f.Symbols[0])
	for _, s := range f.Symbols[1:] {
		if s.Bind == elf.STB_LOCAL {
			syms = append(syms, s)
		}
	}
	firstGlobal := len(syms)
	for _, s := range f.Symbols[1:] {
		if s.Bind != elf.STB_LOCAL {
			syms = append(syms, s)
		}
	}
	f.Symbols = syms
	symIndex := make(map[*Symbol]int, len(syms))
	for i, s := range syms {
		if _, dup := symIndex[s]; dup {
			return nil, fmt.Errorf("write object: symbol %s appears twice", s.Name)
		}
		s.Index = i
		symIndex[s] = i
	}

	// Symbol table and names.
	symNames := make([]string, len(syms))
	for i, s := range syms {
		symNames[i] = s.Name
	}
	strData, strOff := buildStrtab(symNames)
	symData := make([]byte, len(syms)*symSize)
	for i, s := range syms {
		b := symData[i*symSize:]
		le.PutUint32(b[0:], strOff[s.Name])
		b[4] = elf.ST_INFO(s.Bind, s.Type)
		b[5] = s.Other
		shndx := uint16(s.Shndx)
		if s.Section != nil {
			idx, ok := secIndex[s.Section]
			if !ok {
				return nil, fmt.Errorf("write object: symbol %s is defined in section %s, which is not in the file", s.Name, s.Section.Name)
			}
			if idx >= int(elf.SHN_LORESERVE) {
				return nil, fmt.Errorf("write object: symbol %s: section index %d needs extended numbering, not supported", s.Name, idx)
			}
			shndx = uint16(idx)
		}
		le.PutUint16(b[6:], shndx)
		le.PutUint64(b[8:], s.Value)
		le.PutUint64(b[16:], s.Size)
	}
	symtab.Data = symData
	symtab.EntSize = symSize
	if symtab.Align == 0 {
		symtab.Align = 8
	}
	strtab.Data = strData

	// Section names.
	secNames := make([]string, len(f.Sections))
	for i, s := range f.Sections {
		secNames[i] = s.Name
	}
	shData, shOff := buildStrtab(secNames)
	shstrtab.Data = shData

	type hdr struct{ link, info uint32 }
	hdrs := make([]hdr, len(f.Sections))
	for i, s := range f.Sections {
		switch {
		case s == symtab:
			hdrs[i] = hdr{uint32(strtab.Index), uint32(firstGlobal)}
		case s.IsRela():
			ti, ok := secIndex[s.Target]
			if !ok {
				return nil, fmt.Errorf("write object: relocation section %s applies to a section that is not in the file", s.Name)
			}
			ent := relaSize
			if s.Type == elf.SHT_REL {
				ent = relSize
			}
			data := make([]byte, len(s.Relocs)*ent)
			for j, r := range s.Relocs {
				si := 0
				if r.Sym != nil {
					var ok bool
					if si, ok = symIndex[r.Sym]; !ok {
						return nil, fmt.Errorf("write object: %s entry %d refers to symbol %s, which is not in the file", s.Name, j, r.Sym.Name)
					}
				}
				b := data[j*ent:]
				le.PutUint64(b[0:], r.Offset)
				le.PutUint64(b[8:], uint64(si)<<32|uint64(uint32(r.Type)))
				if ent == relaSize {
					le.PutUint64(b[16:], uint64(r.Addend))
				}
			}
			s.Data = data
			s.EntSize = uint64(ent)
			hdrs[i] = hdr{uint32(symtab.Index), uint32(ti)}
		case s.Type == elf.SHT_GROUP:
			si, ok := symIndex[s.Signature]
			if !ok {
				return nil, fmt.Errorf("write object: group %s: signature symbol is not in the file", s.Name)
			}
			data := le.AppendUint32(nil, s.GroupFlags)
			for _, m := range s.Members {
				mi, ok := secIndex[m]
				if !ok {
					return nil, fmt.Errorf("write object: group %s: member %s is not in the file", s.Name, m.Name)
				}
				data = le.AppendUint32(data, uint32(mi))
			}
			s.Data = data
			s.EntSize = 4
			hdrs[i] = hdr{uint32(symtab.Index), uint32(si)}
		default:
			h := hdr{info: s.Info}
			if s.Link != nil {
				li, ok := secIndex[s.Link]
				if !ok {
					return nil, fmt.Errorf("write object: section %s links to section %s, which is not in the file", s.Name, s.Link.Name)
				}
				h.link = uint32(li)
			}
			hdrs[i] = h
		}
	}

	// Layout: header, section contents, section header table.
	out := make([]byte, ehdrSize)
	offsets := make([]uint64, len(f.Sections))
	for i, s := range f.Sections {
		if i == 0 || s.Type == elf.SHT_NOBITS {
			offsets[i] = uint64(len(out))
			continue
		}
		align := max(s.Align, 1)
		if align > maxAlign || align&(align-1) != 0 {
			return nil, fmt.Errorf("write object: section %s: alignment %#x is not a power of two up to %#x", s.Name, align, maxAlign)
		}
		out = append(out, make([]byte, (align-uint64(len(out))%align)%align)...)
		offsets[i] = uint64(len(out))
		out = append(out, s.Data...)
	}
	for len(out)%8 != 0 {
		out = append(out, 0)
	}
	shoff := uint64(len(out))
	for i, s := range f.Sections {
		var b [shdrSize]byte
		if i != 0 {
			le.PutUint32(b[0:], shOff[s.Name])
			le.PutUint32(b[4:], uint32(s.Type))
			le.PutUint64(b[8:], uint64(s.Flags))
			le.PutUint64(b[16:], s.Addr)
			le.PutUint64(b[24:], offsets[i])
			le.PutUint64(b[32:], s.Len())
			le.PutUint32(b[40:], hdrs[i].link)
			le.PutUint32(b[44:], hdrs[i].info)
			le.PutUint64(b[48:], s.Align)
			le.PutUint64(b[56:], s.EntSize)
		}
		out = append(out, b[:]...)
	}
	if len(f.Sections) >= int(elf.SHN_LORESERVE) {
		return nil, fmt.Errorf("write object: %d sections need extended numbering, not supported", len(f.Sections))
	}

	h := out[:ehdrSize]
	copy(h, elf.ELFMAG)
	h[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	h[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	h[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	h[elf.EI_OSABI] = byte(f.OSABI)
	h[elf.EI_ABIVERSION] = f.ABIVersion
	le.PutUint16(h[16:], uint16(elf.ET_REL))
	le.PutUint16(h[18:], uint16(elf.EM_X86_64))
	le.PutUint32(h[20:], uint32(elf.EV_CURRENT))
	le.PutUint64(h[40:], shoff)
	le.PutUint32(h[48:], f.Flags)
	le.PutUint16(h[52:], ehdrSize)
	le.PutUint16(h[58:], shdrSize)
	le.PutUint16(h[60:], uint16(len(f.Sections)))
	le.PutUint16(h[62:], uint16(shstrtab.Index))
	return out, nil
}

// ensureTables finds or appends the symbol table, its string table and
// the section name table.
func (f *File) ensureTables() (symtab, strtab, shstrtab *Section) {
	for _, s := range f.Sections {
		if s.Type == elf.SHT_SYMTAB && symtab == nil {
			symtab = s
		}
	}
	if symtab != nil && symtab.Link != nil && symtab.Link.Type == elf.SHT_STRTAB && symtab.Link.Name != ".shstrtab" {
		strtab = symtab.Link
	}
	for _, s := range f.Sections {
		if s.Type != elf.SHT_STRTAB {
			continue
		}
		switch {
		case s.Name == ".shstrtab" && shstrtab == nil:
			shstrtab = s
		case s.Name != ".shstrtab" && strtab == nil:
			strtab = s
		}
	}
	if symtab == nil {
		symtab = &Section{Name: ".symtab", Type: elf.SHT_SYMTAB, Align: 8}
		f.Sections = append(f.Sections, symtab)
	}
	if strtab == nil {
		strtab = &Section{Name: ".strtab", Type: elf.SHT_STRTAB, Align: 1}
		f.Sections = append(f.Sections, strtab)
	}
	symtab.Link = strtab
	if shstrtab == nil {
		shstrtab = &Section{Name: ".shstrtab", Type: elf.SHT_STRTAB, Align: 1}
		f.Sections = append(f.Sections, shstrtab)
	}
	return symtab, strtab, shstrtab
}

// RemoveSections drops the given sections, every relocation section and
// group membership that refers to them, and every symbol defined in
// them. Relocations in the remaining sections that refer to a removed
// symbol are an error for the caller to avoid; Write reports them.
func (f *File) RemoveSections(drop func(*Section) bool) {
	gone := make(map[*Section]bool)
	for _, s := range f.Sections[1:] {
		if drop(s) {
			gone[s] = true
		}
	}
	for _, s := range f.Sections[1:] {
		if s.IsRela() && gone[s.Target] {
			gone[s] = true
		}
	}
	f.Sections = slices.DeleteFunc(f.Sections, func(s *Section) bool { return gone[s] })
	for _, s := range f.Sections {
		if s.Type == elf.SHT_GROUP {
			s.Members = slices.DeleteFunc(s.Members, func(m *Section) bool { return gone[m] })
		}
		if s.Link != nil && gone[s.Link] {
			s.Link = nil
		}
	}
	f.Sections = slices.DeleteFunc(f.Sections, func(s *Section) bool {
		return s.Type == elf.SHT_GROUP && (len(s.Members) == 0 || s.Signature != nil && s.Signature.Section != nil && gone[s.Signature.Section])
	})
	f.Symbols = slices.DeleteFunc(f.Symbols, func(s *Symbol) bool { return s.Section != nil && gone[s.Section] })
}
