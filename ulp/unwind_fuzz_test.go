package ulp

import (
	"encoding/binary"
	"testing"
)

// FuzzEHRule: the unwind-table reader never panics on damaged .eh_frame
// data (it runs inside a stop of the target). Run counted:
// go test -run '^$' -fuzz FuzzEHRule -fuzztime 20000x -parallel 1 ./ulp
func FuzzEHRule(f *testing.F) {
	// A CIE ("zR", code 1, data -8, RA 16, def_cfa rsp+8, offset RA) and an
	// FDE covering [0x1000, 0x1010) with advance + def_cfa_offset 16.
	cie := []byte{0, 0, 0, 0, 1, 'z', 'R', 0, 1, 0x78, 16, 1, 0x1b, 0x0c, 7, 8, 0x90, 1, 0, 0}
	binary.LittleEndian.PutUint32(cie, uint32(len(cie)-4))
	fde := make([]byte, 4, 32)
	fde = binary.LittleEndian.AppendUint32(fde, uint32(len(cie)+4))
	fde = binary.LittleEndian.AppendUint32(fde, uint32(0x1000-(0x100+len(cie)+8)))
	fde = binary.LittleEndian.AppendUint32(fde, 0x10)
	fde = append(fde, 0, 0x44, 0x0e, 16, 0, 0, 0)
	binary.LittleEndian.PutUint32(fde, uint32(len(fde)-4))
	f.Add(append(cie, fde...), uint32(len(cie)), uint64(0x1008))
	f.Fuzz(func(t *testing.T, frame []byte, fdeOff uint32, pc uint64) {
		eh := &ehTable{frame: frame, frameAddr: 0x100, table: []ehEntry{{0x1000, 0x100 + uint64(fdeOff)}}}
		eh.rule(pc)
	})
}
