package objdiff

import (
	"debug/elf"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/livefix/livefix/elfobj"
)

// Refusal reasons. Every refusal's Reason starts with one of these.
const (
	ReasonDataSize = "data size changed"
	ReasonDataInit = "data initial value changed"
	ReasonInitCode = "init code changed"
	ReasonExitCode = "exit code changed"
	ReasonInitData = "init data changed"
	ReasonNoFentry = "no fentry"
	ReasonSection  = "unsupported section"
	ReasonExport   = "export changed"
	// ReasonUnreached: changed read-only data that no included function
	// uses (it is reached only through tables the patch does not replace).
	ReasonUnreached = "changed read-only data not reachable from patched code"
	// ReasonAmbiguous: numbered statics that cannot be told apart.
	ReasonAmbiguous = "ambiguous static"
	// ReasonAddress: a changed function without an ftrace entry whose
	// address the running kernel stores.
	ReasonAddress = "address stored"
)

// ErrNoFunctionalChange is returned by Result.Err when the objects differ
// at most in __LINE__ values.
var ErrNoFunctionalChange = errors.New("no functional change")

// RefusedError is returned by Result.Err when some change cannot be live
// patched.
type RefusedError struct{ Refused []Refusal }

func (e *RefusedError) Error() string {
	parts := make([]string, len(e.Refused))
	for i, r := range e.Refused {
		parts[i] = r.Symbol + ": " + r.Reason
	}
	return "cannot live patch: " + strings.Join(parts, "; ")
}

// Refusal names a change that cannot be live patched, and why.
type Refusal struct {
	Symbol string `json:"symbol"`
	Reason string `json:"reason"`
}

// ChangeSet is the machine-readable summary of a diff. Names are symbol
// names as they appear in the patched object.
type ChangeSet struct {
	Changed []string `json:"changed"`
	New     []string `json:"new"`
	NewData []string `json:"new_data"`
	// Private lists changed functions that have no ftrace entry: the
	// patch carries their new copy under its own name and replaces their
	// callers instead (listed in Changed).
	Private []string `json:"private,omitempty"`
	// Forced lists the refusals KPATCH_FORCE_UNSAFE overrode: the
	// functions are included although their old copy may still run.
	Forced []Refusal `json:"forced,omitempty"`
	// Ignored lists what changed in sections KPATCH_IGNORE_SECTION
	// ignores: the running copies stay.
	Ignored            []string  `json:"ignored,omitempty"`
	Refused            []Refusal `json:"refused"`
	NoFunctionalChange bool      `json:"no_functional_change"`
}

// Func is a function whose running copy a live patch replaces.
type Func struct {
	// Name is the function's name in the patched object and in Output.
	Name string
	// OrigName is its name in the original object, which the running
	// target knows it by.
	OrigName string
	// Local reports a static function (its name may not be unique in
	// the running target).
	Local bool
	// Reason says what changed, for verbose output.
	Reason string
}

// Extern is a reference from the included code to code or data that the
// patch does not carry: it must be resolved against the running target.
type Extern struct {
	// Name is the symbol's name in Output, which is its name in the
	// running target.
	Name string
	// Local reports a static symbol of the patched translation unit
	// (resolved by position in the target's symbol table), as opposed to
	// a global symbol or an undefined reference of the original object.
	Local bool
	// Func reports a function rather than data.
	Func bool
}

// Result is the outcome of Diff.
type Result struct {
	ChangeSet
	// Funcs lists the functions to redirect, sorted by Name.
	Funcs []Func
	// Externals lists the symbols Output leaves undefined, sorted.
	Externals []Extern
	// Output holds the included parts; nil when something was refused or
	// nothing changed.
	Output *elfobj.File
	// Explain says, symbol by symbol, what the engine decided and why
	// (livefix-build kernel --explain).
	Explain []Explanation
}

