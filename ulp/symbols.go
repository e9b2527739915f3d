package ulp

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
)

// tsym is a defined symbol of a linked ELF object (file addresses).
type tsym struct {
	name  string
	value uint64
	size  uint64
	typ   elf.SymType
	bind  elf.SymBind
}

// image is what patching needs from a linked executable or shared
// library. Addresses are ELF virtual addresses (add the load bias).
type image struct {
	path      string
	loads     []elf.ProgHeader
	hasSymtab bool
	soname    string
	// globals: defined global and weak symbols (symtab and dynsym).
	globals map[string]tsym
	// exported: defined symbols of the dynamic symbol table, default
	// version, as other objects see them.
	exported map[string]tsym
	// files: STT_FILE name -> local symbols of that file.
	files map[string]map[string][]tsym
	// locals: every local symbol by name.
	locals map[string][]tsym
	// imports: symbol name -> addresses of the object's own GOT slots
	// that the dynamic linker fills with that symbol's address.
	imports map[string][]uint64
	// got: symbol name -> the object's GOT slots for it (GLOB_DAT and
	// JUMP_SLOT relocations only, no addend): where the object's own code
	// finds that symbol, interposition and copy relocations included.
	got map[string][]uint64
	// tpoff: symbol name -> GOT slot holding its TLS offset (TPOFF64).
	tpoff map[string]uint64
	// dtpmod: GOT slots holding this object's TLS module id (DTPMOD64
	// against a symbol it defines itself, or against no symbol).
	dtpmod []uint64
	// irel: resolver address -> GOT slot of an R_X86_64_IRELATIVE
	// relocation with that resolver: after relocation the slot holds the
	// implementation the IFUNC chose in this process.
	irel map[uint64]uint64
	tls  *elf.ProgHeader
}

var imageCache struct {
	sync.Mutex
	m map[string]*image
}

// loadImage reads path (cached under key, normally the build-id).
func loadImage(key, path string) (*image, error) {
	imageCache.Lock()
	im := imageCache.m[key]
	imageCache.Unlock()
	if im != nil {
		// Same content, but read code through this caller's path (the
		// cached one may belong to a process that has exited).
		c := *im
		c.path = path
		return &c, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open mapped object: %w", err)
	}
	defer f.Close()
	im, err = readImage(f, nil)
	if err != nil {
		return nil, fmt.Errorf("read symbols of %s: %w", path, err)
	}
	im.path = path
	if key != "" {
		imageCache.Lock()
		if imageCache.m == nil {
			imageCache.m = map[string]*image{}
		}
		imageCache.m[key] = im
		imageCache.Unlock()
	}
	return im, nil
}

