package ulp

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"

	"github.com/livefix/livefix/elfobj"
	"github.com/livefix/livefix/internal/proc"
)

// view is what Apply knows about one process before stopping it.
type view struct {
	pid    int
	target *proc.Object
	timg   *image
	objs   []proc.Object
	imgs   map[int]*image // index in objs -> image (loaded lazily)
	exe    int            // index of the main executable in objs, or -1
	mem    *os.File
}

func newView(pid int, buildID []byte) (*view, error) {
	objs, err := proc.Objects(pid)
	if err != nil {
		return nil, err
	}
	v := &view{pid: pid, objs: objs, imgs: map[int]*image{}, exe: -1}
	ti, data := -1, false
	for i := range objs {
		if bytes.Equal(objs[i].BuildID, buildID) {
			if !objs[i].Executable() {
				data = true // mapped to be read, not run: look on
				continue
			}
			ti = i
			break
		}
	}
	if ti < 0 && data {
		return nil, fmt.Errorf("pid %d maps the patch's target (build-id %s) only without execute permission, as data (a tool reading the file?): it does not run that code, and writing jumps there would change what it reads: %w", pid, hex.EncodeToString(buildID), proc.ErrNotMapped)
	}
	if ti < 0 {
		return nil, fmt.Errorf("pid %d does not map the patch's target (build-id %s): %w", pid, hex.EncodeToString(buildID), proc.ErrNotMapped)
	}
	v.target = &objs[ti]
	if entry, err := auxEntry(pid); err == nil {
		for i := range objs {
			for _, m := range objs[i].Mappings {
				if m.Contains(entry) {
					v.exe = i
				}
			}
		}
	}
	if v.timg, err = v.image(ti); err != nil {
		return nil, err
	}
	return v, nil
}

func (v *view) close() {
	if v.mem != nil {
		v.mem.Close()
	}
}

// image returns the symbols of objs[i].
func (v *view) image(i int) (*image, error) {
	if im, ok := v.imgs[i]; ok {
		return im, nil
	}
	o := &v.objs[i]
	im, err := loadImage(hex.EncodeToString(o.BuildID), o.Mappings[0].MapFile(v.pid))
	if err != nil {
		return nil, err
	}
	v.imgs[i] = im
	return im, nil
}

// read reads memory of the (running or stopped) process.
func (v *view) read(addr uint64, n int) ([]byte, error) {
	if v.mem == nil {
		f, err := os.Open(fmt.Sprintf("/proc/%d/mem", v.pid))
		if err != nil {
			return nil, fmt.Errorf("open memory of pid %d: %w", v.pid, err)
		}
		v.mem = f
	}
	b := make([]byte, n)
	if _, err := v.mem.ReadAt(b, int64(addr)); err != nil {
		return nil, fmt.Errorf("read %d bytes at %#x in pid %d: %w", n, addr, v.pid, err)
	}
	return b, nil
}

func (v *view) inObject(o *proc.Object, addr uint64) bool {
	for _, m := range o.Mappings {
		if m.Contains(addr) {
			return true
		}
	}
	return false
}

// auxEntry returns AT_ENTRY of pid: the main executable's entry point.
func auxEntry(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/auxv", pid))
	if err != nil {
		return 0, err
	}
	for i := 0; i+16 <= len(b); i += 16 {
		if binary.LittleEndian.Uint64(b[i:]) == 9 { // AT_ENTRY
			return binary.LittleEndian.Uint64(b[i+8:]), nil
		}
	}
	return 0, fmt.Errorf("no AT_ENTRY")
}

