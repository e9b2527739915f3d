package ulp

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sort"

	"golang.org/x/sys/unix"

	"github.com/livefix/livefix/internal/proc"
)

// The stack check unwinds each thread's stack with the call frame
// information of the mapped objects (.eh_frame, found through
// .eh_frame_hdr's sorted table), so that only real return addresses
// count: a conservative scan of every stack word also sees stale return
// addresses left below the live frames (a worker that called the patched
// function and now sleeps in usleep keeps one), and would delay a patch
// forever. Signal frames are followed through the ucontext the kernel
// saved, also when the handler runs on a sigaltstack (the interrupted
// frames are on another stack). Where unwinding cannot continue (code
// without CFI, such as a patch's own code or JIT code; a CFA given as a
// DWARF expression), the rest of that stack is scanned conservatively,
// as before.

// ehTable is the unwind information of one linked object.
type ehTable struct {
	hdr, frame         []byte
	hdrAddr, frameAddr uint64 // ELF virtual addresses of the sections
	// The sorted search table of .eh_frame_hdr: read in place (sdata4,
	// 8 bytes an entry, datarel: the encoding GNU linkers write), else
	// decoded into table.
	sdata4 []byte
	table  []ehEntry
	// mapping is the file's read-only mapping the sections are in.
	mapping []byte
}

type ehEntry struct{ pc, fde uint64 } // both virtual addresses

// find returns the address of the FDE of the last table entry at or
// below pc.
func (t *ehTable) find(pc uint64) (uint64, bool) {
	if t.sdata4 == nil {
		i := sort.Search(len(t.table), func(i int) bool { return t.table[i].pc > pc }) - 1
		if i < 0 {
			return 0, false
		}
		return t.table[i].fde, true
	}
	at := func(i, field int) uint64 {
		return t.hdrAddr + uint64(int64(int32(binary.LittleEndian.Uint32(t.sdata4[8*i+4*field:]))))
	}
	i := sort.Search(len(t.sdata4)/8, func(i int) bool { return at(i, 0) > pc }) - 1
	if i < 0 {
		return 0, false
	}
	return at(i, 1), true
}

