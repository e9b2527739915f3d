package klp

import (
	"debug/elf"
	"embed"
	"fmt"
	"path"
	"strings"

	"github.com/livefix/livefix/elfobj"
)

// compatHeaders are livefix's kpatch-macros.h and kpatch-syscall.h, which
// the build puts in the kernel tree's include/ while it compiles the
// patched files (kbuild.Tree.Includes).
//
//go:embed include/*.h
var compatHeaders embed.FS

// CompatHeaders returns the compatibility headers by file name.
func CompatHeaders() map[string][]byte {
	m := map[string][]byte{}
	entries, _ := compatHeaders.ReadDir("include")
	for _, e := range entries {
		data, err := compatHeaders.ReadFile(path.Join("include", e.Name()))
		if err == nil {
			m[e.Name()] = data
		}
	}
	return m
}

// Marker sections the compatibility headers' macros emit.
const (
	markerPrefix   = ".livefix."
	callbackPrefix = ".livefix.callbacks."
	ignoreFuncs    = ".livefix.ignore.functions"
	ignoreSections = ".livefix.ignore.sections"
	forceUnsafe    = ".livefix.force_unsafe"
)

// callbackKinds are the klp_callbacks members, in the order the kernel
// runs them over a patch's life.
var callbackKinds = []string{"pre_patch", "post_patch", "pre_unpatch", "post_unpatch"}

// unitMarkers is what a unit's marker sections ask for.
type unitMarkers struct {
	callbacks map[string]*elfobj.Symbol // kind -> the callback function in the unit
	ignore    map[string]bool           // functions to leave unpatched
}

// takeMarkers reads and removes a unit's .livefix.* marker sections
// (KPATCH_*_CALLBACK, KPATCH_IGNORE_FUNCTION, ...) and drops the undefined
// symbols only they referred to. A marker whose meaning livefix does not
// implement is refused rather than ignored.
func takeMarkers(f *elfobj.File) (*unitMarkers, error) {
	m := &unitMarkers{callbacks: map[string]*elfobj.Symbol{}, ignore: map[string]bool{}}
	relas := f.RelocSections()
	found := false
	for _, sec := range f.Sections {
		if !strings.HasPrefix(sec.Name, markerPrefix) || sec.IsRela() {
			continue
		}
		found = true
		var targets []*elfobj.Symbol
		for _, rs := range relas[sec] {
			for _, r := range rs.Relocs {
				if t := relocTarget(f, r); t != nil {
					targets = append(targets, t)
				}
			}
		}
		switch {
		case strings.HasPrefix(sec.Name, callbackPrefix):
			kind := strings.TrimPrefix(sec.Name, callbackPrefix)
			if !isCallbackKind(kind) {
				return nil, fmt.Errorf("unknown callback section %s", sec.Name)
			}
			if len(targets) != 1 || targets[0].Section == nil || targets[0].Type != elf.STT_FUNC {
				return nil, fmt.Errorf("%s callback: want exactly one function of this file per kind, found %d", kind, len(targets))
			}
			m.callbacks[kind] = targets[0]
		case sec.Name == ignoreFuncs:
			for _, t := range targets {
				m.ignore[t.Name] = true
			}
		case sec.Name == ignoreSections:
			return nil, fmt.Errorf("KPATCH_IGNORE_SECTION is not supported: the diff engine does not honour it yet; remove it and let the engine judge the section's change")
		case sec.Name == forceUnsafe:
			return nil, fmt.Errorf("KPATCH_FORCE_UNSAFE is not supported: livefix does not patch functions it cannot patch safely")
		default:
			return nil, fmt.Errorf("unknown livefix marker section %s", sec.Name)
		}
	}
	if !found {
		return m, nil
	}
	f.RemoveSections(func(s *elfobj.Section) bool { return strings.HasPrefix(s.Name, markerPrefix) })
	pruneUnusedUndefined(f)
	return m, nil
}

func isCallbackKind(k string) bool {
	for _, c := range callbackKinds {
		if c == k {
			return true
		}
	}
	return false
}

// relocTarget returns the function or object a relocation points at: its
// symbol, or for a section symbol the symbol at the addend's offset.
func relocTarget(f *elfobj.File, r elfobj.Reloc) *elfobj.Symbol {
	if r.Sym == nil {
		return nil
	}
	if r.Sym.Type != elf.STT_SECTION {
		return r.Sym
	}
	for _, s := range f.Symbols[1:] {
		if s.Section == r.Sym.Section && s.Type == elf.STT_FUNC && int64(s.Value) == r.Addend {
			return s
		}
	}
	return nil
}

// pruneUnusedUndefined drops undefined symbols no relocation refers to.
func pruneUnusedUndefined(f *elfobj.File) {
	used := map[*elfobj.Symbol]bool{}
	for _, s := range f.Sections {
		for _, r := range s.Relocs {
			used[r.Sym] = true
		}
		if s.Signature != nil {
			used[s.Signature] = true
		}
	}
	keep := f.Symbols[:1]
	for _, s := range f.Symbols[1:] {
		if s.Section == nil && s.Shndx == elf.SHN_UNDEF && !used[s] {
			continue
		}
		keep = append(keep, s)
	}
	f.Symbols = keep
}
