package klp

import (
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"encoding/binary"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/livefix/livefix/elfobj"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func TestGenerateHookGolden(t *testing.T) {
	tests := []struct {
		name   string
		golden string
		data   hookData
	}{
		{
			name:   "vmlinux and a module, cumulative",
			golden: "hook-two-objects.c.golden",
			data: hookData{
				Name: "fix_proc", Level: 2, Release: "6.1.0-56-amd64", Replace: true,
				BuildID: []byte{0xeb, 0x4f, 0xbc, 0xd0, 0x01},
				Objects: []hookObject{
					{Name: "vmlinux", Funcs: []hookFunc{
						{OldName: "cmdline_proc_show", NewSym: "livefix_u0_cmdline_proc_show"},
						{OldName: "c_next", NewSym: "livefix_u1_c_next", Sympos: 2},
					}},
					{Name: "nfsd", Funcs: []hookFunc{{OldName: "nfsd_open", NewSym: "livefix_u2_nfsd_open"}}},
				},
			},
		},
		{
			name:   "stacking patch",
			golden: "hook-no-replace.c.golden",
			data: hookData{
				Name: "one", Level: 1, Release: "6.1.0-56-amd64", Replace: false, BuildID: []byte{1, 2, 3},
				Objects: []hookObject{{Name: "vmlinux", Funcs: []hookFunc{{OldName: "f", NewSym: "livefix_u0_f"}}}},
			},
		},
		{
			name:   "system states and shadow variables",
			golden: "hook-states.c.golden",
			data: hookData{
				Name: "lf_state", Level: 2, Release: "6.1.0-57-amd64", Replace: true, BuildID: []byte{4, 5},
				States: []State{{ID: 7, Version: 1}, {ID: 0x1f2, Version: 2, Shadow: "free"}, {ID: 0x1f3, Version: 1, Shadow: "retire"}},
				Objects: []hookObject{
					{Name: "vmlinux", Funcs: []hookFunc{{OldName: "f", NewSym: "livefix_u0_f"}},
						PostUnpatch: "livefix_u0_author_post_unpatch", ShadowFree: []uint64{0x1f2}, ShadowRetire: []uint64{0x1f3}},
					{Name: "binfmt_misc", Funcs: []hookFunc{{OldName: "g", NewSym: "livefix_u1_g"}}},
				},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := GenerateHook(tc.data)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", tc.golden)
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("generated hook differs from %s (run go test -update after checking):\n%s", path, got)
			}
		})
	}
	if _, err := GenerateHook(hookData{Name: "x"}); err == nil {
		t.Error("GenerateHook accepted an empty build-id")
	}
}

// klpTestObject is a small module-like object: .text.f calls exported
// printk, reads static counter (to become a livepatch symbol of vmlinux)
// and calls helper of module foo.
func klpTestObject() (*elfobj.File, *elfobj.Section) {
	text := &elfobj.Section{Name: ".text.f", Type: elf.SHT_PROGBITS, Flags: elf.SHF_ALLOC | elf.SHF_EXECINSTR, Align: 16, Data: make([]byte, 32)}
	dbg := &elfobj.Section{Name: ".debug_info", Type: elf.SHT_PROGBITS, Data: make([]byte, 16)}
	f := &elfobj.File{}
	f.Sections = []*elfobj.Section{
		{Type: elf.SHT_NULL},
		text,
		dbg,
		{Name: ".symtab", Type: elf.SHT_SYMTAB, Align: 8, EntSize: 24},
		{Name: ".strtab", Type: elf.SHT_STRTAB, Align: 1},
		{Name: ".shstrtab", Type: elf.SHT_STRTAB, Align: 1},
	}
	fsym := &elfobj.Symbol{Name: "livefix_u0_f", Bind: elf.STB_GLOBAL, Type: elf.STT_FUNC, Section: text, Size: 32}
	printk := &elfobj.Symbol{Name: "_printk", Bind: elf.STB_GLOBAL, Shndx: elf.SHN_UNDEF}
	counter := &elfobj.Symbol{Name: KlpSymName("vmlinux", "counter", 2), Bind: elf.STB_GLOBAL, Type: elf.STT_OBJECT, Shndx: elf.SHN_UNDEF}
	helper := &elfobj.Symbol{Name: KlpSymName("foo", "helper", 0), Bind: elf.STB_GLOBAL, Type: elf.STT_FUNC, Shndx: elf.SHN_UNDEF}
	f.Symbols = []*elfobj.Symbol{{}, fsym, printk, counter, helper}
	rela := &elfobj.Section{Name: ".rela.text.f", Type: elf.SHT_RELA, Flags: elf.SHF_INFO_LINK, Align: 8, EntSize: 24, Target: text, Relocs: []elfobj.Reloc{
		{Offset: 1, Type: elf.R_X86_64_PLT32, Sym: printk, Addend: -4},
		{Offset: 8, Type: elf.R_X86_64_PC32, Sym: counter, Addend: -4},
		{Offset: 16, Type: elf.R_X86_64_PLT32, Sym: helper, Addend: -4},
		{Offset: 24, Type: elf.R_X86_64_32S, Sym: counter, Addend: 8},
	}}
	dbgRela := &elfobj.Section{Name: ".rela.debug_info", Type: elf.SHT_RELA, Align: 8, EntSize: 24, Target: dbg, Relocs: []elfobj.Reloc{
		{Offset: 0, Type: elf.R_X86_64_64, Sym: fsym},
	}}
	f.Sections = append(f.Sections, rela, dbgRela)
	return f, text
}