// readEH maps the object's file read-only and takes its .eh_frame_hdr and
// .eh_frame from the mapping, without copying them: read into the heap,
// libc's alone were 180 KB of fresh pages, faulted in by every patch
// command (about a third of its page faults), and decoding the search
// table cost as much again. The objects are those the target has mapped:
// their files are replaced by rename, not truncated. The mapping lasts
// until close: a livefix process must not itself look like one that maps
// a target (a watcher scans every process's maps).
func readEH(path string) *ehTable {
	file, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer file.Close()
	st, err := file.Stat()
	if err != nil || st.Size() <= 0 || st.Size() != int64(int(st.Size())) {
		return nil
	}
	mem, err := unix.Mmap(int(file.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_PRIVATE)
	if err != nil {
		return nil
	}
	t := ehFromImage(mem)
	if t == nil {
		unix.Munmap(mem)
		return nil
	}
	t.mapping = mem
	return t
}

// close unmaps what readEH mapped; t is not used after.
func (t *ehTable) close() {
	if t.mapping != nil {
		unix.Munmap(t.mapping)
		t.mapping, t.hdr, t.frame, t.sdata4 = nil, nil, nil, nil
	}
}

// ehFromImage finds the unwind tables in the bytes of an ELF file.
func ehFromImage(mem []byte) *ehTable {
	f, err := elf.NewFile(bytes.NewReader(mem))
	if err != nil {
		return nil
	}
	hs, fs := f.Section(".eh_frame_hdr"), f.Section(".eh_frame")
	if hs == nil || fs == nil || hs.Type == elf.SHT_NOBITS || fs.Type == elf.SHT_NOBITS {
		return nil
	}
	section := func(s *elf.Section) []byte {
		if s.Flags&elf.SHF_COMPRESSED != 0 || s.Offset > uint64(len(mem)) || s.Size > uint64(len(mem))-s.Offset {
			return nil
		}
		return mem[s.Offset : s.Offset+s.Size : s.Offset+s.Size]
	}
	t := &ehTable{hdrAddr: hs.Addr, frameAddr: fs.Addr, hdr: section(hs), frame: section(fs)}
	if t.hdr == nil || t.frame == nil || len(t.hdr) < 4 || t.hdr[0] != 1 {
		return nil
	}
	r := ehReader{b: t.hdr, base: t.hdrAddr, pos: 4}
	if _, err := r.ptr(t.hdr[1]); err != nil {
		return nil
	}
	n, err := r.ptr(t.hdr[2])
	if err != nil || n > uint64(len(t.hdr)) {
		return nil
	}
	if t.hdr[3] == 0x3b { // DW_EH_PE_datarel | DW_EH_PE_sdata4
		if n*8 > uint64(len(t.hdr)-r.pos) {
			return nil
		}
		t.sdata4 = t.hdr[r.pos : r.pos+int(n)*8]
		return t
	}
	for i := uint64(0); i < n; i++ {
		pc, err1 := r.ptr(t.hdr[3])
		fde, err2 := r.ptr(t.hdr[3])
		if err1 != nil || err2 != nil {
			return nil
		}
		t.table = append(t.table, ehEntry{pc, fde})
	}
	sort.Slice(t.table, func(i, j int) bool { return t.table[i].pc < t.table[j].pc })
	return t
}

// ehReader decodes DWARF/EH data of a section at virtual address base.
type ehReader struct {
	b    []byte
	base uint64
	pos  int
}

var errEH = errors.New("malformed unwind information")

func (r *ehReader) u8() (byte, error) {
	if r.pos >= len(r.b) {
		return 0, errEH
	}
	r.pos++
	return r.b[r.pos-1], nil
}

func (r *ehReader) fixed(n int) (uint64, error) {
	if r.pos+n > len(r.b) || r.pos < 0 {
		return 0, errEH
	}
	var v uint64
	for i := n - 1; i >= 0; i-- {
		v = v<<8 | uint64(r.b[r.pos+i])
	}
	r.pos += n
	return v, nil
}

func (r *ehReader) uleb() (uint64, error) {
	var v uint64
	for shift := uint(0); shift < 64; shift += 7 {
		c, err := r.u8()
		if err != nil {
			return 0, err
		}
		v |= uint64(c&0x7f) << shift
		if c&0x80 == 0 {
			return v, nil
		}
	}
	return 0, errEH
}

func (r *ehReader) sleb() (int64, error) {
	var v int64
	shift := uint(0)
	for {
		c, err := r.u8()
		if err != nil {
			return 0, err
		}
		v |= int64(c&0x7f) << shift
		shift += 7
		if c&0x80 == 0 {
			if shift < 64 && c&0x40 != 0 {
				v |= -1 << shift
			}
			return v, nil
		}
		if shift >= 64 {
			return 0, errEH
		}
	}
}

// ptr reads a pointer in DW_EH_PE encoding enc (pcrel and datarel, the
// forms GNU toolchains emit; datarel is relative to the section start).
func (r *ehReader) ptr(enc byte) (uint64, error) {
	if enc == 0xff {
		return 0, nil
	}
	at := r.base + uint64(r.pos)
	var v uint64
	var err error
	switch enc & 0x0f {
	case 0x00:
		v, err = r.fixed(8)
	case 0x01:
		v, err = r.uleb()
	case 0x02:
		v, err = r.fixed(2)
	case 0x03:
		v, err = r.fixed(4)
	case 0x04, 0x0c:
		v, err = r.fixed(8)
	case 0x09:
		var s int64
		s, err = r.sleb()
		v = uint64(s)
	case 0x0a:
		v, err = r.fixed(2)
		v = uint64(int64(int16(v)))
	case 0x0b:
		v, err = r.fixed(4)
		v = uint64(int64(int32(v)))
	default:
		return 0, errEH
	}
	if err != nil {
		return 0, err
	}
	switch enc & 0x70 {
	case 0x00:
	case 0x10:
		v += at
	case 0x30:
		v += r.base
	default:
		return 0, errEH
	}
	return v, nil
}

// frameRule is what unwinding one frame needs: the CFA as register+offset
// and where the return address and rbp were saved.
type frameRule struct {
	cfaReg          uint64 // 6 rbp, 7 rsp
	cfaOff          int64
	cfaExpr         bool
	raOff           int64
	raUndef         bool // outermost frame (_start, clone's child)
	rbpSaved        bool
	rbpOff          int64
	rbpOther        bool // rbp restored some other way: unknown
	signal          bool // a signal trampoline's frame (augmentation "S")
	codeAlign       uint64
	dataAlign       int64
	raReg           uint64
	fdeEnc, lsdaEnc byte
}

// rule returns the frame rule at pc (a virtual address of the object).
func (t *ehTable) rule(pc uint64) (*frameRule, error) {
	fde, ok := t.find(pc)
	if !ok || fde < t.frameAddr || fde-t.frameAddr > uint64(len(t.frame)) {
		return nil, errEH
	}
	fdeOff := int(fde - t.frameAddr)
	r := ehReader{b: t.frame, base: t.frameAddr, pos: fdeOff}
	length, err := r.fixed(4)
	if err != nil || length == 0 || length == 0xffffffff {
		return nil, errEH
	}
	end := r.pos + int(length)
	if length > uint64(len(t.frame)) {
		return nil, errEH
	}
	idPos := r.pos
	cieDelta, err := r.fixed(4)
	if err != nil || cieDelta == 0 || end > len(t.frame) {
		return nil, errEH
	}
	fr, cieInstr, err := t.cie(idPos - int(cieDelta))
	if err != nil {
		return nil, err
	}
	begin, err := r.ptr(fr.fdeEnc)
	if err != nil {
		return nil, err
	}
	span, err := r.ptr(fr.fdeEnc & 0x0f)
	if err != nil {
		return nil, err
	}
	if pc < begin || pc >= begin+span {
		return nil, fmt.Errorf("no unwind information for %#x", pc)
	}
	// Augmentation data of the FDE (every CIE here has 'z'): skip it.
	n, err := r.uleb()
	if err != nil || n > uint64(len(t.frame)) {
		return nil, errEH
	}
	r.pos += int(n)
	if r.pos > end {
		return nil, errEH
	}
	st := &cfaState{}
	if err := st.run(fr, cieInstr, ^uint64(0), 0, nil); err != nil {
		return nil, err
	}
	init := map[uint64]regRule{}
	for k, v := range st.regs {
		init[k] = v
	}
	if err := st.run(fr, t.frame[r.pos:end], pc, begin, init); err != nil {
		return nil, err
	}
	return fr, nil
}

// cie parses the CIE at offset off into a fresh frameRule and returns its
// initial instructions.
func (t *ehTable) cie(off int) (*frameRule, []byte, error) {
	r := ehReader{b: t.frame, base: t.frameAddr, pos: off}
	length, err := r.fixed(4)
	if err != nil || length == 0 || length == 0xffffffff {
		return nil, nil, errEH
	}
	if length > uint64(len(t.frame)) {
		return nil, nil, errEH
	}
	end := r.pos + int(length)
	if end > len(t.frame) {
		return nil, nil, errEH
	}
	if id, err := r.fixed(4); err != nil || id != 0 {
		return nil, nil, errEH
	}
	ver, err := r.u8()
	if err != nil {
		return nil, nil, err
	}
	augStart := r.pos
	for r.pos < end && t.frame[r.pos] != 0 {
		r.pos++
	}
	aug := string(t.frame[augStart:r.pos])
	r.pos++
	if ver == 4 {
		r.pos += 2
	}
	fr := &frameRule{fdeEnc: 0}
	if fr.codeAlign, err = r.uleb(); err != nil {
		return nil, nil, err
	}
	if fr.dataAlign, err = r.sleb(); err != nil {
		return nil, nil, err
	}
	if ver == 1 {
		b, err := r.u8()
		if err != nil {
			return nil, nil, err
		}
		fr.raReg = uint64(b)
	} else if fr.raReg, err = r.uleb(); err != nil {
		return nil, nil, err
	}
	if len(aug) == 0 || aug[0] != 'z' {
		return nil, nil, fmt.Errorf("CIE augmentation %q: %w", aug, errEH)
	}
	n, err := r.uleb()
	if err != nil || n > uint64(len(t.frame)) {
		return nil, nil, errEH
	}
	dataEnd := r.pos + int(n)
	for _, c := range aug[1:] {
		switch c {
		case 'R':
			if fr.fdeEnc, err = r.u8(); err != nil {
				return nil, nil, err
			}
		case 'L':
			if fr.lsdaEnc, err = r.u8(); err != nil {
				return nil, nil, err
			}
		case 'P':
			enc, err := r.u8()
			if err != nil {
				return nil, nil, err
			}
			if _, err := r.ptr(enc); err != nil {
				return nil, nil, err
			}
		case 'S':
			fr.signal = true
		}
	}
	r.pos = dataEnd
	if r.pos > end || r.pos < 0 {
		return nil, nil, errEH
	}
	return fr, t.frame[r.pos:end], nil
}

// regRule is how one register of the caller is recovered.
type regRule struct {
	kind byte // 0 same/unset, 'o' offset from CFA, 'u' undefined, 'x' other
	off  int64
}

type cfaState struct {
	cfaReg  uint64
	cfaOff  int64
	cfaExpr bool
	regs    map[uint64]regRule
}

// run executes CFA instructions until the location passes pc, updating
// fr's CFA and register rules. init holds the CIE's rules for
// DW_CFA_restore.
func (st *cfaState) run(fr *frameRule, ins []byte, pc, loc uint64, init map[uint64]regRule) error {
	if st.regs == nil {
		st.regs = map[uint64]regRule{}
	}
	type saved struct {
		cfaReg  uint64
		cfaOff  int64
		cfaExpr bool
		regs    map[uint64]regRule
	}
	var stack []saved
	r := ehReader{b: ins}
	setReg := func(reg uint64, rr regRule) { st.regs[reg] = rr }
	advance := func(d uint64) bool {
		loc += d * fr.codeAlign
		return loc > pc
	}
	for r.pos < len(ins) {
		op, _ := r.u8()
		arg := uint64(op & 0x3f)
		var err error
		switch op >> 6 {
		case 1:
			if advance(arg) {
				goto done
			}
			continue
		case 2:
			o, err := r.uleb()
			if err != nil {
				return err
			}
			setReg(arg, regRule{'o', int64(o) * fr.dataAlign})
			continue
		case 3:
			if rr, ok := init[arg]; ok {
				setReg(arg, rr)
			} else {
				delete(st.regs, arg)
			}
			continue
		}
		switch op {
		case 0x00: // nop
		case 0x01: // set_loc
			v, err := r.ptr(fr.fdeEnc)
			if err != nil {
				return err
			}
			loc = v
			if loc > pc {
				goto done
			}
		case 0x02, 0x03, 0x04:
			var d uint64
			d, err = r.fixed(map[byte]int{2: 1, 3: 2, 4: 4}[op])
			if err != nil {
				return err
			}
			if advance(d) {
				goto done
			}
		case 0x05, 0x14: // offset_extended, val_offset (val: not a save slot)
			reg, err1 := r.uleb()
			o, err2 := r.uleb()
			if err1 != nil || err2 != nil {
				return errEH
			}
			if op == 0x05 {
				setReg(reg, regRule{'o', int64(o) * fr.dataAlign})
			} else {
				setReg(reg, regRule{'x', 0})
			}
		case 0x06: // restore_extended
			reg, err := r.uleb()
			if err != nil {
				return err
			}
			if rr, ok := init[reg]; ok {
				setReg(reg, rr)
			} else {
				delete(st.regs, reg)
			}
		case 0x07: // undefined
			reg, err := r.uleb()
			if err != nil {
				return err
			}
			setReg(reg, regRule{'u', 0})
		case 0x08: // same_value
			reg, err := r.uleb()
			if err != nil {
				return err
			}
			delete(st.regs, reg)
		case 0x09: // register
			reg, err1 := r.uleb()
			_, err2 := r.uleb()
			if err1 != nil || err2 != nil {
				return errEH
			}
			setReg(reg, regRule{'x', 0})
		case 0x0a: // remember_state
			cp := map[uint64]regRule{}
			for k, v := range st.regs {
				cp[k] = v
			}
			stack = append(stack, saved{st.cfaReg, st.cfaOff, st.cfaExpr, cp})
		case 0x0b: // restore_state
			if len(stack) == 0 {
				return errEH
			}
			s := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			st.cfaReg, st.cfaOff, st.cfaExpr, st.regs = s.cfaReg, s.cfaOff, s.cfaExpr, s.regs
		case 0x0c: // def_cfa
			reg, err1 := r.uleb()
			o, err2 := r.uleb()
			if err1 != nil || err2 != nil {
				return errEH
			}
			st.cfaReg, st.cfaOff, st.cfaExpr = reg, int64(o), false
		case 0x0d: // def_cfa_register
			reg, err := r.uleb()
			if err != nil {
				return err
			}
			st.cfaReg, st.cfaExpr = reg, false
		case 0x0e: // def_cfa_offset
			o, err := r.uleb()
			if err != nil {
				return err
			}
			st.cfaOff = int64(o)
		case 0x0f: // def_cfa_expression
			n, err := r.uleb()
			if err != nil || n > uint64(len(ins)) {
				return errEH
			}
			r.pos += int(n)
			st.cfaExpr = true
		case 0x10, 0x16: // expression, val_expression
			reg, err1 := r.uleb()
			n, err2 := r.uleb()
			if err1 != nil || err2 != nil || n > uint64(len(ins)) {
				return errEH
			}
			r.pos += int(n)
			setReg(reg, regRule{'x', 0})
		case 0x11: // offset_extended_sf
			reg, err1 := r.uleb()
			o, err2 := r.sleb()
			if err1 != nil || err2 != nil {
				return errEH
			}
			setReg(reg, regRule{'o', o * fr.dataAlign})
		case 0x12: // def_cfa_sf
			reg, err1 := r.uleb()
			o, err2 := r.sleb()
			if err1 != nil || err2 != nil {
				return errEH
			}
			st.cfaReg, st.cfaOff, st.cfaExpr = reg, o*fr.dataAlign, false
		case 0x13: // def_cfa_offset_sf
			o, err := r.sleb()
			if err != nil {
				return err
			}
			st.cfaOff = o * fr.dataAlign
		case 0x15: // val_offset_sf
			reg, err1 := r.uleb()
			_, err2 := r.sleb()
			if err1 != nil || err2 != nil {
				return errEH
			}
			setReg(reg, regRule{'x', 0})
		case 0x2e: // GNU_args_size
			if _, err := r.uleb(); err != nil {
				return err
			}
		case 0x2f: // GNU_negative_offset_extended
			reg, err1 := r.uleb()
			o, err2 := r.uleb()
			if err1 != nil || err2 != nil {
				return errEH
			}
			setReg(reg, regRule{'o', -int64(o) * fr.dataAlign})
		default:
			return fmt.Errorf("CFA opcode %#x: %w", op, errEH)
		}
		if r.pos > len(ins) {
			return errEH
		}
	}
done:
	fr.cfaReg, fr.cfaOff, fr.cfaExpr = st.cfaReg, st.cfaOff, st.cfaExpr
	ra := st.regs[fr.raReg]
	fr.raUndef = ra.kind == 'u'
	fr.raOff = ra.off
	if ra.kind != 'o' && !fr.raUndef {
		fr.cfaExpr = fr.cfaExpr || ra.kind == 'x'
		if ra.kind == 0 {
			fr.raOff = -8
		}
	}
	rb := st.regs[6]
	fr.rbpSaved, fr.rbpOff, fr.rbpOther = rb.kind == 'o', rb.off, rb.kind == 'x' || rb.kind == 'u'
	return nil
}

// unwinder finds the return addresses of stopped threads.
type unwinder struct {
	objs []unwObj
}

type unwObj struct {
	lo, hi uint64 // executable mappings' extent
	bias   uint64
	eh     *ehTable
}

// newUnwinder loads the unwind tables of every object pid maps (before
// the stop: only lookups happen inside it).
func newUnwinder(pid int, objs []proc.Object) *unwinder {
	u := &unwinder{}
	for i := range objs {
		o := &objs[i]
		var lo, hi uint64
		for _, m := range o.Mappings {
			if !m.Executable() {
				continue
			}
			if lo == 0 || m.Start < lo {
				lo = m.Start
			}
			hi = max(hi, m.End)
		}
		if hi == 0 {
			continue
		}
		eh := readEH(o.Mappings[0].MapFile(pid))
		if eh == nil {
			continue
		}
		u.objs = append(u.objs, unwObj{lo, hi, o.Bias, eh})
	}
	return u
}

// unwinderLoad is an unwinder being built in the background.
type unwinderLoad struct {
	done chan struct{} // closed once u is set
	u    *unwinder
}

// loadUnwinder builds the unwinder of objs in the background. The caller
// must release it.
func loadUnwinder(pid int, objs []proc.Object) *unwinderLoad {
	l := &unwinderLoad{done: make(chan struct{})}
	go func() {
		l.u = newUnwinder(pid, objs)
		close(l.done)
	}()
	return l
}

// noUnwinder is a load of no unwinder (the stack check then scans every
// stack word).
func noUnwinder() *unwinderLoad {
	l := &unwinderLoad{done: make(chan struct{})}
	close(l.done)
	return l
}

// get waits for the unwinder (nil if there is none).
func (l *unwinderLoad) get() *unwinder {
	<-l.done
	return l.u
}

// release waits for the unwinder and unmaps its tables.
func (l *unwinderLoad) release() {
	if u := l.get(); u != nil {
		u.close()
	}
}

// close unmaps the unwind tables; u is not used after.
func (u *unwinder) close() {
	for i := range u.objs {
		u.objs[i].eh.close()
	}
}

func (u *unwinder) find(pc uint64) *unwObj {
	for i := range u.objs {
		if pc >= u.objs[i].lo && pc < u.objs[i].hi {
			return &u.objs[i]
		}
	}
	return nil
}

// stackMem is the memory of the stacks a thread's frames live on.
type stackMem struct {
	segs [][2]uint64 // start address, index into words
	all  [][]uint64
	more func(addr uint64) ([]uint64, error)
}

func (m *stackMem) word(addr uint64) (uint64, bool) {
	for i, s := range m.segs {
		w := m.all[i]
		if addr >= s[0] && addr < s[0]+uint64(len(w))*8 && (addr-s[0])%8 == 0 {
			return w[(addr-s[0])/8], true
		}
	}
	if m.more == nil || len(m.segs) > 4 {
		return 0, false
	}
	w, err := m.more(addr)
	if err != nil || len(w) == 0 {
		return 0, false
	}
	m.segs = append(m.segs, [2]uint64{addr, 0})
	m.all = append(m.all, w)
	return w[0], true
}

// Offsets in the x86-64 rt_sigframe's ucontext (from the address the
// handler returns to __restore_rt with): uc_flags, uc_link, uc_stack
// (24 bytes), then mcontext's gregs r8..r15, rdi, rsi, rbp, rbx, rdx,
// rax, rcx, rsp, rip.
const (
	ucRBP = 40 + 10*8
	ucRSP = 40 + 15*8
	ucRIP = 40 + 16*8
)

// returnAddrs returns the return addresses of the thread's frames, and
// the stack words that have to be scanned conservatively because
// unwinding stopped early (nil if it reached the outermost frame).
func (u *unwinder) returnAddrs(st proc.ThreadStack, more func(uint64) ([]uint64, error)) (ras []uint64, scan []uint64) {
	mem := &stackMem{segs: [][2]uint64{{st.Rsp, 0}}, all: [][]uint64{st.Words}, more: more}
	pc, sp, bp := st.Rip, st.Rsp, st.Rbp
	exact := true // pc is where the thread is, not a return address
	fallback := func() []uint64 {
		for i, s := range mem.segs {
			w := mem.all[i]
			if sp >= s[0] && sp < s[0]+uint64(len(w))*8 {
				return w[(sp-s[0])/8:]
			}
		}
		if w, err := more(sp); err == nil {
			return w
		}
		return st.Words
	}
	for depth := 0; depth < 1024; depth++ {
		o := u.find(pc)
		if o == nil {
			return ras, fallback()
		}
		look := pc - o.bias
		if !exact {
			look-- // the call instruction, which may be a function's last
		}
		fr, err := o.eh.rule(look)
		if err != nil {
			return ras, fallback()
		}
		if fr.signal {
			// pc is the signal trampoline: sp is at the ucontext.
			rip, ok1 := mem.word(sp + ucRIP)
			rsp, ok2 := mem.word(sp + ucRSP)
			rbp, ok3 := mem.word(sp + ucRBP)
			if !ok1 || !ok2 || !ok3 {
				return ras, fallback()
			}
			pc, sp, bp, exact = rip, rsp, rbp, true
			ras = append(ras, pc)
			continue
		}
		if fr.cfaExpr || (fr.cfaReg != 6 && fr.cfaReg != 7) {
			return ras, fallback()
		}
		base := sp
		if fr.cfaReg == 6 {
			base = bp
		}
		cfa := base + uint64(fr.cfaOff)
		if fr.raUndef {
			return ras, nil // the outermost frame
		}
		ra, ok := mem.word(cfa + uint64(fr.raOff))
		if !ok {
			return ras, fallback()
		}
		if fr.rbpSaved {
			if bp, ok = mem.word(cfa + uint64(fr.rbpOff)); !ok {
				return ras, fallback()
			}
		} else if fr.rbpOther {
			bp = 0
		}
		if ra == 0 {
			return ras, nil
		}
		if cfa <= sp && depth > 0 {
			return ras, fallback() // not making progress
		}
		pc, sp, exact = ra, cfa, false
		ras = append(ras, ra)
	}
	return ras, fallback()
}