// readImage reads a linked object; if it has no .symtab and dbg is not
// nil, the symbol table comes from dbg (its separate debug file).
func readImage(r io.ReaderAt, dbg io.ReaderAt) (*image, error) {
	f, err := elf.NewFile(r)
	if err != nil {
		return nil, err
	}
	if f.Machine != elf.EM_X86_64 || f.Class != elf.ELFCLASS64 {
		return nil, fmt.Errorf("not an x86-64 ELF object (%v, %v)", f.Machine, f.Class)
	}
	im := &image{
		globals:  map[string]tsym{},
		exported: map[string]tsym{},
		files:    map[string]map[string][]tsym{},
		locals:   map[string][]tsym{},
		imports:  map[string][]uint64{},
		got:      map[string][]uint64{},
		tpoff:    map[string]uint64{},
		irel:     map[uint64]uint64{},
	}
	for i := range f.Progs {
		if f.Progs[i].Type == elf.PT_LOAD {
			im.loads = append(im.loads, f.Progs[i].ProgHeader)
		}
		if f.Progs[i].Type == elf.PT_TLS {
			ph := f.Progs[i].ProgHeader
			im.tls = &ph
		}
	}
	if libs, err := f.DynString(elf.DT_SONAME); err == nil && len(libs) > 0 {
		im.soname = libs[0]
	}
	syms, err := f.Symbols()
	if errors.Is(err, elf.ErrNoSymbols) && dbg != nil {
		df, derr := elf.NewFile(dbg)
		if derr != nil {
			return nil, fmt.Errorf("debug file: %w", derr)
		}
		syms, err = df.Symbols()
	}
	switch {
	case err == nil:
		im.hasSymtab = true
		file := ""
		for _, s := range syms {
			typ, bind := elf.ST_TYPE(s.Info), elf.ST_BIND(s.Info)
			if typ == elf.STT_FILE {
				file = s.Name
				continue
			}
			if s.Section == elf.SHN_UNDEF || s.Name == "" || typ == elf.STT_SECTION {
				continue
			}
			t := tsym{s.Name, s.Value, s.Size, typ, bind}
			if bind == elf.STB_LOCAL {
				if im.files[file] == nil {
					im.files[file] = map[string][]tsym{}
				}
				im.files[file][s.Name] = append(im.files[file][s.Name], t)
				im.locals[s.Name] = append(im.locals[s.Name], t)
				continue
			}
			addGlobal(im.globals, t)
		}
	case !errors.Is(err, elf.ErrNoSymbols):
		return nil, err
	}
	dyn, err := f.DynamicSymbols()
	if err != nil && !errors.Is(err, elf.ErrNoSymbols) {
		return nil, err
	}
	for _, s := range dyn {
		typ, bind := elf.ST_TYPE(s.Info), elf.ST_BIND(s.Info)
		if s.Section == elf.SHN_UNDEF || s.Name == "" || bind == elf.STB_LOCAL {
			continue
		}
		t := tsym{s.Name, s.Value, s.Size, typ, bind}
		if _, ok := im.globals[s.Name]; !ok {
			addGlobal(im.globals, t)
		}
		if s.HasVersion && s.VersionIndex.IsHidden() {
			continue // a non-default version (memcpy@GLIBC_2.2.5)
		}
		if elf.ST_VISIBILITY(s.Other) == elf.STV_DEFAULT || elf.ST_VISIBILITY(s.Other) == elf.STV_PROTECTED {
			addGlobal(im.exported, t)
		}
	}
	if err := readDynRelocs(f, dyn, im); err != nil {
		return nil, err
	}
	return im, nil
}

func addGlobal(m map[string]tsym, t tsym) {
	if old, ok := m[t.name]; ok && old.bind == elf.STB_GLOBAL {
		return
	}
	m[t.name] = t
}

// readDynRelocs records the GOT slots the dynamic linker fills.
func readDynRelocs(f *elf.File, dyn []elf.Symbol, im *image) error {
	for _, s := range f.Sections {
		if s.Type != elf.SHT_RELA {
			continue
		}
		if s.Link == 0 || int(s.Link) >= len(f.Sections) || f.Sections[s.Link].Type != elf.SHT_DYNSYM {
			continue
		}
		data, err := s.Data()
		if err != nil {
			return fmt.Errorf("read %s: %w", s.Name, err)
		}
		for i := 0; i+24 <= len(data); i += 24 {
			off := f.ByteOrder.Uint64(data[i:])
			info := f.ByteOrder.Uint64(data[i+8:])
			typ, si := elf.R_X86_64(info&0xffffffff), info>>32
			var sym *elf.Symbol
			if si > 0 && int(si) <= len(dyn) {
				sym = &dyn[si-1]
			}
			switch typ {
			case elf.R_X86_64_GLOB_DAT, elf.R_X86_64_JMP_SLOT, elf.R_X86_64_64:
				if sym != nil && sym.Name != "" {
					im.imports[sym.Name] = append(im.imports[sym.Name], off)
					if typ != elf.R_X86_64_64 {
						im.got[sym.Name] = append(im.got[sym.Name], off)
					}
				}
			case elf.R_X86_64_TPOFF64:
				if sym != nil && sym.Name != "" {
					im.tpoff[sym.Name] = off
				}
			case elf.R_X86_64_DTPMOD64:
				if sym == nil || sym.Section != elf.SHN_UNDEF {
					im.dtpmod = append(im.dtpmod, off)
				}
			case elf.R_X86_64_IRELATIVE:
				im.irel[f.ByteOrder.Uint64(data[i+16:])] = off
			}
		}
	}
	return nil
}

