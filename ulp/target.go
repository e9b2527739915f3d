package ulp

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"

	"github.com/livefix/livefix/internal/proc"
)

// DebugRoots are the directories searched for separate debug files, as
// Debian's -dbgsym packages install them (ROOT/.build-id/NN/REST.debug)
// and as .gnu_debuglink names them (ROOT/DIR/NAME).
var DebugRoots = []string{"/usr/lib/debug"}

// TargetFile is a linked executable or shared library as the patch
// builder sees it: the production binary a patch is built for.
type TargetFile struct {
	Path    string
	BuildID []byte
	// Symbols says where the symbol table came from: ".symtab", the
	// debug file's path, or ".dynsym" (exported symbols only).
	Symbols string
	im      *image
}

// OpenTarget reads the binary at path. Its symbols come from its own
// .symtab, else from the debug file (debugFile if set, else the one its
// build-id or .gnu_debuglink names under DebugRoots or next to it),
// else from .dynsym. A debug file of another build is refused.
func OpenTarget(path, debugFile string) (*TargetFile, error) {
	id, err := proc.ReadBuildID(path)
	if err != nil {
		return nil, fmt.Errorf("target %s: %w (the patch is keyed to the GNU build-id: link with --build-id, Debian's default)", path, err)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("target: %w", err)
	}
	defer f.Close()
	ef, err := elf.NewFile(f)
	if err != nil {
		return nil, fmt.Errorf("target %s: %w", path, err)
	}
	t := &TargetFile{Path: path, BuildID: id}
	_, symErr := ef.Symbols()
	var dbg *os.File
	if errors.Is(symErr, elf.ErrNoSymbols) {
		dpath, err := findDebugFile(ef, path, id, debugFile)
		if err != nil {
			return nil, err
		}
		if dpath != "" {
			if dbg, err = os.Open(dpath); err != nil {
				return nil, fmt.Errorf("debug file: %w", err)
			}
			defer dbg.Close()
			t.Symbols = dpath
		} else {
			t.Symbols = ".dynsym"
		}
	} else {
		t.Symbols = ".symtab"
	}
	var dr interface {
		ReadAt([]byte, int64) (int, error)
	}
	if dbg != nil {
		dr = dbg
	}
	if t.im, err = readImage(f, dr); err != nil {
		return nil, fmt.Errorf("read symbols of %s: %w", path, err)
	}
	if dbg != nil {
		t.im.hasSymtab = true
	}
	t.im.path = path
	return t, nil
}

// findDebugFile returns the separate debug file of the binary, "" if
// there is none. An explicit file must carry the same build-id.
func findDebugFile(ef *elf.File, path string, id []byte, explicit string) (string, error) {
	check := func(p string) error {
		did, err := proc.ReadBuildID(p)
		if err != nil {
			return fmt.Errorf("debug file %s: %w", p, err)
		}
		if !bytes.Equal(did, id) {
			return fmt.Errorf("debug file %s has build-id %x but %s has %x: it belongs to another build", p, did, path, id)
		}
		return nil
	}
	if explicit != "" {
		if err := check(explicit); err != nil {
			return "", err
		}
		return explicit, nil
	}
	h := hex.EncodeToString(id)
	for _, root := range DebugRoots {
		if len(h) > 2 {
			p := filepath.Join(root, ".build-id", h[:2], h[2:]+".debug")
			if _, err := os.Stat(p); err == nil && check(p) == nil {
				return p, nil
			}
		}
	}
	// .gnu_debuglink: NAME, NUL, padding, CRC32 of the debug file.
	if s := ef.Section(".gnu_debuglink"); s != nil {
		b, err := s.Data()
		if err == nil {
			if i := bytes.IndexByte(b, 0); i > 0 && len(b) >= 4 {
				name := string(b[:i])
				crc := binary.LittleEndian.Uint32(b[len(b)-4:])
				dir, _ := filepath.Abs(filepath.Dir(path))
				cands := []string{filepath.Join(dir, name), filepath.Join(dir, ".debug", name)}
				for _, root := range DebugRoots {
					cands = append(cands, filepath.Join(root, dir, name))
				}
				for _, p := range cands {
					data, err := os.ReadFile(p)
					if err != nil || crc32.ChecksumIEEE(data) != crc {
						continue
					}
					if check(p) == nil {
						return p, nil
					}
				}
			}
		}
	}
	return "", nil
}

// Has reports whether the target defines a symbol of that name (global,
// hidden or static).
func (t *TargetFile) Has(name string) bool {
	_, g := t.im.globals[name]
	return g || len(t.im.locals[name]) > 0
}

// OrigCode gives the machine code of a function as compiled from the
// unpatched source (relocated fields zeroed and listed in holes), for
// the safety check of functions a patch calls. local names a static of
// the unit's own object; candidates are every compiled copy.
type OrigCode func(u *Unit, name string, local bool) []Func

