package ulp

import (
	"debug/elf"
	"testing"

	"github.com/livefix/livefix/elfobj"
)

// TestDirectBranch: only call/jmp/jcc displacements leave the patch's
// code free to unmap; anything else takes its address.
func TestDirectBranch(t *testing.T) {
	text := &elfobj.Section{Flags: elf.SHF_ALLOC | elf.SHF_EXECINSTR}
	data := &elfobj.Section{Flags: elf.SHF_ALLOC | elf.SHF_WRITE}
	cases := []struct {
		name string
		code []byte // the relocated field starts at len(code)-4
		sec  *elfobj.Section
		typ  elf.R_X86_64
		want bool
	}{
		{"call", []byte{0x90, 0xe8, 0, 0, 0, 0}, text, elf.R_X86_64_PLT32, true},
		{"jmp", []byte{0x90, 0xe9, 0, 0, 0, 0}, text, elf.R_X86_64_PC32, true},
		{"jne", []byte{0x0f, 0x85, 0, 0, 0, 0}, text, elf.R_X86_64_PC32, true},
		{"lea", []byte{0x48, 0x8d, 0x05, 0, 0, 0, 0}, text, elf.R_X86_64_PC32, false},
		{"movabs", []byte{0x48, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0}, text, elf.R_X86_64_64, false},
		{"pointer in data", []byte{0, 0, 0, 0, 0, 0, 0, 0}, data, elf.R_X86_64_64, false},
		{"gotpcrel", []byte{0x48, 0x8b, 0x05, 0, 0, 0, 0}, text, elf.R_X86_64_REX_GOTPCRELX, false},
	}
	for _, c := range cases {
		at := uint64(len(c.code) - 4)
		if c.typ == elf.R_X86_64_64 {
			at = uint64(len(c.code) - 8)
		}
		if got := directBranch(c.code, c.sec, at, c.typ); got != c.want {
			t.Errorf("%s: got %v, want %v", c.name, got, c.want)
		}
	}
}
