package ulp

import (
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/livefix/livefix/elfobj"
)

// Patch file layout (all integers little-endian):
//
//	offset  size  field
//	0       8     magic "LFPATCH\x00"
//	8       4     format version (FormatVersion)
//	12      4     flags, zero
//	16      8     payload length N
//	24      N     payload: the Patch as JSON (objects base64-encoded)
//	24+N    32    SHA-256 of bytes [0, 24+N)
//
// The checksum detects truncation and accidental or deliberate change of
// any byte; it is not a signature (anyone can recompute it).
const (
	// FormatVersion is the only version Decode accepts.
	FormatVersion = 1
	headerSize    = 24
	sumSize       = sha256.Size
	// maxPayload bounds the payload a patch file may declare.
	maxPayload = 1 << 30
)

var magic = [8]byte{'L', 'F', 'P', 'A', 'T', 'C', 'H', 0}

// Errors returned (wrapped) by Decode.
var (
	// ErrCorrupt: the file is truncated, damaged or was modified.
	ErrCorrupt = errors.New("corrupt patch file")
	// ErrVersion: the file was written by an incompatible livefix.
	ErrVersion = errors.New("unsupported patch file version")
)

// Patch is the content of a patch file.
type Patch struct {
	// Name identifies the patch in a process (unpatch NAME).
	Name string `json:"name"`
	// Level orders patches for the same target: applying a higher level
	// replaces the applied one.
	Level  int    `json:"level"`
	Target Target `json:"target"`
	Units  []Unit `json:"units"`
}

// Target identifies the ELF object the patch applies to.
type Target struct {
	// BuildID is the GNU build-id, hex; the only key used to match.
	BuildID string `json:"build_id"`
	// Path and Soname are informational (messages, list).
	Path   string `json:"path"`
	Soname string `json:"soname,omitempty"`
}

// Unit is one changed translation unit.
type Unit struct {
	// Object is the build tree path of the object file, for messages.
	Object string `json:"object"`
	// File is the name of the unit's STT_FILE symbol: statics of the
	// target are looked up in that file's part of the symbol table.
	File string `json:"file"`
	// ELF is the relocatable object with the included parts.
	ELF []byte `json:"elf"`
	// Funcs are the functions to redirect.
	Funcs []Func `json:"funcs"`
	// Externs are the symbols ELF leaves undefined.
	Externs []Extern `json:"externs"`
}

// Func is a function to redirect: the target's OrigName jumps to the
// patch's Name.
type Func struct {
	Name     string `json:"name"`
	OrigName string `json:"orig_name"`
	Local    bool   `json:"local"`
	// Code is the original function's machine code as compiled, with
	// the bytes its relocations fill in set to zero (listed in Holes as
	// offset, length). The running function must match it.
	Code  []byte      `json:"code,omitempty"`
	Holes [][2]uint32 `json:"holes,omitempty"`
	// Relax lists the holes of relocations that load an address from the
	// GOT (R_X86_64_GOTPCRELX, R_X86_64_REX_GOTPCRELX): the linker may
	// have rewritten those instructions (see relax.go).
	Relax []Relax `json:"relax,omitempty"`
	// Addr and Size locate the function in the target (ELF virtual
	// address), when the patch builder resolved it against the target
	// binary (through its symbol table or its separate debug file); zero
	// means "look it up by name when applying".
	Addr uint64 `json:"addr,omitempty"`
	Size uint64 `json:"size,omitempty"`
	// ColdAddr and ColdSize locate the function's .cold part (NAME.cold),
	// if it has one, likewise.
	ColdAddr uint64 `json:"cold_addr,omitempty"`
	ColdSize uint64 `json:"cold_size,omitempty"`
}

// Extern is a symbol resolved against the running process.
type Extern struct {
	Name  string `json:"name"`
	Local bool   `json:"local"`
	Func  bool   `json:"func"`
	// Addr, Size and Type locate a symbol of the target itself, when the
	// patch builder resolved it (a static or hidden symbol found through
	// the symbol table or the debug file, or a global the target
	// defines): Addr is its ELF virtual address (for a thread-local, its
	// offset in the TLS segment), Type its ELF symbol type. Without
	// Resolved the symbol is resolved by name in the running process.
	Resolved bool        `json:"resolved,omitempty"`
	Addr     uint64      `json:"addr,omitempty"`
	Size     uint64      `json:"size,omitempty"`
	Type     elf.SymType `json:"type,omitempty"`
}