// prepare resolves p against the process and computes its layout.
func prepare(p *Patch, v *view) (*plan, error) {
	pl := &plan{refs: map[*elfobj.Symbol]*ref{}}
	for i := range p.Units {
		f, err := elfobj.Read(p.Units[i].ELF)
		if err != nil {
			return nil, fmt.Errorf("unit %s: %w", p.Units[i].Object, err)
		}
		pl.units = append(pl.units, &unitObj{u: &p.Units[i], f: f})
	}
	// Global definitions of the patch, visible to every unit.
	defs := map[string]*elfobj.Symbol{}
	for _, uo := range pl.units {
		for _, s := range uo.f.Symbols {
			if s.Section != nil && s.Bind != elf.STB_LOCAL && s.Name != "" {
				defs[s.Name] = s
			}
		}
	}
	targetCache := map[string]*ref{}
	for _, uo := range pl.units {
		ext := map[string]Extern{}
		for _, e := range uo.u.Externs {
			ext[e.Name] = e
		}
		for _, s := range uo.f.Symbols {
			if s.Index == 0 && s.Name == "" && s.Section == nil {
				continue
			}
			switch {
			case s.Section != nil:
				pl.refs[s] = &ref{name: s.DisplayName(), kind: refPatch, sec: s.Section, off: s.Value, fn: s.Type == elf.STT_FUNC}
			case s.Shndx == elf.SHN_ABS:
				pl.refs[s] = &ref{name: s.Name, kind: refTarget, addr: s.Value}
			case s.Name == "":
			default:
				if d, ok := defs[s.Name]; ok {
					pl.refs[s] = &ref{name: s.Name, kind: refPatch, sec: d.Section, off: d.Value, fn: d.Type == elf.STT_FUNC}
					continue
				}
				e, known := ext[s.Name]
				if !known {
					e = Extern{Name: s.Name, Func: s.Type == elf.STT_FUNC}
				}
				key := s.Name
				if e.Local {
					key = uo.u.File + "\x00" + s.Name
				}
				rf := targetCache[key]
				if rf == nil {
					var err error
					rf, err = v.resolve(uo.u.File, e, s.Bind == elf.STB_WEAK)
					if err != nil {
						return nil, fmt.Errorf("unit %s: %w", uo.u.Object, err)
					}
					targetCache[key] = rf
				}
				pl.refs[s] = rf
			}
		}
	}
	for _, uo := range pl.units {
		for _, fn := range uo.u.Funcs {
			var newSym *elfobj.Symbol
			for _, s := range uo.f.Symbols {
				if s.Name == fn.Name && s.Section != nil && s.Type == elf.STT_FUNC {
					newSym = s
					break
				}
			}
			if newSym == nil {
				return nil, fmt.Errorf("unit %s: replacement function %s is not defined in the patch", uo.u.Object, fn.Name)
			}
			t, err := v.timg.findFunc(uo.u.File, &fn)
			if err != nil {
				return nil, fmt.Errorf("function to replace: %w", err)
			}
			if t.typ != elf.STT_FUNC && t.typ != elf.STT_GNU_IFUNC {
				return nil, fmt.Errorf("%s in the target is not a function (%v)", fn.OrigName, t.typ)
			}
			pf := planFunc{name: fn.Name, origName: fn.OrigName, old: v.target.Bias + t.value, oldSize: t.size, newSym: newSym}
			if fn.ColdAddr != 0 {
				pf.cold, pf.coldSize = v.target.Bias+fn.ColdAddr, fn.ColdSize
			} else if c, ok := v.timg.coldPart(uo.u.File, fn.OrigName); ok {
				pf.cold, pf.coldSize = v.target.Bias+c.value, c.size
			}
			pl.funcs = append(pl.funcs, pf)
		}
	}
	sortFuncs(pl.funcs)
	for i := 1; i < len(pl.funcs); i++ {
		if pl.funcs[i].old == pl.funcs[i-1].old {
			return nil, fmt.Errorf("functions %s and %s are the same function in the target (identical code folding?)", pl.funcs[i-1].origName, pl.funcs[i].origName)
		}
	}
	if err := pl.layout(); err != nil {
		return nil, err
	}
	return pl, nil
}