// Err returns nil when the result is a patchable change, a *RefusedError
// when something was refused, and ErrNoFunctionalChange otherwise.
func (r *Result) Err() error {
	switch {
	case len(r.Refused) > 0:
		return &RefusedError{Refused: r.Refused}
	case r.NoFunctionalChange:
		return ErrNoFunctionalChange
	}
	return nil
}

// Options tunes Diff.
type Options struct {
	// Fentry controls the "no fentry" refusal: FentryAuto requires an
	// __fentry__ call in every changed function when the original object
	// was compiled with -mfentry.
	Fentry FentryMode
}

// FentryMode says whether changed functions need an ftrace entry.
type FentryMode int

const (
	FentryAuto FentryMode = iota
	FentryRequired
	FentryIgnored
)

type differ struct {
	orig, patched *object
	opts          Options
	anonKeys      map[anonMemo]string
	specs         map[*object][]*special
	owned         map[*entity][]ownedEntry
	refused       []Refusal
	rodataChanged map[*entity]bool
	ssKeys        map[*entity]string
	// statics are the special statics included code uses (extract).
	statics map[*entity]bool
	// addrOrig names, per replaced function, the included parts whose
	// stored address of it refers to the original (extract).
	addrOrig map[*entity][]string
	// ignoreSec and force are the patched object's KPATCH_IGNORE_SECTION
	// sections and KPATCH_FORCE_UNSAFE functions (markers.go);
	// ignoredEnts the changes ignored, overridden the refusals forced.
	ignoreSec   map[string]bool
	force       map[string]bool
	ignoredEnts []*entity
	overridden  []Refusal
}

// Diff compares the original and patched objects of one translation unit.
// The two files are not modified.
func Diff(orig, patched *elfobj.File, opts Options) (*Result, error) {
	d := &differ{
		orig: analyse(orig), patched: analyse(patched), opts: opts,
		anonKeys: make(map[anonMemo]string), specs: make(map[*object][]*special),
		owned: make(map[*entity][]ownedEntry), rodataChanged: make(map[*entity]bool),
		ssKeys: make(map[*entity]string), statics: make(map[*entity]bool), addrOrig: make(map[*entity][]string),
		ignoreSec: make(map[string]bool), force: make(map[string]bool),
	}
	d.readMarkers()
	d.indexSpecials(d.orig)
	d.indexSpecials(d.patched)
	d.correlate()
	d.compareFuncs()
	d.compareData()
	d.applyIgnores()
	d.propagate()
	d.checkSections()
	d.checkExports()
	res := d.result()
	if len(res.Refused) == 0 && !res.NoFunctionalChange {
		out, err := d.extract(res)
		if err != nil {
			return nil, fmt.Errorf("extract included parts: %w", err)
		}
		res.Output = out
	}
	res.Explain = d.explain(res)
	return res, nil
}

func (d *differ) refuse(sym, reason string) {
	d.refused = append(d.refused, Refusal{Symbol: sym, Reason: reason})
}

func isInit(sec *elfobj.Section) bool {
	return strings.HasPrefix(sec.Name, ".init.") || sec.Name == ".init"
}

// isExit reports a module's __exit code (.exit.text): notrace, run only
// when the module is unloaded, discarded from vmlinux.
func isExit(sec *elfobj.Section) bool {
	return strings.HasPrefix(sec.Name, ".exit.") || sec.Name == ".exit"
}

// isFragment reports a part of a function split off by gcc (foo.cold),
// which has no entry of its own and is reached only from its parent.
func isFragment(e *entity) bool { return strings.HasSuffix(baseName(e.name()), ".cold") }

func hasFentry(e *entity) bool {
	for _, r := range e.relocs {
		if r.Sym != nil && r.Sym.Name == "__fentry__" && r.Offset-e.start <= 16 {
			return true
		}
	}
	return false
}

