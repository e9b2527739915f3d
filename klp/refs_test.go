package klp

import (
	"context"
	"debug/elf"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/livefix/livefix/elfobj"
	"github.com/livefix/livefix/objdiff"
)

// tableObject returns an object with a 3-entry __jump_table and a 2-entry
// .static_call_sites whose keys are the given symbol names.
func tableObject(jumpKeys, callKeys []string) *elfobj.File {
	text := &elfobj.Section{Name: ".text.f", Type: elf.SHT_PROGBITS, Flags: elf.SHF_ALLOC | elf.SHF_EXECINSTR, Data: make([]byte, 64)}
	jt := &elfobj.Section{Name: "__jump_table", Type: elf.SHT_PROGBITS, Flags: elf.SHF_ALLOC | elf.SHF_WRITE, Data: make([]byte, 16*len(jumpKeys))}
	sc := &elfobj.Section{Name: ".static_call_sites", Type: elf.SHT_PROGBITS, Flags: elf.SHF_ALLOC | elf.SHF_WRITE, Data: make([]byte, 8*len(callKeys))}
	f := &elfobj.File{Sections: []*elfobj.Section{{Type: elf.SHT_NULL}, text, jt, sc}}
	fsym := &elfobj.Symbol{Name: "livefix_u0_f", Bind: elf.STB_GLOBAL, Type: elf.STT_FUNC, Section: text, Size: 64}
	f.Symbols = []*elfobj.Symbol{{}, fsym}
	sym := func(name string) *elfobj.Symbol {
		for _, s := range f.Symbols[1:] {
			if s.Name == name {
				return s
			}
		}
		s := &elfobj.Symbol{Name: name, Bind: elf.STB_GLOBAL, Shndx: elf.SHN_UNDEF}
		f.Symbols = append(f.Symbols, s)
		return s
	}
	jr := &elfobj.Section{Name: ".rela__jump_table", Type: elf.SHT_RELA, Target: jt}
	for i, k := range jumpKeys {
		binary.LittleEndian.PutUint32(jt.Data[16*i:], uint32(i+1)) // a mark to follow the entry
		jr.Relocs = append(jr.Relocs,
			elfobj.Reloc{Offset: uint64(16 * i), Type: elf.R_X86_64_PC32, Sym: fsym, Addend: int64(i)},
			elfobj.Reloc{Offset: uint64(16*i + 4), Type: elf.R_X86_64_PC32, Sym: fsym, Addend: int64(i + 8)},
			elfobj.Reloc{Offset: uint64(16*i + 8), Type: elf.R_X86_64_64, Sym: sym(k), Addend: 8})
	}
	sr := &elfobj.Section{Name: ".rela.static_call_sites", Type: elf.SHT_RELA, Target: sc}
	for i, k := range callKeys {
		sr.Relocs = append(sr.Relocs,
			elfobj.Reloc{Offset: uint64(8 * i), Type: elf.R_X86_64_PC32, Sym: fsym, Addend: int64(i)},
			elfobj.Reloc{Offset: uint64(8*i + 4), Type: elf.R_X86_64_PC32, Sym: sym(k)})
	}
	f.Sections = append(f.Sections, jr, sr)
	return f
}

func TestFilterEarlySections(t *testing.T) {
	tp := KlpSymName("tipc", "__tracepoint_tipc_sk_create", 0)
	vmKey := KlpSymName("vmlinux", "some_key", 0)
	f := tableObject(
		[]string{"exported_key", tp, vmKey},
		[]string{KlpSymName("tipc", "__SCK__tp_func_tipc_sk_create", 0), "__SCT__preempt_schedule"})
	if err := filterEarlySections(f, "tipc"); err != nil {
		t.Fatal(err)
	}
	jt := f.SectionByName("__jump_table")
	if jt.Len() != 32 {
		t.Fatalf("__jump_table has %d bytes, want 2 entries", jt.Len())
	}
	if m0, m1 := binary.LittleEndian.Uint32(jt.Data), binary.LittleEndian.Uint32(jt.Data[16:]); m0 != 1 || m1 != 3 {
		t.Errorf("kept entries %d and %d, want 1 and 3", m0, m1)
	}
	var keys []string
	for _, r := range f.SectionByName(".rela__jump_table").Relocs {
		if r.Offset%16 == 8 {
			keys = append(keys, r.Sym.Name)
		}
		if r.Offset >= 32 {
			t.Errorf("relocation at %d beyond the table", r.Offset)
		}
	}
	if strings.Join(keys, " ") != "exported_key "+vmKey {
		t.Errorf("jump keys left %v", keys)
	}
	sc := f.SectionByName(".static_call_sites")
	rs := f.SectionByName(".rela.static_call_sites").Relocs
	if sc.Len() != 8 || len(rs) != 2 || rs[1].Sym.Name != "__SCT__preempt_schedule" || rs[0].Addend != 1 {
		t.Errorf("static call sites: %d bytes, relocs %+v; want the vmlinux one only, moved to entry 0", sc.Len(), rs)
	}

	// A module's own static key, or a static call that is not a
	// tracepoint's, is refused by name.
	f = tableObject([]string{KlpSymName("kvm", "kvm_has_noapic_vcpu", 0)}, []string{KlpSymName("kvm", "__SCT__kvm_x86_run", 0)})
	err := filterEarlySections(f, "kvm")
	var ek *EarlyKeyError
	if !errors.As(err, &ek) || len(ek.Keys) != 2 || !strings.Contains(err.Error(), "static key kvm_has_noapic_vcpu") || !strings.Contains(err.Error(), "static call __SCT__kvm_x86_run") {
		t.Errorf("err = %v, want an *EarlyKeyError naming both", err)
	}
	var refused *objdiff.RefusedError
	if !errors.As(err, &refused) || len(refused.Refused) != 2 || !strings.Contains(refused.Error(), "static key kvm_has_noapic_vcpu: defined by a module") {
		t.Errorf("err = %v, want a refusal (livefix-build exit 3) naming each key", err)
	}
}