// local finds the static symbol name of source file file; file may be
// empty (then the name must be unique among all locals).
func (im *image) local(file, name string) (tsym, error) {
	if !im.hasSymtab {
		return tsym{}, fmt.Errorf("static symbol %s: the target has no symbol table (stripped); build the patch against an unstripped target", name)
	}
	if file != "" {
		if ss := im.files[file][name]; len(ss) == 1 {
			return ss[0], nil
		} else if len(ss) > 1 {
			return tsym{}, fmt.Errorf("static symbol %s appears %d times in file %s of the target", name, len(ss), file)
		}
	}
	ss := im.locals[name]
	switch len(ss) {
	case 1:
		return ss[0], nil
	case 0:
		// A static that the linker kept global (or LTO promoted).
		if g, ok := im.globals[name]; ok {
			return g, nil
		}
		return tsym{}, fmt.Errorf("static symbol %s of %s is not in the target's symbol table", name, orUnknown(file))
	}
	return tsym{}, fmt.Errorf("static symbol %s is ambiguous: %d statics of that name and none in file %s", name, len(ss), orUnknown(file))
}

func orUnknown(s string) string {
	if s == "" {
		return "(unknown file)"
	}
	return s
}

// code reads n bytes of the file at virtual address vaddr.
func (im *image) code(vaddr uint64, n int) ([]byte, error) {
	for _, p := range im.loads {
		if vaddr >= p.Vaddr && vaddr+uint64(n) <= p.Vaddr+p.Filesz {
			f, err := os.Open(im.path)
			if err != nil {
				return nil, err
			}
			defer f.Close()
			b := make([]byte, n)
			if _, err := f.ReadAt(b, int64(p.Off+vaddr-p.Vaddr)); err != nil {
				return nil, err
			}
			return b, nil
		}
	}
	return nil, fmt.Errorf("address %#x+%d is not in a loaded segment of %s", vaddr, n, im.path)
}

// matches reports whether the function t of the image is the code f was
// built from (ignoring the bytes relocations fill in).
func (im *image) matches(t tsym, f *Func) (bool, error) {
	if f.Code == nil {
		return true, nil // nothing to compare with
	}
	if t.size != uint64(len(f.Code)) {
		return false, nil
	}
	b, err := im.code(t.value, len(f.Code))
	if err != nil {
		return false, err
	}
	unrelax(b, f)
	for _, h := range f.Holes {
		if uint64(h[0])+uint64(h[1]) > uint64(len(b)) {
			return false, fmt.Errorf("function %s: relocation hole %v past its end", f.OrigName, h)
		}
		clear(b[h[0] : h[0]+h[1]])
	}
	return bytes.Equal(b, f.Code), nil
}

// findFunc returns the function of the target that f redirects: by name
// (among the statics of f's source file for a static function) and,
// when several candidates remain, the one whose code matches.
func (im *image) findFunc(file string, f *Func) (tsym, error) {
	var cands []tsym
	if f.Addr != 0 {
		// Located when the patch was built (possibly through a debug
		// file): the build-id guarantees the same file.
		cands = append(cands, tsym{f.OrigName, f.Addr, f.Size, elf.STT_FUNC, elf.STB_LOCAL})
	} else if g, ok := im.globals[f.OrigName]; ok && !f.Local {
		cands = append(cands, g)
	} else if !im.hasSymtab {
		return tsym{}, fmt.Errorf("static function %s: the target has no symbol table (stripped); patch an unstripped build", f.OrigName)
	} else if ss := im.files[file][f.OrigName]; len(ss) > 0 {
		cands = ss
	} else {
		cands = im.locals[f.OrigName]
	}
	if len(cands) == 0 {
		return tsym{}, fmt.Errorf("function %s (%s) is not in the target's symbol table", f.OrigName, orUnknown(file))
	}
	var hit []tsym
	for _, c := range cands {
		ok, err := im.matches(c, f)
		if err != nil {
			return tsym{}, err
		}
		if ok {
			hit = append(hit, c)
		}
	}
	switch len(hit) {
	case 1:
		return hit[0], nil
	case 0:
		return tsym{}, fmt.Errorf("function %s in the target does not match the code the patch was built from (was the target built from this source with the same compiler and flags?)", f.OrigName)
	}
	return tsym{}, fmt.Errorf("function %s is ambiguous: %d identical statics of that name", f.OrigName, len(hit))
}

// coldPart finds the .cold part of function name of source file file.
func (im *image) coldPart(file, name string) (tsym, bool) {
	for _, n := range []string{name + ".cold", name + ".cold.0"} {
		if ss := im.files[file][n]; len(ss) == 1 {
			return ss[0], true
		}
		if ss := im.locals[n]; len(ss) == 1 {
			return ss[0], true
		}
	}
	return tsym{}, false
}