func TestConvertRelocations(t *testing.T) {
	f, _ := klpTestObject()
	moved, err := ConvertRelocations(f, nil)
	if err != nil {
		t.Fatal(err)
	}
	if moved != 3 {
		t.Errorf("moved %d relocations, want 3", moved)
	}
	data, err := f.Write()
	if err != nil {
		t.Fatal(err)
	}
	// Read back what a loader would see.
	g, err := elfobj.Read(data)
	if err != nil {
		t.Fatal(err)
	}
	type want struct {
		relocs []string // symbol@offset
	}
	wants := map[string]want{
		".rela.text.f":              {relocs: []string{"_printk@1"}},
		".klp.rela.vmlinux..text.f": {relocs: []string{".klp.sym.vmlinux.counter,2@8", ".klp.sym.vmlinux.counter,2@24"}},
		".klp.rela.foo..text.f":     {relocs: []string{".klp.sym.foo.helper,0@16"}},
		".rela.debug_info":          {relocs: []string{"livefix_u0_f@0"}},
	}
	seen := map[string]bool{}
	for _, s := range g.Sections {
		if !s.IsRela() {
			continue
		}
		w, ok := wants[s.Name]
		if !ok {
			t.Errorf("unexpected relocation section %s", s.Name)
			continue
		}
		seen[s.Name] = true
		var got []string
		for _, r := range s.Relocs {
			got = append(got, r.Sym.Name+"@"+strconv.FormatUint(r.Offset, 10))
		}
		if strings.Join(got, " ") != strings.Join(w.relocs, " ") {
			t.Errorf("%s relocations = %v, want %v", s.Name, got, w.relocs)
		}
		isKlp := strings.HasPrefix(s.Name, ".klp.rela.")
		wantFlags := elf.SectionFlag(0)
		if isKlp {
			wantFlags = elfobj.SHFRelaLivepatch | elf.SHF_ALLOC
		}
		if s.Flags&(elfobj.SHFRelaLivepatch|elf.SHF_ALLOC) != wantFlags {
			t.Errorf("%s flags %#x, want livepatch|alloc bits %#x", s.Name, uint64(s.Flags), uint64(wantFlags))
		}
		if s.Target == nil || s.Target.Name != strings.TrimPrefix(strings.TrimPrefix(strings.TrimPrefix(s.Name, ".klp.rela.vmlinux."), ".klp.rela.foo."), ".rela") {
			t.Errorf("%s applies to %v", s.Name, s.Target)
		}
	}
	for name := range wants {
		if !seen[name] {
			t.Errorf("missing relocation section %s", name)
		}
	}
	for _, s := range g.Symbols[1:] {
		klp := strings.HasPrefix(s.Name, ".klp.sym.")
		if klp != (s.Shndx == elfobj.SHNLivepatch) {
			t.Errorf("symbol %s has section index %#x", s.Name, uint16(s.Shndx))
		}
	}
}

