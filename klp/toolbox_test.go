package klp

import (
	"debug/elf"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/livefix/livefix/elfobj"
)

// markerObject has functions pre and f, an undefined c_stop, and marker
// sections: a pre_patch callback pointing at pre (through its section
// symbol, as gas writes it) and an ignore entry for c_stop.
func markerObject(extra ...string) *elfobj.File {
	pre := &elfobj.Section{Name: ".text.pre", Type: elf.SHT_PROGBITS, Flags: elf.SHF_ALLOC | elf.SHF_EXECINSTR, Data: make([]byte, 16)}
	text := &elfobj.Section{Name: ".text.f", Type: elf.SHT_PROGBITS, Flags: elf.SHF_ALLOC | elf.SHF_EXECINSTR, Data: make([]byte, 16)}
	f := &elfobj.File{Sections: []*elfobj.Section{{}, pre, text}}
	preSec := &elfobj.Symbol{Type: elf.STT_SECTION, Section: pre}
	preSym := &elfobj.Symbol{Name: "pre", Type: elf.STT_FUNC, Section: pre, Size: 16}
	fSym := &elfobj.Symbol{Name: "f", Type: elf.STT_FUNC, Bind: elf.STB_GLOBAL, Section: text, Size: 16}
	cStop := &elfobj.Symbol{Name: "c_stop", Shndx: elf.SHN_UNDEF}
	f.Symbols = []*elfobj.Symbol{{}, preSec, preSym, fSym, cStop}
	add := func(name string, target *elfobj.Symbol) {
		sec := &elfobj.Section{Name: name, Type: elf.SHT_PROGBITS, Flags: elf.SHF_ALLOC | elf.SHF_WRITE, Data: make([]byte, 8)}
		data := &elfobj.Symbol{Name: "__livefix_" + strings.ReplaceAll(name, ".", "_"), Type: elf.STT_OBJECT, Section: sec, Size: 8}
		rela := &elfobj.Section{Name: ".rela" + name, Type: elf.SHT_RELA, Target: sec, Relocs: []elfobj.Reloc{{Type: elf.R_X86_64_64, Sym: target}}}
		f.Sections = append(f.Sections, sec, rela)
		f.Symbols = append(f.Symbols, data)
	}
	add(".livefix.callbacks.pre_patch", preSec)
	add(".livefix.ignore.functions", cStop)
	for _, e := range extra {
		add(e, fSym)
	}
	return f
}

func TestTakeMarkers(t *testing.T) {
	f := markerObject()
	m, err := takeMarkers(f)
	if err != nil {
		t.Fatal(err)
	}
	if cb := m.callbacks["pre_patch"]; cb == nil || cb.Name != "pre" || len(m.callbacks) != 1 {
		t.Errorf("callbacks = %v, want pre_patch = pre", m.callbacks)
	}
	if !m.ignore["c_stop"] || len(m.ignore) != 1 {
		t.Errorf("ignore = %v, want c_stop", m.ignore)
	}
	for _, s := range f.Sections {
		if strings.Contains(s.Name, ".livefix.") {
			t.Errorf("marker section %s left in the unit", s.Name)
		}
	}
	if f.SymbolByName("c_stop") != nil {
		t.Error("the undefined c_stop only the marker used is still there")
	}
	if f.SymbolByName("pre") == nil || f.SymbolByName("f") == nil {
		t.Error("takeMarkers removed a function")
	}

	for _, tc := range []struct{ sec, want string }{
		{".livefix.ignore.sections", ""}, // objdiff's: removed
		{".livefix.force_unsafe", ""},
		{".livefix.callbacks.sometimes", "unknown callback"},
		{".livefix.callbacks.post_patch", ""}, // f: fine
		// One of several symbols of a marker section, as the engine
		// names its part in the output.
		{".livefix.ignore.functions.__livefix_ignore_f", ""},
		{".livefix.callbacks.post_patch.__livefix_post_patch_f", ""},
		{".livefix.ignore.functionsx", "unknown livefix marker section"},
	} {
		_, err := takeMarkers(markerObject(tc.sec))
		if tc.want == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.sec, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.sec, err, tc.want)
		}
	}
}