func TestAliasTarget(t *testing.T) {
	exit := &elfobj.Section{Name: ".exit.text", Type: elf.SHT_PROGBITS, Flags: elf.SHF_ALLOC | elf.SHF_EXECINSTR, Data: make([]byte, 32)}
	text := &elfobj.Section{Name: ".text.g", Type: elf.SHT_PROGBITS, Flags: elf.SHF_ALLOC | elf.SHF_EXECINSTR, Data: make([]byte, 32)}
	orig := &elfobj.File{Sections: []*elfobj.Section{{}, exit, text}, Symbols: []*elfobj.Symbol{{},
		{Name: "exit_foo", Bind: elf.STB_LOCAL, Type: elf.STT_FUNC, Section: exit, Size: 16},
		{Name: "cleanup_module", Bind: elf.STB_GLOBAL, Type: elf.STT_FUNC, Section: exit, Size: 16},
		{Name: "g", Bind: elf.STB_GLOBAL, Type: elf.STT_FUNC, Section: text, Size: 32},
	}}
	syms := newSymbols("foo")
	syms.add("exit_foo", false, "foo.c")
	syms.add("cleanup_module", true, "foo.c")
	syms.add("g", true, "foo.c")
	if got, ok := aliasTarget(orig, "cleanup_module", syms); !ok || got != "exit_foo" {
		t.Errorf("aliasTarget(cleanup_module) = %q, %v; want exit_foo", got, ok)
	}
	if got, ok := aliasTarget(orig, "g", syms); ok {
		t.Errorf("aliasTarget(g) = %q, want no alias", got)
	}
	if _, ok := aliasTarget(nil, "cleanup_module", syms); ok {
		t.Error("aliasTarget without the original object found an alias")
	}
}

func TestOtherModuleRef(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "modules.dep"), []byte("kernel/crypto/algif_hash.ko: kernel/crypto/af_alg.ko\nkernel/crypto/af_alg.ko:\nkernel/fs/other.ko:\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	env := newUnitEnv(context.Background(), Exports{"af_alg_make_sg": "af_alg"}, nil, nil, dir)
	af := newSymbols("af_alg")
	af.add("af_alg_make_sg", true, "af_alg.c")
	env.modSyms["af_alg"] = af
	name, err := env.otherModuleRef("algif_hash", "af_alg", "af_alg_make_sg")
	if err != nil || name != ".klp.sym.af_alg.af_alg_make_sg,0" || env.owners[name] != "algif_hash" {
		t.Errorf("otherModuleRef = %q, %v (owner %q); want .klp.sym.af_alg.af_alg_make_sg,0 owned by algif_hash", name, err, env.owners[name])
	}
	if _, err := env.otherModuleRef("other", "af_alg", "af_alg_make_sg"); err == nil || !strings.Contains(err.Error(), "does not depend on") {
		t.Errorf("a module without the dependency: err = %v", err)
	}
}

func TestConvertRelocationsOwner(t *testing.T) {
	f, _ := klpTestObject()
	// helper is module foo's; this patch patches bar, which depends on foo.
	if _, err := ConvertRelocations(f, map[string]string{KlpSymName("foo", "helper", 0): "bar"}); err != nil {
		t.Fatal(err)
	}
	if f.SectionByName(".klp.rela.bar..text.f") == nil || f.SectionByName(".klp.rela.foo..text.f") != nil {
		var names []string
		for _, s := range f.Sections {
			names = append(names, s.Name)
		}
		t.Errorf("sections %v: want foo's symbol relocated in .klp.rela.bar..text.f", names)
	}
}

func TestHookNamespaces(t *testing.T) {
	src, err := GenerateHook(hookData{Name: "x", Level: 1, BuildID: []byte{1}, Namespaces: []string{"CRYPTO_INTERNAL", "USB_STORAGE"},
		Objects: []hookObject{{Name: "cmac", Funcs: []hookFunc{{OldName: "f", NewSym: "livefix_u0_f"}}}}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(src), "MODULE_IMPORT_NS(CRYPTO_INTERNAL);\nMODULE_IMPORT_NS(USB_STORAGE);\n") {
		t.Errorf("hook lacks the namespace imports:\n%s", src)
	}
}

func TestReadExportNamespaces(t *testing.T) {
	p := filepath.Join(t.TempDir(), "Module.symvers")
	data := "0x1\tcrypto_cipher_encrypt_one\tvmlinux\tEXPORT_SYMBOL_GPL\tCRYPTO_INTERNAL\n0x2\tprintk\tvmlinux\tEXPORT_SYMBOL\t\n"
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	ns, err := ReadExportNamespaces(p)
	if err != nil || len(ns) != 1 || ns["crypto_cipher_encrypt_one"] != "CRYPTO_INTERNAL" {
		t.Errorf("ReadExportNamespaces = %v, %v", ns, err)
	}
}
