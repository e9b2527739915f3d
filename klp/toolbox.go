package klp

import (
	"debug/elf"
	"embed"
	"encoding/binary"
	"fmt"
	"path"
	"sort"
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
	statesSection  = ".livefix.states"
)

// State kinds of livefix.h's markers (struct livefix_state_mark.kind).
const (
	stateSystem       = 0 // LIVEFIX_STATE
	stateShadow       = 1 // LIVEFIX_SHADOW_STATE: freed on disable
	stateShadowRetire = 2 // LIVEFIX_SHADOW_RETIRE: the replaced level's freed on replace
)

// State is a system state a level declares (the kernel's struct
// klp_state), from livefix.h's LIVEFIX_STATE, LIVEFIX_SHADOW_STATE and
// LIVEFIX_SHADOW_RETIRE.
type State struct {
	ID      uint64 `json:"id"`
	Version uint32 `json:"version"`
	// Shadow is "free" for a shadow state whose variables the level frees
	// when disabled, "retire" for one whose variables it frees when it
	// replaces a level that has them, "" for a plain state.
	Shadow string `json:"shadow,omitempty"`
}

func (s State) kindName() string {
	switch s.Shadow {
	case "free":
		return "LIVEFIX_SHADOW_STATE"
	case "retire":
		return "LIVEFIX_SHADOW_RETIRE"
	}
	return "LIVEFIX_STATE"
}

// stateMarkSize is sizeof(struct livefix_state_mark) on x86-64.
const stateMarkSize = 16

// callbackKinds are the klp_callbacks members, in the order the kernel
// runs them over a patch's life.
var callbackKinds = []string{"pre_patch", "post_patch", "pre_unpatch", "post_unpatch"}

// unitMarkers is what a unit's marker sections ask for.
type unitMarkers struct {
	callbacks map[string]*elfobj.Symbol // kind -> the callback function in the unit
	ignore    map[string]bool           // functions to leave unpatched
	states    []State                   // system states, in marker order
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
		name := markerBase(sec.Name)
		switch {
		case strings.HasPrefix(name, callbackPrefix):
			kind := strings.TrimPrefix(name, callbackPrefix)
			if !isCallbackKind(kind) {
				return nil, fmt.Errorf("unknown callback section %s", sec.Name)
			}
			if len(targets) != 1 || targets[0].Section == nil || targets[0].Type != elf.STT_FUNC {
				return nil, fmt.Errorf("%s callback: want exactly one function of this file per kind, found %d", kind, len(targets))
			}
			m.callbacks[kind] = targets[0]
		case name == ignoreFuncs:
			for _, t := range targets {
				m.ignore[t.Name] = true
			}
		case name == ignoreSections, name == forceUnsafe:
			// The diff engine honoured them (objdiff reads the patched
			// object's markers); nothing of them goes into the module.
		case name == statesSection:
			states, err := readStates(f, sec)
			if err != nil {
				return nil, err
			}
			m.states = append(m.states, states...)
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

// readStates decodes the struct livefix_state_mark objects of a unit's
// .livefix.states section.
func readStates(f *elfobj.File, sec *elfobj.Section) ([]State, error) {
	var marks []*elfobj.Symbol
	for _, s := range f.Symbols[1:] {
		if s.Section == sec && s.Type == elf.STT_OBJECT {
			marks = append(marks, s)
		}
	}
	sort.Slice(marks, func(i, j int) bool { return marks[i].Value < marks[j].Value })
	var out []State
	for _, s := range marks {
		if s.Size != stateMarkSize || s.Value+stateMarkSize > uint64(len(sec.Data)) {
			return nil, fmt.Errorf("state marker %s: %d bytes at %d in a %d-byte section; want %d (was it made by livefix.h's LIVEFIX_STATE?)", s.Name, s.Size, s.Value, len(sec.Data), stateMarkSize)
		}
		b := sec.Data[s.Value : s.Value+stateMarkSize]
		st := State{ID: binary.LittleEndian.Uint64(b), Version: binary.LittleEndian.Uint32(b[8:])}
		switch kind := binary.LittleEndian.Uint32(b[12:]); kind {
		case stateSystem:
		case stateShadow:
			st.Shadow = "free"
		case stateShadowRetire:
			st.Shadow = "retire"
		default:
			return nil, fmt.Errorf("state marker %s: unknown kind %d", s.Name, kind)
		}
		if st.ID == 0 {
			return nil, fmt.Errorf("state marker %s: id 0; the kernel ends its state list at id 0, so a state needs a non-zero id", s.Name)
		}
		out = append(out, st)
	}
	return out, nil
}

// mergeStates adds a unit's states to the patch's: a state declared
// twice must be declared the same way.
func mergeStates(all []State, add []State, source string) ([]State, error) {
	for _, s := range add {
		dup := false
		for _, o := range all {
			if o.ID != s.ID {
				continue
			}
			if o != s {
				return nil, fmt.Errorf("%s: state %d declared as %s(%d, %d), but elsewhere in the patch as %s(%d, %d); one state, one declaration", source, s.ID, s.kindName(), s.ID, s.Version, o.kindName(), o.ID, o.Version)
			}
			dup = true
		}
		if !dup {
			all = append(all, s)
		}
	}
	return all, nil
}

// markerBase returns the marker section a section of the diff output
// comes from: the engine names the part of a section holding one of
// several symbols SECTION.SYMBOL (two KPATCH_IGNORE_FUNCTIONs in a file).
func markerBase(name string) string {
	for _, base := range []string{ignoreFuncs, ignoreSections, forceUnsafe, statesSection} {
		if name == base || strings.HasPrefix(name, base+".") {
			return base
		}
	}
	if rest, ok := strings.CutPrefix(name, callbackPrefix); ok {
		if i := strings.IndexByte(rest, '.'); i >= 0 {
			return callbackPrefix + rest[:i]
		}
	}
	return name
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