// Encode serialises p into the patch file format.
func Encode(p *Patch) ([]byte, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	payload, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("encode patch: %w", err)
	}
	out := make([]byte, headerSize, headerSize+len(payload)+sumSize)
	copy(out, magic[:])
	binary.LittleEndian.PutUint32(out[8:], FormatVersion)
	binary.LittleEndian.PutUint64(out[16:], uint64(len(payload)))
	out = append(out, payload...)
	sum := sha256.Sum256(out)
	return append(out, sum[:]...), nil
}

// Decode parses and verifies a patch file.
func Decode(b []byte) (*Patch, error) {
	if len(b) < len(magic) || !bytes.Equal(b[:len(magic)], magic[:]) {
		return nil, fmt.Errorf("%w: not a livefix patch file (bad magic)", ErrCorrupt)
	}
	if len(b) < headerSize {
		return nil, fmt.Errorf("%w: truncated header (%d bytes)", ErrCorrupt, len(b))
	}
	if v := binary.LittleEndian.Uint32(b[8:]); v != FormatVersion {
		return nil, fmt.Errorf("%w: version %d, this livefix reads version %d (rebuild the patch with this livefix-build)", ErrVersion, v, FormatVersion)
	}
	n := binary.LittleEndian.Uint64(b[16:])
	if n > maxPayload {
		return nil, fmt.Errorf("%w: payload length %d is implausible", ErrCorrupt, n)
	}
	if uint64(len(b)) != headerSize+n+sumSize {
		return nil, fmt.Errorf("%w: %d bytes, header says %d (truncated or padded)", ErrCorrupt, len(b), headerSize+n+sumSize)
	}
	end := headerSize + int(n)
	sum := sha256.Sum256(b[:end])
	if !bytes.Equal(sum[:], b[end:]) {
		return nil, fmt.Errorf("%w: checksum mismatch (the file was modified or damaged)", ErrCorrupt)
	}
	if binary.LittleEndian.Uint32(b[12:]) != 0 {
		return nil, fmt.Errorf("%w: unknown flags %#x", ErrVersion, binary.LittleEndian.Uint32(b[12:]))
	}
	var p Patch
	dec := json.NewDecoder(bytes.NewReader(b[headerSize:end]))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("%w: payload: %v", ErrCorrupt, err)
	}
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return &p, nil
}

// ReadFile reads and decodes a patch file.
func ReadFile(path string) (*Patch, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read patch: %w", err)
	}
	p, err := Decode(b)
	if err != nil {
		return nil, fmt.Errorf("patch file %s: %w", path, err)
	}
	return p, nil
}

// WriteFile encodes p to path.
func WriteFile(path string, p *Patch) error {
	b, err := Encode(p)
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("write patch: %w", err)
	}
	return nil
}

// ValidName reports whether s can name a patch: 1 to 128 of
// [A-Za-z0-9._+-], beginning with a letter or digit. (Checked by hand,
// not by a regexp compiled at init: livefix's cold start counts.)
func ValidName(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
		if !alnum && (i == 0 || c != '.' && c != '_' && c != '+' && c != '-') {
			return false
		}
	}
	return true
}

// Validate checks the structural invariants of a patch.
func (p *Patch) Validate() error {
	if !ValidName(p.Name) {
		return fmt.Errorf("patch name %q: use 1-128 letters, digits, '.', '_', '+', '-'", p.Name)
	}
	if p.Level < 0 {
		return fmt.Errorf("patch %s: negative level %d", p.Name, p.Level)
	}
	if _, err := p.BuildID(); err != nil {
		return err
	}
	if len(p.Units) == 0 {
		return fmt.Errorf("patch %s: no units", p.Name)
	}
	nfunc := 0
	for i, u := range p.Units {
		if _, err := elfobj.Read(u.ELF); err != nil {
			return fmt.Errorf("patch %s: unit %d (%s): %w", p.Name, i, u.Object, err)
		}
		nfunc += len(u.Funcs)
		for _, f := range u.Funcs {
			if f.Name == "" || f.OrigName == "" {
				return fmt.Errorf("patch %s: unit %d (%s): function with an empty name", p.Name, i, u.Object)
			}
		}
	}
	if nfunc == 0 {
		return fmt.Errorf("patch %s: redirects no function", p.Name)
	}
	return nil
}

// BuildID returns the target build-id as bytes.
func (p *Patch) BuildID() ([]byte, error) {
	id, err := hex.DecodeString(p.Target.BuildID)
	if err != nil || len(id) == 0 {
		return nil, fmt.Errorf("patch %s: bad target build-id %q", p.Name, p.Target.BuildID)
	}
	return id, nil
}

// Checksum returns the SHA-256 of the encoded patch, hex; it identifies
// a patch's exact content in the state records.
func (p *Patch) Checksum() string {
	b, err := json.Marshal(p)
	if err != nil {
		return ""
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
