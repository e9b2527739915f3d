package objdiff

import (
	"debug/elf"
	"slices"
	"strconv"
	"strings"
)

// baseName strips the numbers that gcc appends to local symbols and
// that change from one build to the next: foo.isra.3 -> foo.isra,
// count.12 -> count, foo.constprop.0.isra.1 -> foo.constprop.isra.
//
// The kernel's __UNIQUE_ID(prefix) appends __COUNTER__ to the name itself
// (__UNIQUE_ID_license367, __UNIQUE_ID_ddebug334.14): those digits are
// build-dependent too.
func baseName(name string) string {
	if strings.HasPrefix(name, "__UNIQUE_ID_") {
		head, rest, dotted := strings.Cut(name, ".")
		head = strings.TrimRight(head, "0123456789")
		if !dotted {
			return head
		}
		name = head + "." + rest
	}
	if !strings.Contains(name, ".") {
		return name
	}
	parts := strings.Split(name, ".")
	keep := parts[:1]
	for _, p := range parts[1:] {
		if _, err := strconv.Atoi(p); err == nil {
			continue
		}
		keep = append(keep, p)
	}
	return strings.Join(keep, ".")
}

// numbered reports whether the name carries a build-dependent number.
func numbered(name string) bool { return baseName(name) != name }

// suffixNumber returns the last numeric component of a name, for a stable
// order among symbols of one base name.
func suffixNumber(name string) int {
	parts := strings.Split(name, ".")
	for i := len(parts) - 1; i > 0; i-- {
		if n, err := strconv.Atoi(parts[i]); err == nil {
			return n
		}
	}
	return -1
}

// correlate pairs the entities of the two objects. Functions go first,
// so that data can be told apart by the (correlated) functions using it.
func (d *differ) correlate() {
	d.pair(d.orig.funcs, d.patched.funcs, nil)
	owners := d.ownerIndex(d.orig)
	for e, names := range d.ownerIndex(d.patched) {
		owners[e] = names
	}
	plain := func(es []*entity) []*entity {
		var out []*entity
		for _, e := range es {
			if !isSpecialStatic(e) {
				out = append(out, e)
			}
		}
		return out
	}
	d.pair(plain(d.orig.data), plain(d.patched.data), func(e *entity) string { return owners[e] })
}

func link(a, b *entity) { a.twin, b.twin = b, a }

// pair correlates one kind of entity. Global symbols and local symbols
// without build-dependent numbers correlate by exact name. Numbered
// local symbols correlate within their base name: alone, by owner (the
// functions that use them), by identical content, then by order.
func (d *differ) pair(orig, patched []*entity, owner func(*entity) string) {
	exact := func(e *entity) bool { return e.sym.Bind != elf.STB_LOCAL || !numbered(e.name()) }
	byName := make(map[string][]*entity)
	for _, e := range orig {
		if exact(e) {
			byName[e.name()] = append(byName[e.name()], e)
		}
	}
	for _, b := range patched {
		if !exact(b) {
			continue
		}
		if as := byName[b.name()]; len(as) > 0 {
			link(as[0], b)
			byName[b.name()] = as[1:]
		}
	}

	groups := func(es []*entity) map[string][]*entity {
		m := make(map[string][]*entity)
		for _, e := range es {
			if e.twin == nil && !exact(e) {
				m[baseName(e.name())] = append(m[baseName(e.name())], e)
			}
		}
		for _, g := range m {
			slices.SortStableFunc(g, func(a, b *entity) int { return suffixNumber(a.name()) - suffixNumber(b.name()) })
		}
		return m
	}
	og, pg := groups(orig), groups(patched)
	bases := make([]string, 0, len(pg))
	for b := range pg {
		bases = append(bases, b)
	}
	slices.Sort(bases)
	for _, base := range bases {
		as, bs := og[base], pg[base]
		if len(as) == 0 {
			continue
		}
		if len(as) == 1 && len(bs) == 1 {
			link(as[0], bs[0])
			continue
		}
		// Content and order only pair statics whose users overlap: two
		// zero-initialised counters of equal size look alike, and pairing
		// a new function's counter with a removed one's would hand it the
		// running value of another variable.
		compat := func(a, b *entity) bool { return true }
		if owner != nil {
			matchBy(as, bs, owner, compat)
			compat = func(a, b *entity) bool { return sharesOwner(owner(a), owner(b)) }
		}
		matchBy(as, bs, d.fingerprint, compat)
		as, bs = unpaired(as), unpaired(bs)
		if len(as) == len(bs) {
			for i := range as {
				if compat(as[i], bs[i]) {
					link(as[i], bs[i])
				}
			}
		}
	}
}

// sharesOwner reports whether two owner lists (sorted, comma-separated
// function names in the original's terms) have a function in common, or
// are both empty.
func sharesOwner(a, b string) bool {
	if a == "" || b == "" {
		return a == b
	}
	for _, n := range strings.Split(a, ",") {
		for _, m := range strings.Split(b, ",") {
			if n == m {
				return true
			}
		}
	}
	return false
}

// matchBy links unpaired entities whose key is equal and unique on both
// sides. Each key is computed once.
func matchBy(as, bs []*entity, key func(*entity) string, compat func(a, b *entity) bool) {
	keys := make(map[*entity]string)
	count := func(es []*entity) map[string][]*entity {
		m := make(map[string][]*entity)
		for _, e := range es {
			if e.twin == nil {
				k := key(e)
				keys[e] = k
				m[k] = append(m[k], e)
			}
		}
		return m
	}
	am, bm := count(as), count(bs)
	for _, b := range bs {
		if b.twin != nil {
			continue
		}
		if x, y := am[keys[b]], bm[keys[b]]; len(x) == 1 && len(y) == 1 && compat(x[0], y[0]) {
			link(x[0], y[0])
		}
	}
}

func unpaired(es []*entity) []*entity {
	var out []*entity
	for _, e := range es {
		if e.twin == nil {
			out = append(out, e)
		}
	}
	return out
}

// ownerIndex names, for each data entity of o, the functions whose code
// refers to it, in the original object's terms, in one pass over the
// functions' relocations.
func (d *differ) ownerIndex(o *object) map[*entity]string {
	sets := make(map[*entity][]string)
	for _, f := range o.funcs {
		name := d.stableName(f)
		for _, r := range f.relocs {
			if t := o.resolve(f.sec, r); t.kind == refEntity && !t.ent.isFunc {
				if n := sets[t.ent]; len(n) == 0 || n[len(n)-1] != name {
					sets[t.ent] = append(n, name)
				}
			}
		}
	}
	index := make(map[*entity]string, len(sets))
	for e, names := range sets {
		slices.Sort(names)
		index[e] = strings.Join(slices.Compact(names), ",")
	}
	return index
}

// stableName is the name of an entity in the original object's terms:
// its own name in the original, its twin's in the patched object, and a
// marked name for an entity that has no twin.
func (d *differ) stableName(e *entity) string {
	if e.obj == d.orig {
		return e.name()
	}
	if e.twin != nil {
		return e.twin.name()
	}
	return "+" + e.name()
}