func TestHookCallbacks(t *testing.T) {
	src, err := GenerateHook(hookData{Name: "x", Level: 1, BuildID: []byte{1}, Objects: []hookObject{{
		Name: "vmlinux", Funcs: []hookFunc{{OldName: "f", NewSym: "livefix_u0_f"}},
		PrePatch: "livefix_u0_pre", PostUnpatch: "livefix_u0_post_un",
	}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"extern int livefix_u0_pre(struct klp_object *obj);",
		"extern void livefix_u0_post_un(struct klp_object *obj);",
		"\t\t.callbacks = {\n\t\t\t.pre_patch = livefix_u0_pre,\n\t\t\t.post_unpatch = livefix_u0_post_un,\n\t\t},\n",
	} {
		if !strings.Contains(string(src), want) {
			t.Errorf("hook lacks %q:\n%s", want, src)
		}
	}
	if !strings.Contains(string(CompatHeaders()["kpatch-macros.h"]), "#define KPATCH_PRE_PATCH_CALLBACK") || CompatHeaders()["kpatch-syscall.h"] == nil {
		t.Error("the compatibility headers are not embedded")
	}
}

// stateObject is a unit with a .livefix.states section holding the given
// struct livefix_state_mark entries (id, version, kind).
func stateObject(marks ...[3]uint64) *elfobj.File {
	sec := &elfobj.Section{Name: ".livefix.states", Type: elf.SHT_PROGBITS, Flags: elf.SHF_ALLOC | elf.SHF_WRITE}
	f := &elfobj.File{Sections: []*elfobj.Section{{}, sec}, Symbols: []*elfobj.Symbol{{}}}
	for i, m := range marks {
		b := make([]byte, stateMarkSize)
		binary.LittleEndian.PutUint64(b, m[0])
		binary.LittleEndian.PutUint32(b[8:], uint32(m[1]))
		binary.LittleEndian.PutUint32(b[12:], uint32(m[2]))
		f.Symbols = append(f.Symbols, &elfobj.Symbol{Name: fmt.Sprintf("__livefix_state_%d", i), Type: elf.STT_OBJECT, Section: sec, Value: uint64(len(sec.Data)), Size: stateMarkSize})
		sec.Data = append(sec.Data, b...)
	}
	return f
}

func TestTakeStates(t *testing.T) {
	f := stateObject([3]uint64{7, 1, 0}, [3]uint64{0x1f2, 2, 1}, [3]uint64{0x1f3, 1, 2})
	m, err := takeMarkers(f)
	if err != nil {
		t.Fatal(err)
	}
	want := []State{{ID: 7, Version: 1}, {ID: 0x1f2, Version: 2, Shadow: "free"}, {ID: 0x1f3, Version: 1, Shadow: "retire"}}
	if !slices.Equal(m.states, want) {
		t.Errorf("states = %+v, want %+v", m.states, want)
	}
	if f.SectionByName(".livefix.states") != nil {
		t.Error("the state marker section is left in the unit")
	}
	for _, tc := range []struct {
		f    *elfobj.File
		want string
	}{
		{stateObject([3]uint64{0, 1, 0}), "id 0"},
		{stateObject([3]uint64{3, 1, 9}), "unknown kind 9"},
	} {
		if _, err := takeMarkers(tc.f); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("err = %v, want %q", err, tc.want)
		}
	}
	short := stateObject([3]uint64{3, 1, 0})
	short.Symbols[1].Size = 8
	if _, err := takeMarkers(short); err == nil || !strings.Contains(err.Error(), "want 16") {
		t.Errorf("a short marker: err = %v", err)
	}

	all, err := mergeStates(nil, want[:2], "a.c")
	if err != nil {
		t.Fatal(err)
	}
	if all, err = mergeStates(all, []State{{ID: 7, Version: 1}}, "b.c"); err != nil || len(all) != 2 {
		t.Errorf("the same state declared twice: %v, %v", all, err)
	}
	if _, err := mergeStates(all, []State{{ID: 7, Version: 2}}, "b.c"); err == nil || !strings.Contains(err.Error(), "b.c: state 7 declared as LIVEFIX_STATE(7, 2), but elsewhere in the patch as LIVEFIX_STATE(7, 1)") {
		t.Errorf("two declarations of state 7: err = %v", err)
	}
}

func TestShadowCallbacks(t *testing.T) {
	// A patch changing only a module: its shadow frees go to an added
	// vmlinux object without functions.
	h := hookData{States: []State{{ID: 1, Version: 1}, {ID: 2, Version: 1, Shadow: "free"}, {ID: 3, Version: 1, Shadow: "retire"}},
		Objects: []hookObject{{Name: "binfmt_misc", Funcs: []hookFunc{{OldName: "g", NewSym: "livefix_u0_g"}}}}}
	shadowCallbacks(&h)
	if len(h.Objects) != 2 || h.Objects[1].Name != "vmlinux" || len(h.Objects[1].Funcs) != 0 ||
		!slices.Equal(h.Objects[1].ShadowFree, []uint64{2}) || !slices.Equal(h.Objects[1].ShadowRetire, []uint64{3}) || h.Objects[0].ShadowFree != nil {
		t.Errorf("objects = %+v", h.Objects)
	}
	if got := h.Objects[1].PostUnpatchFn(1); got != "livefix_post_unpatch_1" {
		t.Errorf("post_unpatch = %q", got)
	}
	// With a vmlinux object, that one; without shadow states, nothing.
	h = hookData{States: []State{{ID: 2, Version: 1, Shadow: "free"}}, Objects: []hookObject{{Name: "vmlinux", PostUnpatch: "a"}}}
	shadowCallbacks(&h)
	if len(h.Objects) != 1 || !slices.Equal(h.Objects[0].ShadowFree, []uint64{2}) || h.Objects[0].PostPatchFn(0) != "" {
		t.Errorf("objects = %+v", h.Objects)
	}
	h = hookData{States: []State{{ID: 1, Version: 1}}, Objects: []hookObject{{Name: "binfmt_misc"}}}
	if shadowCallbacks(&h); len(h.Objects) != 1 || h.Objects[0].HasCallbacks() {
		t.Errorf("a plain state changed the objects: %+v", h.Objects)
	}
}
