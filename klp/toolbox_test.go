package klp

import (
	"debug/elf"
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
		{".livefix.ignore.sections", "KPATCH_IGNORE_SECTION is not supported"},
		{".livefix.force_unsafe", "KPATCH_FORCE_UNSAFE is not supported"},
		{".livefix.callbacks.sometimes", "unknown callback"},
		{".livefix.callbacks.post_patch", ""}, // f: fine
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