func (d *differ) compareFuncs() {
	for _, b := range d.patched.funcs {
		a := b.twin
		if a == nil {
			b.state = added
			continue
		}
		bytesSame := sameContent(a, b)
		relocWhy := d.relocDiff(a, b)
		switch {
		case !bytesSame && relocWhy == "" && d.lineOnly(a, b):
			b.state, b.why = lineOnly, "only the line argument of a __might_sleep-style call moved"
		case !bytesSame:
			b.state, b.why = changed, "code changed"
		case relocWhy != "":
			b.state, b.why = changed, relocWhy
		}
		if b.state != changed {
			if differs, line, what := d.specialDiff(a, b); differs && !line {
				b.state, b.why = changed, "its "+what+" entries changed"
			} else if differs && b.state == unchanged {
				b.state, b.why = lineOnly, "only the line fields of its "+what+" entries moved"
			}
		}
	}
}

func (d *differ) compareData() {
	for _, b := range d.patched.data {
		a := b.twin
		if a == nil {
			b.state = added
			continue
		}
		if isSpecialStatic(b) || d.ignoredBy(b) {
			continue
		}
		writable := a.sec.Flags&elf.SHF_WRITE != 0 || b.sec.Flags&elf.SHF_WRITE != 0
		sizeChanged := a.size() != b.size()
		valueChanged := !sizeChanged && !sameContent(a, b) || d.relocDiff(a, b) != ""
		if !sizeChanged && !valueChanged {
			continue
		}
		b.state = changed
		switch {
		case isInit(a.sec) || isInit(b.sec):
			d.refuse(b.name(), ReasonInitData+": only boot-time code uses it, so a live patch cannot change it")
		case writable && sizeChanged:
			d.refuse(b.name(), fmt.Sprintf("%s: %d bytes instead of %d; the running object cannot grow in place (use shadow variables for new per-object state)", ReasonDataSize, b.size(), a.size()))
		case writable:
			d.refuse(b.name(), ReasonDataInit+": the running value is what counts; set it from code in the patch if the new value must take effect")
		case b.sym.Bind != elf.STB_LOCAL:
			d.refuse(b.name(), ReasonDataInit+": global read-only object; code outside this file would keep reading the old copy")
		default:
			d.rodataChanged[b] = true
		}
	}
}

func (d *differ) needFentry() bool {
	switch d.opts.Fentry {
	case FentryRequired:
		return true
	case FentryIgnored:
		return false
	}
	return d.orig.fentry
}

// parentOf returns the function a fragment was split from.
func (d *differ) parentOf(frag *entity) *entity {
	name := frag.name()
	i := strings.LastIndex(name, ".cold")
	if i <= 0 {
		return nil
	}
	parent := name[:i]
	for _, f := range frag.obj.funcs {
		if f.name() == parent {
			return f
		}
	}
	return nil
}

