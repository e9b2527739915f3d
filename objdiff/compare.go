package objdiff

import (
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"fmt"
	"strconv"

	"golang.org/x/arch/x86/x86asm"

	"github.com/livefix/livefix/elfobj"
)

// refKey names what a relocation points at so that equal keys in the two
// objects mean the same target: entities by their original name (loose
// keys use base names, for correlation itself), literals and anonymous
// tables by content.
func (d *differ) refKey(o *object, t ref, loose bool) string {
	off := strconv.FormatInt(t.off, 10)
	switch t.kind {
	case refNone:
		return "none+" + off
	case refEntity:
		if isSpecialStatic(t.ent) {
			return d.specialKey(t.ent) + "+" + off
		}
		if loose {
			return "e:" + baseName(t.ent.name()) + "+" + off
		}
		return "e:" + d.stableName(t.ent) + "+" + off
	case refExtern:
		return "x:" + t.sym.Name + "+" + off
	case refLabel:
		return "l:" + t.sym.Name + "+" + off
	case refString:
		return "s:" + strconv.Quote(string(t.content))
	case refConst:
		return "c:" + hex.EncodeToString(t.content)
	case refAnon:
		return "a:" + d.anonKey(o, t.sec, loose) + "+" + off
	default:
		return "sec:" + t.sec.Name + "+" + off
	}
}

type anonMemo struct {
	o     *object
	sec   *elfobj.Section
	loose bool
}

// anonKey fingerprints an anonymous section (a jump table, a block of
// anonymous read-only data) by its bytes and what its relocations point
// at. A section that refers back to itself through others gets its name
// only for the inner reference.
func (d *differ) anonKey(o *object, sec *elfobj.Section, loose bool) string {
	k := anonMemo{o, sec, loose}
	if v, ok := d.anonKeys[k]; ok {
		return v
	}
	d.anonKeys[k] = sec.Name + ":cycle"
	h := sha256.New()
	if sec.Type != elf.SHT_NOBITS {
		h.Write(sec.Data)
	} else {
		fmt.Fprintf(h, "nobits %d", sec.Size)
	}
	for _, r := range o.relocs[sec] {
		fmt.Fprintf(h, "|%d %d %s", r.Offset, r.Type, d.refKey(o, o.resolve(sec, r), loose))
	}
	v := sec.Name + ":" + hex.EncodeToString(h.Sum(nil)[:8])
	d.anonKeys[k] = v
	return v
}

// fingerprint is a loose content key of an entity, for correlating
// renumbered symbols before names can be trusted.
func (d *differ) fingerprint(e *entity) string {
	h := sha256.New()
	if c := e.content(); c != nil {
		h.Write(c)
	} else {
		fmt.Fprintf(h, "nobits %d", e.size())
	}
	for _, r := range e.relocs {
		fmt.Fprintf(h, "|%d %d %s", r.Offset-e.start, r.Type, d.refKey(e.obj, e.obj.resolve(e.sec, r), true))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// relocDiff compares the relocations of two correlated entities and
// returns a description of the first difference, or "".
func (d *differ) relocDiff(a, b *entity) string {
	if len(a.relocs) != len(b.relocs) {
		return fmt.Sprintf("%d relocations instead of %d", len(b.relocs), len(a.relocs))
	}
	for i := range a.relocs {
		ra, rb := a.relocs[i], b.relocs[i]
		if ra.Offset-a.start != rb.Offset-b.start || ra.Type != rb.Type {
			return fmt.Sprintf("relocation %d moved or changed type", i)
		}
		ka := d.refKey(a.obj, a.obj.resolve(a.sec, ra), false)
		kb := d.refKey(b.obj, b.obj.resolve(b.sec, rb), false)
		if ka != kb {
			return fmt.Sprintf("reference at +%#x now points at %s instead of %s", ra.Offset-a.start, shortKey(kb), shortKey(ka))
		}
	}
	return ""
}

func shortKey(k string) string {
	if len(k) > 60 {
		return k[:57] + "..."
	}
	return k
}

// lineFuncs take the caller's __LINE__ as their second argument (%esi);
// that immediate can change with a patch that only moves lines. Functions
// that merely print (printk, __warn_printk) are not here: a changed
// immediate passed to them changes what they print.
var lineFuncs = map[string]bool{
	"__might_sleep": true, "__might_resched": true, "__might_fault": true,
	"__cant_sleep": true, "__cant_migrate": true, "___might_sleep": true,
	"lockdep_rcu_suspicious": true,
}

// lineOnly reports whether two functions with identical relocations
// differ only in immediates loaded into %esi, the line argument, for a
// call to one of lineFuncs.
func (d *differ) lineOnly(a, b *entity) bool {
	ca, cb := a.content(), b.content()
	if len(ca) != len(cb) || !isCode(a.sec) {
		return false
	}
	dec := func(code []byte) ([]decoded, bool) {
		var out []decoded
		for off := uint64(0); off < uint64(len(code)); {
			in, err := x86asm.Decode(code[off:], 64)
			if err != nil || in.Len == 0 {
				return nil, false
			}
			out = append(out, decoded{in, off})
			off += uint64(in.Len)
		}
		return out, true
	}
	ia, ok1 := dec(ca)
	ib, ok2 := dec(cb)
	if !ok1 || !ok2 || len(ia) != len(ib) {
		return false
	}
	sawDiff := false
	for i := range ia {
		x, y := ia[i], ib[i]
		if x.off != y.off || x.in.Len != y.in.Len {
			return false
		}
		if bytes.Equal(ca[x.off:x.off+uint64(x.in.Len)], cb[y.off:y.off+uint64(y.in.Len)]) {
			continue
		}
		if !immMov(x.in) || !immMov(y.in) || x.in.Op != y.in.Op || x.in.Args[0] != y.in.Args[0] ||
			x.in.Args[0] != x86asm.ESI && x.in.Args[0] != x86asm.RSI {
			return false
		}
		if !callsLineFunc(b, ib[i+1:]) {
			return false
		}
		sawDiff = true
	}
	return sawDiff
}

type decoded struct {
	in  x86asm.Inst
	off uint64
}

func immMov(in x86asm.Inst) bool {
	if in.Op != x86asm.MOV {
		return false
	}
	_, reg := in.Args[0].(x86asm.Reg)
	_, imm := in.Args[1].(x86asm.Imm)
	return reg && imm
}

// callsLineFunc reports whether one of the next few instructions, before
// any branch, calls a function of lineFuncs.
func callsLineFunc(e *entity, next []decoded) bool {
	for k := 0; k < len(next) && k < 8; k++ {
		in, off := next[k].in, next[k].off
		switch in.Op {
		case x86asm.CALL, x86asm.JMP:
			for _, r := range e.relocs {
				if r.Offset-e.start > off && r.Offset-e.start < off+uint64(in.Len) {
					t := e.obj.resolve(e.sec, r)
					name := ""
					switch t.kind {
					case refExtern, refLabel:
						name = t.sym.Name
					case refEntity:
						name = t.ent.name()
					}
					return lineFuncs[name]
				}
			}
			return false
		case x86asm.RET, x86asm.JA, x86asm.JAE, x86asm.JB, x86asm.JBE, x86asm.JE, x86asm.JNE,
			x86asm.JG, x86asm.JGE, x86asm.JL, x86asm.JLE, x86asm.JS, x86asm.JNS:
			return false
		}
	}
	return false
}