func TestConvertRelocationsErrors(t *testing.T) {
	tests := []struct {
		name string
		edit func(f *elfobj.File)
		want string
	}{
		{"malformed klp name", func(f *elfobj.File) { f.Symbols[3].Name = ".klp.sym.counter" }, "not of the form"},
		{"klp reference from an unloaded section", func(f *elfobj.File) {
			f.Sections[len(f.Sections)-1].Relocs[0].Sym = f.Symbols[3]
		}, "not loaded"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, _ := klpTestObject()
			tc.edit(f)
			_, err := ConvertRelocations(f, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestSympos(t *testing.T) {
	const m = `ffffffff81000000 T _stext
ffffffff81000010 t c_start
ffffffff81000020 t c_next
ffffffff81000030 t other_a
ffffffff81000040 t dup
ffffffff81000050 t show_console_dev
ffffffff81000060 t c_start
ffffffff81000070 t c_next
ffffffff81000080 t c_stop
ffffffff81000090 T dup
ffffffff810000a0 t lonely
ffffffff810000b0 t lonely
ffffffff810000c0 t c_next
ffffffff810000d0 t c_start
ffffffff810000e0 t only_once
ffffffff810000f0 t mod_sym [somemod]
`
	syms, err := ParseKallsyms(strings.NewReader(m))
	if err != nil {
		t.Fatal(err)
	}
	near := map[string]bool{"show_console_dev": true, "c_stop": true, "c_start": true}
	tests := []struct {
		name    string
		sym     string
		local   bool
		want    int
		wantErr bool
		noNear  bool // the unit's symbols are unknown
	}{
		{"unique gets 0", "only_once", true, 0, false, false},
		{"static picked by its neighbours", "c_next", true, 2, false, false},
		{"global picked among statics", "dup", false, 2, false, false},
		{"ambiguous without neighbours", "lonely", true, 0, true, true},
		{"missing", "nope", true, 0, true, false},
		{"module symbols ignored", "mod_sym", true, 0, true, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := near
			if tc.noNear {
				n = nil
			}
			got, err := syms.Sympos(tc.sym, tc.local, "consoles.c", n)
			var se *SymposError
			if tc.wantErr {
				if !errors.As(err, &se) {
					t.Fatalf("err = %v, want a *SymposError", err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("Sympos(%s) = %d, %v; want %d", tc.sym, got, err, tc.want)
			}
		})
	}
}

func TestModuleSymposByFile(t *testing.T) {
	s := newSymbols("foo")
	s.add("helper", false, "a.c")
	s.add("x", false, "a.c")
	s.add("helper", false, "b.c")
	s.add("y", false, "b.c")
	for _, tc := range []struct {
		file string
		want int
	}{{"a.c", 1}, {"b.c", 2}} {
		got, err := s.Sympos("helper", true, tc.file, nil)
		if err != nil || got != tc.want {
			t.Errorf("Sympos(helper, %s) = %d, %v; want %d", tc.file, got, err, tc.want)
		}
	}
}

// TestBzImageBuildID builds a fake bzImage around a gzip-compressed ELF
// whose build-id note is known.
func TestBzImageBuildID(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(exe) // the test binary has a Go build-id note; use any ELF with a GNU note
	if err != nil {
		t.Fatal(err)
	}
	want, werr := elfBuildID(raw)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(raw)
	zw.Close()
	img := make([]byte, 5*512)
	img[0x1f1] = 4
	copy(img[0x202:], "HdrS")
	binary.LittleEndian.PutUint32(img[0x248:], 16)
	binary.LittleEndian.PutUint32(img[0x24c:], uint32(gz.Len()))
	img = append(img, make([]byte, 16)...)
	img = append(img, gz.Bytes()...)
	img = append(img, 1, 2, 3, 4) // the kernel's appended size
	got, err := bzImageBuildID(context.Background(), img)
	if werr != nil {
		if err == nil {
			t.Fatalf("got build-id %x from an image without one", got)
		}
		return
	}
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("bzImageBuildID = %x, %v; want %x", got, err, want)
	}
	if _, err := bzImageBuildID(context.Background(), []byte("not a kernel")); err == nil {
		t.Error("accepted a non-bzImage")
	}
}

func TestObjectOf(t *testing.T) {
	tree := t.TempDir()
	mods := t.TempDir()
	write := func(p, s string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(tree, "fs/proc/Makefile"), "obj-y += proc.o\nproc-y := nommu.o task_mmu.o\nproc-y += cmdline.o consoles.o\n")
	write(filepath.Join(tree, "fs/ext4/Makefile"), "obj-$(CONFIG_EXT4_FS) += ext4.o\n\next4-y\t:= balloc.o bitmap.o \\\n\t\tinode.o super.o # comment\n")
	write(filepath.Join(tree, "drivers/misc/Makefile"), "obj-$(CONFIG_DUMMY_IRQ) += dummy-irq.o\nobj-y += builtin.o\n")
	write(filepath.Join(mods, "modules.order"), "kernel/fs/ext4/ext4.ko\nkernel/drivers/misc/dummy-irq.ko\n")
	tests := []struct {
		src, want string
		override  map[string]string
	}{
		{"fs/proc/cmdline.c", "vmlinux", nil},
		{"fs/ext4/inode.c", "ext4", nil},
		{"drivers/misc/dummy-irq.c", "dummy_irq", nil},
		{"drivers/misc/builtin.c", "vmlinux", nil},
		{"fs/proc/cmdline.c", "my_mod", map[string]string{"fs/proc/cmdline.c": "my-mod"}},
	}
	for _, tc := range tests {
		got, err := ObjectOf(tree, mods, tc.src, tc.override)
		if err != nil || got != tc.want {
			t.Errorf("ObjectOf(%s) = %q, %v; want %q", tc.src, got, err, tc.want)
		}
	}
}