// checkSections refuses changes in sections that hold neither functions,
// nor objects, nor known special tables, nor anonymous data used by code:
// the engine cannot say what such a change means.
func (d *differ) checkSections() {
	used := func(o *object) map[*elfobj.Section]bool {
		m := make(map[*elfobj.Section]bool)
		for sec, rs := range o.relocs {
			for _, r := range rs {
				if t := o.resolve(sec, r); t.sec != nil && t.kind != refEntity {
					m[t.sec] = true
				}
			}
		}
		return m
	}
	uo, up := used(d.orig), used(d.patched)
	consider := func(o *object, s *elfobj.Section, used map[*elfobj.Section]bool) bool {
		// A mergeable string section that no relocation uses holds
		// nothing anyone reads (gcc leaves literals behind that it
		// turned into immediates).
		unusedStrings := s.Flags&elf.SHF_MERGE != 0 && s.Flags&elf.SHF_STRINGS != 0 && !used[s]
		return !ignoredSection(s) && !d.ignoreSec[s.Name] && len(o.entities[s]) == 0 && tableFor(s.Name) == nil && !exportSection(s.Name) && !unusedStrings &&
			!parallelOf(s.Name) && !used[s] && s.Len() > 0
	}
	seen := make(map[string]bool)
	for _, sb := range d.patched.f.Sections {
		if !consider(d.patched, sb, up) || seen[sb.Name] {
			continue
		}
		seen[sb.Name] = true
		sa := d.orig.f.SectionByName(sb.Name)
		if sa == nil {
			d.refuse(sb.Name, ReasonSection+" "+sb.Name+": the patch adds it and the engine does not know what it means")
			continue
		}
		if d.anonKey(d.orig, sa, false) != d.anonKey(d.patched, sb, false) {
			d.refuse(sb.Name, ReasonSection+" "+sb.Name+": its contents changed and the engine does not know what they mean")
		}
	}
	for _, sa := range d.orig.f.Sections {
		if consider(d.orig, sa, uo) && !seen[sa.Name] && d.patched.f.SectionByName(sa.Name) == nil {
			d.refuse(sa.Name, ReasonSection+" "+sa.Name+": the patch removes it and the engine does not know what it meant")
		}
	}
	// A section the engine does not know must not hold entries for code
	// the patch replaces: they would be silently dropped.
	for _, sb := range d.patched.f.Sections {
		if !consider(d.patched, sb, up) || isCode(sb) {
			continue
		}
		for _, r := range d.patched.relocs[sb] {
			t := d.patched.resolve(sb, r)
			if t.kind == refEntity && t.ent.isFunc && (t.ent.state == changed || t.ent.state == added || t.ent.state == private) {
				why := ReasonSection + " " + sb.Name + ": it holds an entry for this function that a live patch would lose"
				if !d.forced(t.ent, why) {
					d.refuse(t.ent.name(), why)
				}
				break
			}
		}
	}
	// A special table the engine cannot split must not hold entries of
	// code the patch replaces.
	for _, sp := range d.specs[d.patched] {
		if sp.err != nil {
			for _, f := range d.patched.funcs {
				if f.state == changed || f.state == added || f.state == private {
					d.refuse(sp.sec.Name, ReasonSection+": "+sp.err.Error())
					break
				}
			}
		}
	}
}

func (d *differ) result() *Result {
	res := &Result{}
	res.Changed, res.New, res.NewData = []string{}, []string{}, []string{}
	refusedSym := make(map[string]bool)
	for _, r := range d.refused {
		refusedSym[r.Symbol] = true
	}
	for _, f := range d.patched.funcs {
		if refusedSym[f.name()] {
			continue
		}
		switch f.state {
		case changed:
			res.Changed = append(res.Changed, f.name())
			if !isFragment(f) {
				res.Funcs = append(res.Funcs, Func{Name: f.name(), OrigName: f.twin.name(), Local: f.twin.sym.Bind == elf.STB_LOCAL, Reason: f.why})
			}
		case added:
			res.New = append(res.New, f.name())
		case private:
			res.Private = append(res.Private, f.name())
		}
	}
	for _, e := range d.patched.data {
		if e.state == added && !refusedSym[e.name()] && !isSpecialStatic(e) {
			res.NewData = append(res.NewData, e.name())
		}
	}
	slices.Sort(res.Changed)
	slices.Sort(res.New)
	slices.Sort(res.NewData)
	slices.Sort(res.Private)
	slices.SortFunc(res.Funcs, func(a, b Func) int { return strings.Compare(a.Name, b.Name) })
	for _, e := range d.ignoredEnts {
		res.Ignored = append(res.Ignored, e.name())
	}
	slices.Sort(res.Ignored)
	res.Forced = d.forcedRefusals()
	res.Refused = slices.Clone(d.refused)
	if res.Refused == nil {
		res.Refused = []Refusal{}
	}
	slices.SortFunc(res.Refused, func(a, b Refusal) int { return strings.Compare(a.Symbol, b.Symbol) })
	res.NoFunctionalChange = len(res.Changed) == 0 && len(res.New) == 0 && len(res.NewData) == 0 && len(res.Private) == 0 && len(res.Refused) == 0
	return res
}
