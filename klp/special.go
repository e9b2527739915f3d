package klp

import (
	"fmt"
	"sort"
	"strings"

	"github.com/livefix/livefix/elfobj"
	"github.com/livefix/livefix/objdiff"
)

// earlyTable is a special section the 6.1 kernel processes when the patch
// module itself loads (jump_label_add_module and static_call_add_module,
// from the module notifiers), before the livepatch core writes the
// relocations of a module object, which happens only when that module
// loads: an entry whose key is such a livepatch symbol would be read as
// garbage.
type earlyTable struct {
	name    string
	entSize uint64
	keyOff  uint64 // offset of the key's relocation in an entry
	// dropPrefix names the keys whose entries may be dropped: those of
	// tracepoints. Without its jump entry a tracepoint's branch stays in
	// its compiled default (off: the tracepoint does not fire in the
	// patched copy); without its static-call site the call goes through
	// the tracepoint's trampoline, which static_call_update keeps current.
	dropPrefix []string
	what       string
}

var earlyTables = []earlyTable{
	{name: "__jump_table", entSize: 16, keyOff: 8, dropPrefix: []string{"__tracepoint_"}, what: "static key"},
	// objtool names a module's static call by its trampoline when the
	// key is not in the object (static_call_add_module fixes that up).
	{name: ".static_call_sites", entSize: 8, keyOff: 4, dropPrefix: []string{"__SCK__tp_func_", "__SCT__tp_func_"}, what: "static call"},
}

// EarlyKeyError reports references from a patched module function to
// static keys or static calls of a module that the live patch cannot keep.
type EarlyKeyError struct {
	Object string
	Keys   []string // "static key NAME" or "static call NAME"
}

func (e *EarlyKeyError) Error() string {
	return fmt.Sprintf("the patched code of module %s uses %s, defined by a module: the kernel sets up the live patch's jump labels and static calls when it loads, before the module's symbols are resolved, so these cannot be kept (tracepoints are dropped from the patched copy, other keys are refused); leave the code using them unchanged, or patch a caller",
		e.Object, strings.Join(e.Keys, ", "))
}

// Unwrap makes the error a refusal (livefix-build exits 3, not 1): the
// 6.1 kernel cannot run such a patch, so it is a change that cannot be
// live patched as written, not a failure of the build.
func (e *EarlyKeyError) Unwrap() error {
	re := &objdiff.RefusedError{}
	for _, k := range e.Keys {
		re.Refused = append(re.Refused, objdiff.Refusal{Symbol: k,
			Reason: "defined by a module and used by the patched code of " + e.Object + "; the kernel sets up a live patch's jump labels and static calls before a module's symbols are resolved"})
	}
	return re
}

// filterEarlySections removes from a unit of a patch to a module object
// the jump-table and static-call entries whose key is a livepatch symbol
// (a key of a module, resolved only when that module loads), when the key
// is a tracepoint's; any other such key refuses the unit with an
// *EarlyKeyError naming them.
func filterEarlySections(f *elfobj.File, object string) error {
	relas := f.RelocSections()
	var refused []string
	for _, t := range earlyTables {
		for _, sec := range f.Sections {
			if sec.Name != t.name {
				continue
			}
			drop := map[uint64]bool{}
			for _, rs := range relas[sec] {
				for _, r := range rs.Relocs {
					if r.Sym == nil || r.Offset%t.entSize != t.keyOff {
						continue
					}
					obj, ok := klpSymObject(r.Sym.Name)
					if !ok || obj == "vmlinux" {
						continue
					}
					key := klpSymBase(r.Sym.Name)
					if hasAnyPrefix(key, t.dropPrefix) {
						drop[r.Offset/t.entSize] = true
						continue
					}
					refused = append(refused, t.what+" "+key)
				}
			}
			if len(drop) > 0 {
				if err := dropEntries(sec, relas[sec], t.entSize, drop); err != nil {
					return err
				}
			}
		}
	}
	if len(refused) > 0 {
		sort.Strings(refused)
		return &EarlyKeyError{Object: object, Keys: dedupe(refused)}
	}
	return nil
}

// dropEntries removes the entries numbered in drop from a table section
// of entSize-byte entries and the relocations inside them, moving the
// later entries and their relocations down.
func dropEntries(sec *elfobj.Section, relas []*elfobj.Section, entSize uint64, drop map[uint64]bool) error {
	n := sec.Len() / entSize
	if sec.Len()%entSize != 0 || sec.Data == nil {
		return fmt.Errorf("section %s: %d bytes is not a whole number of %d-byte entries", sec.Name, sec.Len(), entSize)
	}
	newIndex := make([]uint64, n)
	var data []byte
	kept := uint64(0)
	for i := uint64(0); i < n; i++ {
		if drop[i] {
			continue
		}
		newIndex[i] = kept
		data = append(data, sec.Data[i*entSize:(i+1)*entSize]...)
		kept++
	}
	sec.Data = data
	for _, rs := range relas {
		var keep []elfobj.Reloc
		for _, r := range rs.Relocs {
			i := r.Offset / entSize
			if i >= n || drop[i] {
				continue
			}
			r.Offset = newIndex[i]*entSize + r.Offset%entSize
			keep = append(keep, r)
		}
		rs.Relocs = keep
	}
	return nil
}

// klpSymBase returns NAME of .klp.sym.OBJ.NAME,POS.
func klpSymBase(name string) string {
	rest := strings.TrimPrefix(name, klpSymPrefix)
	_, sym, _ := strings.Cut(rest, ".")
	if i := strings.LastIndexByte(sym, ','); i >= 0 {
		sym = sym[:i]
	}
	return sym
}

func dedupe(s []string) []string {
	var out []string
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}
