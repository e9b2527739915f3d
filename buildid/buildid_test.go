package buildid

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

func note(name string, typ uint32, desc []byte, align int) []byte {
	var b bytes.Buffer
	n := append([]byte(name), 0)
	binary.Write(&b, binary.LittleEndian, [3]uint32{uint32(len(n)), uint32(len(desc)), typ})
	pad := func(l int) []byte { return make([]byte, (align-l%align)%align) }
	b.Write(n)
	b.Write(pad(len(n)))
	b.Write(desc)
	b.Write(pad(len(desc)))
	return b.Bytes()
}

func TestFromNotes(t *testing.T) {
	id := []byte{0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	tests := []struct {
		name  string
		notes []byte
		want  []byte
	}{
		{"alone", note("GNU", 3, id, 4), id},
		{"after a Xen note", append(note("Xen", 6, []byte("linux"), 4), note("GNU", 3, id, 4)...), id},
		{"GNU note of another type", note("GNU", 1, id, 4), nil},
		{"another owner", note("Go", 3, id, 4), nil},
		{"truncated", note("GNU", 3, id, 4)[:20], nil},
		{"huge sizes", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 3, 0, 0, 0}, nil},
		{"empty", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := FromNotes(tt.notes)
			if tt.want == nil {
				if !errors.Is(err, ErrNotFound) {
					t.Errorf("got %x, %v; want ErrNotFound", got, err)
				}
				return
			}
			if err != nil || !bytes.Equal(got, tt.want) {
				t.Errorf("got %x, %v; want %x", got, err, tt.want)
			}
		})
	}
	// 8-byte aligned note areas pad names and descriptions to 8.
	prop := note("GNU", 5, []byte{1, 2, 3, 4}, 8)
	if got, err := fromNotes(append(prop, note("GNU", 3, id, 8)...), 8); err != nil || !bytes.Equal(got, id) {
		t.Errorf("8-aligned: got %x, %v", got, err)
	}
}

// TestFromFile links programs with known build-ids, with and without
// section headers, and one without a build-id.
func TestFromFile(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "p.c")
	os.WriteFile(src, []byte("int main(void) { return 0; }\n"), 0o644)
	link := func(out string, flags ...string) string {
		p := filepath.Join(dir, out)
		args := append([]string{"-o", p, src}, flags...)
		if b, err := exec.Command("gcc", args...).CombinedOutput(); err != nil {
			t.Fatalf("gcc %v: %v\n%s", args, err, b)
		}
		return p
	}
	withID := link("with", "-Wl,--build-id=0x0102030405060708090a0b0c0d0e0f1011121314")
	want := []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20}
	if got, err := FromFile(withID); err != nil || !bytes.Equal(got, want) {
		t.Errorf("FromFile = %x, %v; want %x", got, err, want)
	}
	// Without section headers only the PT_NOTE segment can tell.
	raw, err := os.ReadFile(withID)
	if err != nil {
		t.Fatal(err)
	}
	binary.LittleEndian.PutUint64(raw[0x28:], 0) // e_shoff
	binary.LittleEndian.PutUint16(raw[0x3c:], 0) // e_shnum
	binary.LittleEndian.PutUint16(raw[0x3e:], 0) // e_shstrndx
	if got, err := FromELF(bytes.NewReader(raw)); err != nil || !bytes.Equal(got, want) {
		t.Errorf("without section headers: %x, %v", got, err)
	}
	none := link("none", "-Wl,--build-id=none")
	if _, err := FromFile(none); !errors.Is(err, ErrNotFound) {
		t.Errorf("no build-id: err = %v, want ErrNotFound", err)
	}
	if _, err := FromFile(src); err == nil {
		t.Errorf("a C source file has no build-id, got no error")
	}
}

func FuzzFromNotes(f *testing.F) {
	f.Add(note("GNU", 3, []byte{1, 2, 3}, 4))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 3, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		FromNotes(b)
		fromNotes(b, 8)
	})
}
