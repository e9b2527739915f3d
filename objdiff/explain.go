package objdiff

import (
	"debug/elf"
	"encoding/binary"
	"fmt"
	"io"
	"slices"
	"strings"
)

// Verdicts of an Explanation.
const (
	VerdictChanged     = "changed"      // replaced through the live patch
	VerdictEscalated   = "escalated"    // changed without an ftrace entry: private copy, callers replaced
	VerdictNew         = "new"          // a new function the patch carries
	VerdictNewData     = "new data"     // a new object the patch carries
	VerdictCopied      = "copied"       // read-only data or a special static the patch carries its own copy of
	VerdictChangedData = "changed data" // changed read-only data of a refused result
	VerdictLineOnly    = "line-only"    // differs only in __LINE__ values: ignored
	VerdictRefused     = "refused"      // cannot be live patched; Why says why and what to do
)

// Explanation is the engine's decision about one symbol.
type Explanation struct {
	Symbol  string `json:"symbol"`
	Verdict string `json:"verdict"`
	Why     string `json:"why"`
}

var verdictOrder = []string{VerdictForced, VerdictRefused, VerdictChanged, VerdictEscalated, VerdictNew, VerdictNewData, VerdictChangedData, VerdictCopied, VerdictIgnored, VerdictLineOnly}

func (d *differ) explain(res *Result) []Explanation {
	var out []Explanation
	add := func(sym, verdict, why string) { out = append(out, Explanation{sym, verdict, why}) }
	refused := map[string]bool{}
	for _, r := range res.Refused {
		refused[r.Symbol] = true
		add(r.Symbol, VerdictRefused, r.Reason)
	}
	var users *userIndex
	dyndbg := d.patched.f.SectionByName(dyndbgSection) != nil
	for _, f := range d.patched.funcs {
		if refused[f.name()] {
			continue
		}
		switch f.state {
		case changed:
			why := f.why
			if isFragment(f) {
				why += " (a split-off part, replaced with its parent)"
			}
			if by := d.addrOrig[f]; len(by) > 0 {
				slices.Sort(by)
				why += "; the address " + strings.Join(by, ", ") + " stores is the original's, which the live patch redirects"
			}
			add(f.name(), VerdictChanged, why)
		case private:
			if users == nil {
				users = d.indexUsers()
			}
			var cs []string
			for _, c := range users.callers[f] {
				cs = append(cs, c.name())
			}
			slices.Sort(cs)
			add(f.name(), VerdictEscalated, "changed, but the original has no __fentry__ call, so ftrace cannot redirect it; the patch carries its new copy privately and replaces its callers: "+strings.Join(slices.Compact(cs), ", "))
		case added:
			add(f.name(), VerdictNew, "new function")
		case lineOnly:
			add(f.name(), VerdictLineOnly, f.why)
		case unchanged:
			if dyndbg && f.twin != nil && d.dyndbgLineMoved(f.twin, f) {
				add(f.name(), VerdictLineOnly, "only the lines recorded in its dynamic debug descriptors moved")
			}
		}
	}
	for _, e := range d.patched.data {
		if refused[e.name()] {
			continue
		}
		switch {
		case isSpecialStatic(e) && d.statics[e]:
			kind := "special static"
			switch {
			case isDyndbg(e):
				kind = "dynamic debug descriptor"
			case baseName(e.name()) == "__key":
				kind = "lockdep class key"
			case baseName(e.name()) == "_rs" || baseName(e.name()) == "__rs":
				kind = "ratelimit state"
			case baseName(e.name()) == "__func__":
				kind = "function name"
			case strings.HasPrefix(e.sec.Name, ".data.once"):
				kind = "once-flag"
			}
			add(e.name(), VerdictCopied, kind+" used by included code: the patch has its own, never the running kernel's")
		case isSpecialStatic(e):
		case e.state == added && e.sym.Type != elf.STT_NOTYPE:
			add(e.name(), VerdictNewData, "new object")
		case d.rodataChanged[e] && res.Output == nil:
			why := "changed read-only data"
			if e.why != "" {
				why = e.why
			}
			add(e.name(), VerdictChangedData, why+"; used by "+strings.Join(d.usersOf(e), ", "))
		case d.rodataChanged[e]:
			why := "changed read-only data: the patch carries a copy for the code it replaces"
			if e.why != "" {
				why = e.why + "; the patch carries a copy for the code it replaces"
			}
			add(e.name(), VerdictCopied, why)
		}
	}
	out = append(out, d.markerExplanations()...)
	slices.SortStableFunc(out, func(a, b Explanation) int {
		if c := slices.Index(verdictOrder, a.Verdict) - slices.Index(verdictOrder, b.Verdict); c != 0 {
			return c
		}
		return strings.Compare(a.Symbol, b.Symbol)
	})
	return out
}

// dyndbgLineMoved reports whether two functions with equal relocations
// refer to dynamic debug descriptors whose recorded lines differ.
func (d *differ) dyndbgLineMoved(a, b *entity) bool {
	if len(a.relocs) != len(b.relocs) {
		return false
	}
	line := func(e *entity) uint32 {
		c := e.content()
		if len(c) < ddebugLine+4 {
			return 0
		}
		return binary.LittleEndian.Uint32(c[ddebugLine:]) & (1<<18 - 1)
	}
	for i := range a.relocs {
		ta, tb := a.obj.resolve(a.sec, a.relocs[i]), b.obj.resolve(b.sec, b.relocs[i])
		if ta.kind == refEntity && tb.kind == refEntity && isDyndbg(ta.ent) && isDyndbg(tb.ent) && line(ta.ent) != line(tb.ent) {
			return true
		}
	}
	return false
}

// WriteExplanation prints res.Explain for one source file: a header line,
// then one line per symbol, "  VERDICT  SYMBOL: WHY".
func WriteExplanation(w io.Writer, source string, res *Result) error {
	status := "patchable"
	if len(res.Forced) > 0 {
		status = "patchable, FORCED UNSAFE"
	}
	switch {
	case len(res.Refused) > 0:
		status = "refused"
	case res.NoFunctionalChange:
		status = "no functional change"
	}
	if _, err := fmt.Fprintf(w, "%s: %s\n", source, status); err != nil {
		return err
	}
	for _, e := range res.Explain {
		if _, err := fmt.Fprintf(w, "  %-12s  %s: %s\n", e.Verdict, e.Symbol, e.Why); err != nil {
			return err
		}
	}
	return nil
}
