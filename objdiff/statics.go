package objdiff

import (
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Dynamic debug. With CONFIG_DYNAMIC_DEBUG every pr_debug/dev_dbg call
// site has a struct _ddebug descriptor (symbol __UNIQUE_ID_ddebugN.M) in
// the section __dyndbg: module, function, file and format strings, the
// line number, the enable flags and a static key that the call site's
// jump label tests. The kernel collects a module's __dyndbg section when
// it loads it (vmlinux's at boot) and lists each descriptor in
// <debugfs>/dynamic_debug/control. The numbers N and M follow __COUNTER__
// and the line moves with every added line, so descriptors are never
// correlated with the running kernel's: a function the patch carries gets
// its own descriptors in the patch module's __dyndbg section, which the
// kernel registers under the patch module's name, and a reference to a
// descriptor is compared by what the descriptor says (strings, flags),
// not by its name or line.

const dyndbgSection = "__dyndbg"

// ddebugLine is the byte offset of the 32-bit word whose low 18 bits are
// struct _ddebug's lineno, after the four string pointers.
const ddebugLine = 32

func isDyndbg(e *entity) bool { return !e.isFunc && e.sec.Name == dyndbgSection }

// Special statics are compiler-numbered function-local statics that the
// kernel's macros create for bookkeeping: lockdep class keys (__key),
// once-flags (__warned, __already_done, __print_once, anything in
// .data.once), ratelimit states (_rs) and dynamic debug descriptors.
// Their names repeat in every file (vmlinux has dozens of __key.4), so
// resolving them in the running kernel is ambiguous, and their values
// only steer diagnostics. As kpatch does, the patch carries its own
// copy for the functions it includes: a once-warning may fire once more
// from the new code, a new lock class key names the locks the new code
// initialises.
var specialStaticBases = map[string]bool{
	"__key": true, "__warned": true, "__already_done": true, "__print_once": true,
	"_rs": true, "__rs": true, "__func__": true,
}

func isSpecialStatic(e *entity) bool {
	if e.isFunc || e.sym.Bind != elf.STB_LOCAL {
		return false
	}
	if isDyndbg(e) || e.sec.Name == ".data.once" || strings.HasPrefix(e.sec.Name, ".data.once.") {
		return true
	}
	return numbered(e.name()) && specialStaticBases[baseName(e.name())]
}

// specialKey is the comparison key of a reference to a special static:
// its kind and what it holds, never its name or number. A descriptor's
// line is masked (a moved pr_debug is not a change); its strings count.
func (d *differ) specialKey(e *entity) string {
	if k, ok := d.ssKeys[e]; ok {
		return k
	}
	k := d.specialKeyOf(e)
	d.ssKeys[e] = k
	return k
}

func (d *differ) specialKeyOf(e *entity) string {
	if !isDyndbg(e) {
		h := sha256.New()
		if c := e.content(); c != nil {
			h.Write(c)
		}
		return "ss:" + baseName(e.name()) + ":" + strconv.FormatUint(e.size(), 10) + ":" + hex.EncodeToString(h.Sum(nil)[:8])
	}
	c := slices.Clone(e.content())
	if len(c) >= ddebugLine+4 {
		w := binary.LittleEndian.Uint32(c[ddebugLine:])
		binary.LittleEndian.PutUint32(c[ddebugLine:], w&^(1<<18-1))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "dd:%x", c)
	for _, r := range e.relocs {
		t := e.obj.resolve(e.sec, r)
		if t.kind == refEntity && isSpecialStatic(t.ent) {
			fmt.Fprintf(&b, "|%d self", r.Offset-e.start)
			continue
		}
		fmt.Fprintf(&b, "|%d %d %s", r.Offset-e.start, r.Type, d.refKey(e.obj, t, false))
	}
	return b.String()
}

// Exports. EXPORT_SYMBOL(fn) emits a struct kernel_symbol in a section
// of its own, ___ksymtab+fn (___ksymtab_gpl+fn for the GPL variant),
// whose entries point at fn and at its name in __ksymtab_strings. The
// running kernel's export keeps pointing at the original function, which
// the live patch redirects, so callers in other modules reach the new
// code: a changed exported function is patched like any other, and these
// sections are never copied. A patch that adds or removes an export is
// refused: modules resolve exports when they load, a live patch cannot
// change that table.

func exportSection(name string) bool {
	return strings.HasPrefix(name, "___ksymtab+") || strings.HasPrefix(name, "___ksymtab_gpl+") || name == "__ksymtab_strings"
}

// exportName returns the exported symbol of a ___ksymtab section.
func exportName(name string) (string, bool) {
	for _, p := range []string{"___ksymtab+", "___ksymtab_gpl+"} {
		if n, ok := strings.CutPrefix(name, p); ok {
			return n, true
		}
	}
	return "", false
}

// checkExports refuses a change to the set of exported symbols.
func (d *differ) checkExports() {
	set := func(o *object) map[string]string {
		m := make(map[string]string)
		for _, s := range o.f.Sections {
			if n, ok := exportName(s.Name); ok {
				m[n] = s.Name
			}
		}
		return m
	}
	a, b := set(d.orig), set(d.patched)
	names := make([]string, 0, len(a)+len(b))
	for n := range a {
		names = append(names, n)
	}
	for n := range b {
		if _, ok := a[n]; !ok {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	for _, n := range names {
		sa, inA := a[n]
		sb, inB := b[n]
		switch {
		case !inA:
			d.refuse(n, ReasonExport+": the patch exports it ("+sb+"); modules resolve exports when they load, so a live patch cannot add one (keep the function unexported, or call it only from the patch)")
		case !inB:
			d.refuse(n, ReasonExport+": the patch removes its export; modules already linked against it keep using it, so a live patch cannot remove one")
		case sa != sb:
			d.refuse(n, ReasonExport+": its export changed from "+sa+" to "+sb+"; the running kernel's export table cannot change")
		}
	}
}
