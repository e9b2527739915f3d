package klp

import (
	"bytes"
	"debug/elf"
	"fmt"
	"slices"
	"strings"

	"github.com/livefix/livefix/buildid"
)

// VmlinuxFileSymbols reads the symbol table of a vmlinux that has one in
// full (Debian's linux-image-RELEASE-dbg ships it as
// /usr/lib/debug/boot/vmlinux-RELEASE), in kallsyms order (by address),
// with the source file of every static (the STT_FILE symbol it follows),
// so that a static's sympos is exact instead of inferred. The file's GNU
// build-id must be buildID: symbols of another build would be wrong.
func VmlinuxFileSymbols(path string, buildID []byte) (*Symbols, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("--vmlinux: %w", err)
	}
	defer f.Close()
	id, err := elfNoteBuildID(f)
	if err != nil {
		return nil, fmt.Errorf("--vmlinux %s: %w", path, err)
	}
	if !bytes.Equal(id, buildID) {
		return nil, fmt.Errorf("--vmlinux %s has build-id %x, but the target kernel's is %x: it is another build; use the vmlinux of this very kernel", path, id, buildID)
	}
	raw, err := f.Symbols()
	if err != nil {
		return nil, fmt.Errorf("--vmlinux %s: %w (it must have its symbol table; Debian's image is stripped, the -dbg package's is not)", path, err)
	}
	type entry struct {
		name   string
		addr   uint64
		global bool
		file   string
	}
	var all []entry
	file := ""
	files := 0
	for _, s := range raw {
		typ, bind := elf.ST_TYPE(s.Info), elf.ST_BIND(s.Info)
		if typ == elf.STT_FILE {
			file = s.Name
			files++
			continue
		}
		if s.Name == "" || typ == elf.STT_SECTION || s.Section == elf.SHN_UNDEF || s.Section >= elf.SHN_LORESERVE && s.Section != elf.SHN_ABS {
			continue
		}
		if strings.HasPrefix(s.Name, "__crc_") || strings.HasPrefix(s.Name, ".L") || strings.HasPrefix(s.Name, "$") {
			continue
		}
		if s.Section != elf.SHN_ABS && int(s.Section) < len(f.Sections) && f.Sections[s.Section].Flags&elf.SHF_ALLOC == 0 {
			continue
		}
		e := entry{name: s.Name, addr: s.Value, global: bind != elf.STB_LOCAL}
		if !e.global {
			e.file = file
		}
		all = append(all, e)
	}
	if files == 0 {
		return nil, fmt.Errorf("--vmlinux %s has no STT_FILE symbols, so statics cannot be told apart by file", path)
	}
	slices.SortStableFunc(all, func(a, b entry) int {
		switch {
		case a.addr < b.addr:
			return -1
		case a.addr > b.addr:
			return 1
		}
		return 0
	})
	syms := newSymbols("vmlinux")
	for _, e := range all {
		syms.add(e.name, e.global, e.file)
	}
	return syms, nil
}

// elfNoteBuildID returns the GNU build-id of an ELF file's note sections.
func elfNoteBuildID(f *elf.File) ([]byte, error) {
	for _, s := range f.Sections {
		if s.Type != elf.SHT_NOTE {
			continue
		}
		data, err := s.Data()
		if err != nil {
			continue
		}
		if id, err := buildid.FromNotes(data); err == nil && len(id) > 0 {
			return id, nil
		}
	}
	return nil, fmt.Errorf("no GNU build-id note")
}
