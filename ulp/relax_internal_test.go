package ulp

import (
	"bytes"
	"testing"
)

// TestUnrelax: the linker's rewrites of GOT loads are recognised at the
// recorded sites, and nothing else is.
func TestUnrelax(t *testing.T) {
	// Each case: compiled instruction (GOT field last, zeroed), the
	// target's bytes, REX form, want a match.
	cases := []struct {
		name string
		o, t []byte
		rex  bool
		want bool
	}{
		{"mov->lea", []byte{0x48, 0x8b, 0x05, 0, 0, 0, 0}, []byte{0x48, 0x8d, 0x05, 1, 2, 3, 4}, true, true},
		{"mov->lea r9", []byte{0x4c, 0x8b, 0x0d, 0, 0, 0, 0}, []byte{0x4c, 0x8d, 0x0d, 1, 2, 3, 4}, true, true},
		{"mov->mov imm", []byte{0x48, 0x8b, 0x05, 0, 0, 0, 0}, []byte{0x48, 0xc7, 0xc0, 1, 2, 3, 4}, true, true},
		{"mov->mov imm r9 (REX.R -> REX.B)", []byte{0x4c, 0x8b, 0x0d, 0, 0, 0, 0}, []byte{0x49, 0xc7, 0xc1, 1, 2, 3, 4}, true, true},
		{"mov->mov imm without REX.W", []byte{0x48, 0x8b, 0x05, 0, 0, 0, 0}, []byte{0x40, 0xc7, 0xc0, 1, 2, 3, 4}, true, true},
		{"call->addr32 call", []byte{0xff, 0x15, 0, 0, 0, 0}, []byte{0x67, 0xe8, 1, 2, 3, 4}, false, true},
		{"call->nop call", []byte{0xff, 0x15, 0, 0, 0, 0}, []byte{0x90, 0xe8, 1, 2, 3, 4}, false, true},
		{"call->call nop", []byte{0xff, 0x15, 0, 0, 0, 0}, []byte{0xe8, 1, 2, 3, 4, 0x90}, false, true},
		{"jmp->jmp nop", []byte{0xff, 0x25, 0, 0, 0, 0}, []byte{0xe9, 1, 2, 3, 4, 0x90}, false, true},
		{"test", []byte{0x48, 0x85, 0x1d, 0, 0, 0, 0}, []byte{0x48, 0xf7, 0xc3, 1, 2, 3, 4}, true, true},
		{"cmp", []byte{0x48, 0x3b, 0x05, 0, 0, 0, 0}, []byte{0x48, 0x81, 0xf8, 1, 2, 3, 4}, true, true},
		{"sub r10", []byte{0x4c, 0x2b, 0x15, 0, 0, 0, 0}, []byte{0x49, 0x81, 0xea, 1, 2, 3, 4}, true, true},

		{"mov->value load", []byte{0x48, 0x8b, 0x05, 0, 0, 0, 0}, []byte{0x48, 0x8b, 0x0d, 1, 2, 3, 4}, true, false},
		{"mov->lea of another register", []byte{0x48, 0x8b, 0x05, 0, 0, 0, 0}, []byte{0x48, 0x8d, 0x0d, 1, 2, 3, 4}, true, false},
		{"mov->lea, REX changed", []byte{0x48, 0x8b, 0x05, 0, 0, 0, 0}, []byte{0x4c, 0x8d, 0x05, 1, 2, 3, 4}, true, false},
		{"mov imm of another register", []byte{0x48, 0x8b, 0x05, 0, 0, 0, 0}, []byte{0x48, 0xc7, 0xc1, 1, 2, 3, 4}, true, false},
		{"not RIP-relative", []byte{0x48, 0x8b, 0x45, 0, 0, 0, 0}, []byte{0x48, 0x8d, 0x45, 1, 2, 3, 4}, true, false},
		{"call->jmp", []byte{0xff, 0x15, 0, 0, 0, 0}, []byte{0xe9, 1, 2, 3, 4, 0x90}, false, false},
		{"jmp without nop", []byte{0xff, 0x25, 0, 0, 0, 0}, []byte{0xe9, 1, 2, 3, 4, 0xcc}, false, false},
		{"cmp->add", []byte{0x48, 0x3b, 0x05, 0, 0, 0, 0}, []byte{0x48, 0x81, 0xc0, 1, 2, 3, 4}, true, false},
		{"no REX byte where one is recorded", []byte{0x90, 0x8b, 0x05, 0, 0, 0, 0}, []byte{0x90, 0x8d, 0x05, 1, 2, 3, 4}, true, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// Inside a function: a byte before and after the site.
			code := append(append([]byte{0x55}, c.o...), 0xc3)
			tgt := append(append([]byte{0x55}, c.t...), 0xc3)
			off := uint32(len(code) - 5)
			f := &Func{Code: code, Holes: [][2]uint32{{off, 4}}, Relax: []Relax{{Off: off, REX: c.rex}}}
			b := bytes.Clone(tgt)
			unrelax(b, f)
			clear(b[off : off+4])
			if got := bytes.Equal(b, code); got != c.want {
				t.Fatalf("match %v, want %v (after unrelax % x)", got, c.want, b)
			}
		})
	}
	// Out-of-range sites from a damaged patch are ignored, not a panic.
	f := &Func{Code: []byte{0x8b, 0x05, 0, 0}, Relax: []Relax{{Off: 0}, {Off: 1, REX: true}, {Off: 3}, {Off: 1 << 31}}}
	unrelax([]byte{0x8d, 0x05, 1, 2}, f)
	unrelax([]byte{1}, f)
}
