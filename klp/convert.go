package klp

import (
	"debug/elf"
	"fmt"
	"sort"
	"strings"

	"github.com/livefix/livefix/elfobj"
)

// Prefixes of the livepatch ELF names (module-elf-format.rst).
const (
	klpSymPrefix  = ".klp.sym."
	klpRelaPrefix = ".klp.rela."
)

// KlpSymName is the name of a livepatch symbol: .klp.sym.OBJ.NAME,POS.
func KlpSymName(object, name string, sympos int) string {
	return fmt.Sprintf("%s%s.%s,%d", klpSymPrefix, object, name, sympos)
}

// klpSymObject returns the object part of a .klp.sym name.
func klpSymObject(name string) (string, bool) {
	rest, ok := strings.CutPrefix(name, klpSymPrefix)
	if !ok {
		return "", false
	}
	obj, sym, ok := strings.Cut(rest, ".")
	if !ok || obj == "" || !strings.Contains(sym, ",") {
		return "", false
	}
	return obj, true
}

// ConvertRelocations turns a linked livepatch module into the layout the
// livepatch core expects: every undefined .klp.sym.OBJ.NAME,POS symbol
// gets st_shndx SHN_LIVEPATCH, and every relocation against one moves from
// its ordinary relocation section into .klp.rela.OBJ.SECTION (one per
// object and target section), a SHT_RELA section with SHF_RELA_LIVEPATCH,
// SHF_ALLOC (the core reads it again when a patched module loads later,
// after the module loader has freed non-allocated sections) and
// SHF_INFO_LINK. It returns how many relocations moved.
//
// The OBJ of a .klp.rela section is the object whose loading lets the
// core write it: normally the symbol's own object; owners overrides that
// for symbols of other modules that a patched module uses (its
// dependencies, loaded before it), keyed by the .klp.sym name.
func ConvertRelocations(f *elfobj.File, owners map[string]string) (int, error) {
	klpObj := map[*elfobj.Symbol]string{}
	for _, s := range f.Symbols {
		if s == nil || s.Section != nil {
			continue
		}
		if obj, ok := klpSymObject(s.Name); ok {
			if s.Shndx != elf.SHN_UNDEF && s.Shndx != elfobj.SHNLivepatch {
				return 0, fmt.Errorf("livepatch symbol %s has section index %#x, want undefined", s.Name, uint16(s.Shndx))
			}
			s.Shndx = elfobj.SHNLivepatch
			s.Bind = elf.STB_GLOBAL
			if o, ok := owners[s.Name]; ok {
				obj = o
			}
			klpObj[s] = obj
		} else if strings.HasPrefix(s.Name, klpSymPrefix) {
			return 0, fmt.Errorf("livepatch symbol %q is not of the form .klp.sym.OBJECT.NAME,POS", s.Name)
		}
	}
	moved := 0
	var added []*elfobj.Section
	drop := map[*elfobj.Section]bool{}
	for _, sec := range f.Sections {
		if sec.Type != elf.SHT_RELA || sec.Target == nil || sec.Flags&elfobj.SHFRelaLivepatch != 0 {
			continue
		}
		byObj := map[string][]elfobj.Reloc{}
		var keep []elfobj.Reloc
		for _, r := range sec.Relocs {
			if obj, ok := klpObj[r.Sym]; ok {
				byObj[obj] = append(byObj[obj], r)
				continue
			}
			keep = append(keep, r)
		}
		if len(byObj) == 0 {
			continue
		}
		if sec.Target.Flags&elf.SHF_ALLOC == 0 {
			return 0, fmt.Errorf("section %s refers to livepatch symbols but is not loaded (not SHF_ALLOC)", sec.Target.Name)
		}
		objs := make([]string, 0, len(byObj))
		for o := range byObj {
			objs = append(objs, o)
		}
		sort.Strings(objs)
		for _, o := range objs {
			added = append(added, &elfobj.Section{
				Name:    klpRelaPrefix + o + "." + sec.Target.Name,
				Type:    elf.SHT_RELA,
				Flags:   elf.SHF_ALLOC | elf.SHF_INFO_LINK | elfobj.SHFRelaLivepatch,
				Align:   8,
				EntSize: 24,
				Target:  sec.Target,
				Relocs:  byObj[o],
			})
			moved += len(byObj[o])
		}
		sec.Relocs = keep
		if len(keep) == 0 {
			drop[sec] = true
		}
	}
	if len(drop) > 0 {
		f.RemoveSections(func(s *elfobj.Section) bool { return drop[s] })
	}
	f.Sections = append(f.Sections, added...)
	return moved, nil
}