// resolve finds the symbol an Extern names in the running process.
func (v *view) resolve(file string, e Extern, weak bool) (*ref, error) {
	im := v.timg
	// A global the target defines and exports but reaches through its
	// own GOT is preemptible: the dynamic linker may have bound it
	// elsewhere, most often a variable the executable copy-relocated
	// (the live copy is the executable's, the library's own is stale),
	// or a function it interposes. The patch must use what the target's
	// code uses.
	if !e.Local && e.Type != elf.STT_TLS {
		if slots := im.got[e.Name]; len(slots) > 0 {
			if b, err := v.read(v.target.Bias+slots[0], 8); err == nil {
				if a := binary.LittleEndian.Uint64(b); a != 0 && !v.inObject(v.target, a) {
					return &ref{name: e.Name, kind: refFar, fn: e.Func, addr: a}, nil
				}
			}
		}
	}
	var t tsym
	found := false
	if e.Resolved {
		t, found = tsym{e.Name, e.Addr, e.Size, e.Type, elf.STB_LOCAL}, true
	} else if e.Local {
		var err error
		if t, err = im.local(file, e.Name); err != nil {
			return nil, err
		}
		found = true
	} else if g, ok := im.globals[e.Name]; ok {
		t, found = g, true
	}
	if found {
		return v.targetRef(t, e)
	}
	// Imported by the target: use what the dynamic linker bound.
	if slots := im.imports[e.Name]; len(slots) > 0 {
		b, err := v.read(v.target.Bias+slots[0], 8)
		if err == nil {
			a := binary.LittleEndian.Uint64(b)
			if a != 0 && !v.inObject(v.target, a) {
				return &ref{name: e.Name, kind: refFar, fn: e.Func, addr: a}, nil
			}
		}
	}
	// Global scope order: the executable, then the others as mapped.
	order := []int{}
	if v.exe >= 0 {
		order = append(order, v.exe)
	}
	for i := range v.objs {
		if i != v.exe && &v.objs[i] != v.target {
			order = append(order, i)
		}
	}
	for _, i := range order {
		oim, err := v.image(i)
		if err != nil {
			continue
		}
		s, ok := oim.exported[e.Name]
		if !ok {
			continue
		}
		o := &v.objs[i]
		if s.typ == elf.STT_GNU_IFUNC {
			if a, ok := v.ifuncChoice(i, oim, s, e.Name); ok {
				return &ref{name: e.Name, kind: refFar, fn: true, addr: a}, nil
			}
			return nil, fmt.Errorf("%s in %s is an IFUNC whose implementation is chosen at run time, and no loaded object has it bound yet; call it through a function the program already uses", e.Name, o.Path)
		}
		if s.typ == elf.STT_TLS {
			return nil, fmt.Errorf("%s is a thread-local variable of another object (%s); the patch can only use thread-locals of its target", e.Name, o.Path)
		}
		return &ref{name: e.Name, kind: refFar, fn: s.typ == elf.STT_FUNC || e.Func, addr: o.Bias + s.value}, nil
	}
	if weak {
		return &ref{name: e.Name, kind: refWeak}, nil
	}
	return nil, fmt.Errorf("symbol %s is defined neither in the target %s nor in any object pid %d has loaded", e.Name, v.target.Path, v.pid)
}

// targetRef makes a ref to a symbol of the target object.
func (v *view) targetRef(t tsym, e Extern) (*ref, error) {
	r := &ref{name: t.name, kind: refTarget, fn: t.typ == elf.STT_FUNC || e.Func, addr: v.target.Bias + t.value}
	if t.typ == elf.STT_GNU_IFUNC {
		return nil, fmt.Errorf("%s in the target is an IFUNC; the patch cannot call it directly", t.name)
	}
	if t.typ != elf.STT_TLS {
		return r, nil
	}
	im := v.timg
	if im.tls == nil {
		return nil, fmt.Errorf("thread-local %s: the target has no TLS segment", t.name)
	}
	r.tls, r.tlsOff, r.addr = true, t.value, 0
	isExe := v.exe >= 0 && &v.objs[v.exe] == v.target
	if isExe {
		// Variant II (x86-64): the executable's block ends at the thread
		// pointer, its size rounded up to the segment's alignment.
		r.tpoff = int64(t.value) - int64(alignTo(im.tls.Memsz, max(im.tls.Align, 1)))
		r.tpKnown = true
		r.modID = 1
		return r, nil
	}
	if s, ok := im.tpoff[t.name]; ok {
		r.tpSlot = v.target.Bias + s
	}
	if len(im.dtpmod) > 0 {
		b, err := v.read(v.target.Bias+im.dtpmod[0], 8)
		if err == nil {
			r.modID = binary.LittleEndian.Uint64(b)
		}
	}
	return r, nil
}

// ifuncChoice finds the implementation an IFUNC of objs[i] chose in this
// process, without running its resolver: from a GOT slot some loaded
// object has bound to the symbol, else from one of the object's own
// IRELATIVE slots with that resolver (glibc calls its string functions
// internally through those).
func (v *view) ifuncChoice(i int, oim *image, s tsym, name string) (uint64, bool) {
	o := &v.objs[i]
	resolver := o.Bias + s.value
	for j := range v.objs {
		jim, err := v.image(j)
		if err != nil {
			continue
		}
		for _, slot := range jim.imports[name] {
			b, err := v.read(v.objs[j].Bias+slot, 8)
			if err != nil {
				continue
			}
			a := binary.LittleEndian.Uint64(b)
			if a != 0 && a != resolver && v.inObject(o, a) {
				return a, true
			}
		}
	}
	if slot, ok := oim.irel[s.value]; ok {
		if b, err := v.read(o.Bias+slot, 8); err == nil {
			a := binary.LittleEndian.Uint64(b)
			if a != 0 && a != resolver && v.inObject(o, a) {
				return a, true
			}
		}
	}
	return 0, false
}
