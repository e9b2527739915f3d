package ulp

// Linker relaxation. An object compiled with -fPIC (or -fno-plt) reaches
// a global symbol through the GOT: "mov sym@GOTPCREL(%rip), %reg",
// "call *sym@GOTPCREL(%rip)", "jmp *sym@GOTPCREL(%rip)" and, outside
// PIC, "test"/arithmetic with a GOT operand. When the symbol turns out to
// be defined in the same output and not preemptible (hidden, or made
// local by a version script, as distribution libraries do for their
// internal symbols), the linker rewrites the instruction (relocations
// R_X86_64_GOTPCRELX and R_X86_64_REX_GOTPCRELX allow it):
//
//	mov  sym@GOTPCREL(%rip), %reg  ->  lea sym(%rip), %reg       (8b -> 8d)
//	                               ->  mov $sym, %reg            (non-PIC: c7 /0)
//	call *sym@GOTPCREL(%rip)       ->  addr32 call sym           (ff 15 -> 67 e8; or nop e8, e8 nop)
//	jmp  *sym@GOTPCREL(%rip)       ->  jmp sym; nop              (ff 25 -> e9 .. 90)
//	test %reg, sym@GOTPCREL(%rip)  ->  test $sym, %reg           (85 -> f7 /0)
//	op   sym@GOTPCREL(%rip), %reg  ->  op $sym, %reg             (03 0b 13 1b 23 2b 33 3b -> 81 /n)
//
// The binary then differs from the compiled code in the instruction's
// opcode (and ModRM and REX) bytes, not only in the relocated field.
// unrelax recognises exactly these rewrites at the recorded sites and
// nothing else, so the comparison of a function with the target's bytes
// stays exact everywhere else.

// Relax is a GOT relocation site in a function's code: Off is the offset
// of its 4-byte field (a hole), REX whether the instruction has a REX
// prefix (R_X86_64_REX_GOTPCRELX).
type Relax struct {
	Off uint32 `json:"off"`
	REX bool   `json:"rex,omitempty"`
}

// binopExt maps the opcode of "op mem, %reg" to the /n extension of
// "81 /n" (op $imm32, %reg).
var binopExt = map[byte]byte{0x03: 0, 0x0b: 1, 0x13: 2, 0x1b: 3, 0x23: 4, 0x2b: 5, 0x33: 6, 0x3b: 7}

// unrelax replaces, in b (the target's bytes of function f), each
// instruction at a GOT relocation site of f that the linker relaxed with
// f's own bytes of that instruction, so that comparing b with f.Code
// (holes masked) compares everything else exactly.
func unrelax(b []byte, f *Func) {
	c := f.Code
	for _, r := range f.Relax {
		off := int(r.Off)
		if off < 2 || off+4 > len(c) || len(b) != len(c) {
			continue
		}
		start := off - 2
		if r.REX {
			if off < 3 {
				continue
			}
			start = off - 3
		}
		if relaxed(c[start:off+4], b[start:off+4], r.REX) {
			copy(b[start:off+4], c[start:off+4])
		}
	}
}

// relaxed reports whether t (the target's bytes of one instruction) is
// a linker relaxation of o (the compiled instruction, with or without a
// REX prefix, its last 4 bytes the GOT field).
func relaxed(o, t []byte, rex bool) bool {
	var ro, rt byte // REX prefixes, 0 if none
	if rex {
		ro, rt = o[0], t[0]
		if ro&0xf0 != 0x40 {
			return false
		}
		o, t = o[1:], t[1:]
	}
	op, modrm := o[0], o[1]
	if modrm&0xc7 != 0x05 { // not RIP-relative: not a GOT load
		return false
	}
	reg := modrm >> 3 & 7
	// REX.R names the register in ModRM.reg; after a rewrite into the
	// register form it names ModRM.rm, so it becomes REX.B.
	rtoB := ro&^0x04 | ro&0x04>>2
	switch {
	case op == 0xff && modrm == 0x15: // call *GOT
		return rt == ro && (t[0] == 0x67 && t[1] == 0xe8 || t[0] == 0x90 && t[1] == 0xe8 || t[0] == 0xe8 && t[5] == 0x90)
	case op == 0xff && modrm == 0x25: // jmp *GOT
		return rt == ro && t[0] == 0xe9 && t[5] == 0x90
	case op == 0x8b: // mov GOT, %reg
		// (The mov form may also drop REX.W: a 32-bit immediate then
		// zero-extends.)
		return rt == ro && t[0] == 0x8d && t[1] == modrm ||
			(rt == rtoB || rex && rt == rtoB&^0x08) && t[0] == 0xc7 && t[1] == 0xc0|reg
	case op == 0x85: // test %reg, GOT
		return rt == rtoB && t[0] == 0xf7 && t[1] == 0xc0|reg
	}
	if ext, ok := binopExt[op]; ok {
		return rt == rtoB && t[0] == 0x81 && t[1] == 0xc0|ext<<3|reg
	}
	return false
}