// Mismatch is a function whose running code cannot be the one the patch
// was built from.
type Mismatch struct {
	Func   string
	Reason string
}

func (m Mismatch) String() string { return m.Func + ": " + m.Reason }

// Bind checks u against the target and records in u where each function
// to replace and each symbol of the target it uses is (Func.Addr,
// Extern.Addr), so applying needs no symbol table. It reports in=false
// if none of u's functions is in the target (the unit belongs to another
// program of the build). Otherwise every function to replace and every
// function of the target the patch calls must have the bytes orig gives
// for it (relocated fields masked); each one that does not, and each
// static that cannot be located, is returned as a Mismatch. globals are
// the global functions u's original object defines, defs all its global
// symbols (functions and data): one of those the patch uses must be
// found in the target, never resolved by name in the process, where
// another object may have a symbol of that name.
func (t *TargetFile) Bind(u *Unit, globals, defs []string, orig OrigCode) (in bool, bad []Mismatch, err error) {
	im := t.im
	for _, g := range globals {
		in = in || t.Has(g)
	}
	own := map[string]bool{}
	for _, d := range defs {
		own[d] = true
	}
	for _, f := range u.Funcs {
		in = in || t.Has(f.OrigName)
	}
	if !in {
		return false, nil, nil
	}
	for i := range u.Funcs {
		f := &u.Funcs[i]
		s, err := im.findFunc(u.File, f)
		if err != nil {
			bad = append(bad, Mismatch{f.OrigName, mismatchReason(err, t)})
			continue
		}
		f.Addr, f.Size = s.value, s.size
		if c, ok := im.coldPart(u.File, f.OrigName); ok {
			f.ColdAddr, f.ColdSize = c.value, c.size
		}
	}
	for i := range u.Externs {
		e := &u.Externs[i]
		var s tsym
		found := false
		if e.Local {
			if !im.hasSymtab {
				bad = append(bad, Mismatch{e.Name, fmt.Sprintf("a static of %s that the patch uses cannot be located: %s is stripped and no debug file was found (by build-id under %v, or by its .gnu_debuglink); pass it with --debug-file", orUnknown(u.File), t.Path, DebugRoots)})
				continue
			}
			ls, err := im.local(u.File, e.Name)
			if err != nil {
				bad = append(bad, Mismatch{e.Name, fmt.Sprintf("a static that the patch uses cannot be located in %s: %v", t.Path, err)})
				continue
			}
			s, found = ls, true
		} else if g, ok := im.globals[e.Name]; ok {
			s, found = g, true
		} else if ls := im.files[u.File][e.Name]; len(ls) == 1 {
			s, found = ls[0], true // hidden, or local by a version script
		} else if ls := im.locals[e.Name]; len(ls) == 1 {
			s, found = ls[0], true
		} else if len(ls) > 1 {
			bad = append(bad, Mismatch{e.Name, fmt.Sprintf("%d local symbols of that name in %s and none in %s", len(ls), t.Path, orUnknown(u.File))})
			continue
		}
		if !found && own[e.Name] {
			// The unit defines it, so the target does, but not under a
			// name livefix can find: hidden or made local by a version
			// script, and the target is stripped (or the linker dropped
			// it).
			if !im.hasSymtab {
				bad = append(bad, Mismatch{e.Name, fmt.Sprintf("defined by %s in the target but not exported by %s (hidden, or local by a version script), which is stripped, and no debug file was found (by build-id under %v, or by its .gnu_debuglink); pass it with --debug-file", orUnknown(u.File), t.Path, DebugRoots)})
			} else {
				bad = append(bad, Mismatch{e.Name, fmt.Sprintf("defined by %s, but not in the symbol table of %s (symbols from %s)", orUnknown(u.File), t.Path, t.Symbols)})
			}
			continue
		}
		if !found {
			continue // another object's symbol: resolved in the process
		}
		e.Resolved, e.Addr, e.Size, e.Type = true, s.value, s.size, s.typ
		if s.typ != elf.STT_FUNC || orig == nil {
			continue
		}
		cands := orig(u, e.Name, e.Local)
		if len(cands) == 0 {
			continue // not compiled by this build (assembly, a static library)
		}
		ok := false
		for _, c := range cands {
			c.OrigName = e.Name
			if m, err := im.matches(s, &c); err == nil && m {
				ok = true
				break
			}
		}
		if !ok {
			bad = append(bad, Mismatch{e.Name, fmt.Sprintf("called by the patch, but its code in %s differs from %s compiled from the unpatched source: the source or the compiler flags do not match the binary", t.Path, e.Name)})
		}
	}
	return true, bad, nil
}

func mismatchReason(err error, t *TargetFile) string {
	return fmt.Sprintf("%v [target %s, symbols from %s]", err, t.Path, t.Symbols)
}
