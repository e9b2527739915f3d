package klp

import (
	"debug/elf"
	"fmt"
	"slices"
	"strings"

	"github.com/livefix/livefix/elfobj"
)

// placement names the part of the kernel image a section of a translation
// unit is laid out in: the linker script gathers every unit's .text (or,
// compiled with -ffunction-sections, .text.NAME) together in link order,
// every unit's .text.unlikely parts elsewhere, explicit sections such as
// .sched.text or .data..read_mostly elsewhere again. Within one placement
// a unit's symbols are contiguous and in the order the compiler emitted
// them, which is the order of the object's sections.
func placement(sec string) string {
	for _, p := range []string{".text.unlikely", ".text.hot", ".text.unknown", ".text.startup"} {
		if sec == p || strings.HasPrefix(sec, p+".") {
			return p
		}
	}
	for _, p := range []string{".text", ".data", ".bss", ".rodata"} {
		if sec == p || (strings.HasPrefix(sec, p+".") && !strings.HasPrefix(sec, p+"..")) {
			if p == ".data" && strings.HasPrefix(sec, ".data.rel.ro") {
				return ".data.rel.ro"
			}
			return p
		}
	}
	return sec
}

// unitSequence returns the function and object symbols of orig in the
// placement of name's section, in layout order (section order, then
// offset), and name's index among them.
func unitSequence(orig *elfobj.File, name string) ([]string, int, bool) {
	var target *elfobj.Symbol
	for _, s := range orig.Symbols[1:] {
		if s.Name == name && s.Section != nil && (s.Type == elf.STT_FUNC || s.Type == elf.STT_OBJECT) {
			target = s
			break
		}
	}
	if target == nil {
		return nil, 0, false
	}
	class := placement(target.Section.Name)
	var syms []*elfobj.Symbol
	for _, s := range orig.Symbols[1:] {
		if s.Section == nil || s.Name == "" || (s.Type != elf.STT_FUNC && s.Type != elf.STT_OBJECT) ||
			s.Section.Flags&elf.SHF_ALLOC == 0 || placement(s.Section.Name) != class {
			continue
		}
		syms = append(syms, s)
	}
	slices.SortStableFunc(syms, func(a, b *elfobj.Symbol) int {
		if a.Section.Index != b.Section.Index {
			return a.Section.Index - b.Section.Index
		}
		switch {
		case a.Value < b.Value:
			return -1
		case a.Value > b.Value:
			return 1
		}
		return strings.Compare(a.Name, b.Name)
	})
	names := make([]string, len(syms))
	k := -1
	for i, s := range syms {
		names[i] = s.Name
		if s == target {
			k = i
		}
	}
	return names, k, true
}

// VerifyStatic checks that occurrence pos (1-based) of the static name
// really is the one of the translation unit orig was compiled from: when
// the table knows each symbol's file (a module, or a vmlinux with a full
// symbol table), the occurrence must follow file's STT_FILE symbol;
// otherwise (vmlinux symbols read from kallsyms, which only has names in
// address order) the unit's own symbols of name's placement must surround
// it contiguously, in the same order, as the linker laid them out. A
// choice that cannot be verified is a *SymposError: a wrong position would
// silently patch or use another file's static.
func (s *Symbols) VerifyStatic(name string, pos int, file string, orig *elfobj.File) error {
	idx := s.byName[name]
	if pos < 1 || pos > len(idx) {
		return &SymposError{s.Object, name, fmt.Sprintf("position %d of %d", pos, len(idx))}
	}
	i := idx[pos-1]
	if s.File[i] != "" {
		if s.File[i] != file {
			return &SymposError{s.Object, name, fmt.Sprintf("occurrence %d belongs to %s, not %s", pos, s.File[i], file)}
		}
		return nil
	}
	if orig == nil {
		return &SymposError{s.Object, name, fmt.Sprintf("%d symbols have this name and the original object is not available to verify which one is %s's", len(idx), file)}
	}
	seq, k, ok := unitSequence(orig, name)
	if !ok {
		return &SymposError{s.Object, name, fmt.Sprintf("%d symbols have this name and %s does not define it, so the choice cannot be verified", len(idx), file)}
	}
	start := i - k
	for j, want := range seq {
		at := start + j
		if at < 0 || at >= len(s.Names) || s.Names[at] != want {
			got := "the end of the table"
			if at >= 0 && at < len(s.Names) {
				got = s.Names[at]
			}
			return &SymposError{s.Object, name, fmt.Sprintf("%d symbols have this name; occurrence %d is not surrounded by %s's own symbols (expected %s, found %s %d entries away); pass --vmlinux with a vmlinux that has the full symbol table (Debian's linux-image-RELEASE-dbg package) to resolve it exactly",
				len(idx), pos, file, want, got, at-i)}
		}
	}
	return nil
}
