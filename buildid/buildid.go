package buildid

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// ErrNotFound is returned when the input has no GNU build-id note.
var ErrNotFound = errors.New("no GNU build-id note")

const (
	ntGNUBuildID = 3
	maxNotes     = 1 << 20
)

// FromNotes finds the GNU build-id in a sequence of 4-byte aligned
// little-endian ELF notes, such as /sys/kernel/notes or an x86-64
// .note.gnu.build-id section.
func FromNotes(notes []byte) ([]byte, error) { return fromNotes(notes, 4) }

// fromNotes scans one note area whose entries are padded to align bytes
// (4, or 8 in some PT_NOTE segments). A malformed note ends the scan.
func fromNotes(data []byte, align uint64) ([]byte, error) {
	pad := func(n uint64) uint64 { return (n + align - 1) &^ (align - 1) }
	le := binary.LittleEndian
	for len(data) >= 12 {
		namesz, descsz, typ := uint64(le.Uint32(data)), uint64(le.Uint32(data[4:])), le.Uint32(data[8:])
		data = data[12:]
		if pad(namesz) > uint64(len(data)) {
			break
		}
		name := data[:namesz]
		data = data[pad(namesz):]
		if descsz > uint64(len(data)) {
			break
		}
		desc := data[:descsz]
		if pad(descsz) > uint64(len(data)) {
			data = nil
		} else {
			data = data[pad(descsz):]
		}
		if typ == ntGNUBuildID && bytes.Equal(name, []byte("GNU\x00")) && len(desc) > 0 {
			return bytes.Clone(desc), nil
		}
	}
	return nil, ErrNotFound
}

// FromELF returns the build-id of an ELF file, looking in PT_NOTE
// segments first (they survive the stripping of section headers), then
// in SHT_NOTE sections.
func FromELF(r io.ReaderAt) ([]byte, error) {
	f, err := elf.NewFile(r)
	if err != nil {
		return nil, fmt.Errorf("read build-id: %w", err)
	}
	return FromELFFile(f)
}

// FromELFFile is FromELF for a file the caller has already parsed.
func FromELFFile(f *elf.File) ([]byte, error) {
	read := func(r io.Reader, size uint64) []byte {
		if size == 0 || size > maxNotes {
			return nil
		}
		b := make([]byte, size)
		if _, err := io.ReadFull(r, b); err != nil {
			return nil
		}
		return b
	}
	alignOf := func(a uint64) uint64 {
		if a == 8 {
			return 8
		}
		return 4
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_NOTE {
			if id, err := fromNotes(read(p.Open(), p.Filesz), alignOf(p.Align)); err == nil {
				return id, nil
			}
		}
	}
	for _, s := range f.Sections {
		if s.Type == elf.SHT_NOTE {
			if id, err := fromNotes(read(s.Open(), s.Size), alignOf(s.Addralign)); err == nil {
				return id, nil
			}
		}
	}
	return nil, ErrNotFound
}

// FromFile returns the build-id of the ELF file at path.
func FromFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read build-id: %w", err)
	}
	defer f.Close()
	id, err := FromELF(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return id, nil
}
