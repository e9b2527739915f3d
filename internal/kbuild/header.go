package kbuild

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"
)

// DefaultMaxHeaderUnits is how many translation units a header change may
// make BuildPair compile when Tree.MaxHeaderUnits is zero.
const DefaultMaxHeaderUnits = 100

// ErrTooManyUnits is wrapped by *HeaderUnitsError.
var ErrTooManyUnits = errors.New("changed header is included by too many translation units")

// HeaderUnitsError refuses a header change whose includers exceed the
// limit: compiling them all twice would take too long to be useful.
type HeaderUnitsError struct {
	Headers  []string // the changed headers
	Units    int      // translation units of this configuration that include them
	Limit    int
	Examples []string // a few of those units
	// ByIncludeLines is set when Units counts the files whose #include
	// lines reach the headers, before asking kbuild which it builds:
	// done when that count alone is several times the limit.
	ByIncludeLines bool
}

func (e *HeaderUnitsError) Error() string {
	what := "translation units of this kernel configuration"
	if e.ByIncludeLines {
		what = "C files (by the tree's #include lines)"
	}
	return fmt.Sprintf("%s is included by %d %s (%s, ...), more than the limit of %d: "+
		"each would be compiled twice and diffed; raise the limit with --max-header-units %d if that is what you want, "+
		"or move the fix out of the header (for example into an out-of-line function in one .c file)",
		strings.Join(e.Headers, ", "), e.Units, what, strings.Join(e.Examples, ", "), e.Limit, e.Units)
}

func (e *HeaderUnitsError) Unwrap() error { return ErrTooManyUnits }

func (tr *Tree) maxHeaderUnits() int {
	if tr.MaxHeaderUnits > 0 {
		return tr.MaxHeaderUnits
	}
	return DefaultMaxHeaderUnits
}

// headerUnits returns the C and assembly units of this configuration that
// may include any of headers: the tree's #include lines give candidates
// (cached index), kbuild's per-directory object lists keep those this
// .config builds, and the dependency records of units compiled before
// (cached from their .o.cmd files) rule out those that do not read the
// headers. Units without a record yet are kept; BuildPair reads their
// record after the pristine build. The caller holds the tree lock.
func (tr *Tree) headerUnits(ctx context.Context, headers []string, log io.Writer) (units, asm []string, err error) {
	start := time.Now()
	ix, err := tr.loadIncludeIndex(ctx, log)
	if err != nil {
		return nil, nil, err
	}
	textual := ix.includers(headers)
	deps := tr.loadRecords(unitDepsName).Deps
	var cands []string
	ruledOut := 0
	for _, u := range textual {
		if d, ok := deps[u]; ok && !readsAny(d, headers) {
			ruledOut++
			continue
		}
		cands = append(cands, u)
	}
	limit := tr.maxHeaderUnits()
	// Asking kbuild about many directories costs more than the refusal
	// is worth: a header with several times the limit in C includers is
	// refused on the #include lines alone.
	if n := countSuffix(cands, ".c"); n > 4*limit {
		return nil, nil, &HeaderUnitsError{Headers: headers, Units: n, Limit: limit, Examples: first(cands, 3), ByIncludeLines: true}
	}
	built, err := tr.builtUnits(ctx, cands)
	if err != nil {
		return nil, nil, fmt.Errorf("find the units including %s: %w", strings.Join(headers, ", "), err)
	}
	for _, u := range built {
		if strings.HasSuffix(u, ".S") {
			asm = append(asm, u)
		} else {
			units = append(units, u)
		}
	}
	fmt.Fprintf(log, "kbuild: %s: %d C and %d assembly units of this configuration include it (%d files by #include lines, %d ruled out by kbuild's dependency records) in %.1fs\n",
		strings.Join(headers, ", "), len(units), len(asm), len(textual), ruledOut, time.Since(start).Seconds())
	if len(units) > limit {
		return nil, nil, &HeaderUnitsError{Headers: headers, Units: len(units), Limit: limit, Examples: first(units, 3)}
	}
	return units, asm, nil
}

func readsAny(deps, headers []string) bool {
	for _, h := range headers {
		if slices.Contains(deps, h) {
			return true
		}
	}
	return false
}

func countSuffix(list []string, suffix string) int {
	n := 0
	for _, s := range list {
		if strings.HasSuffix(s, suffix) {
			n++
		}
	}
	return n
}

func first(list []string, n int) []string {
	if len(list) > n {
		return list[:n]
	}
	return list
}

// asmText reads a preprocessed assembly file without its line markers
// and blank lines, so that a header change that only moves lines does not
// count as a change of the assembly.
func asmText(file string) ([]byte, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), 16*1024*1024)
	for sc.Scan() {
		l := bytes.TrimSpace(sc.Bytes())
		if len(l) == 0 || (len(l) > 2 && l[0] == '#' && l[1] == ' ' && l[2] >= '0' && l[2] <= '9') {
			continue
		}
		out.Write(l)
		out.WriteByte('\n')
	}
	return out.Bytes(), sc.Err()
}

// progressWriter counts kbuild's "  CC" lines in make's output and
// reports how many of the expected objects are done, at most every few
// seconds.
type progressWriter struct {
	out   io.Writer
	which string
	total int
	start time.Time
	last  time.Time
	done  int
	buf   []byte
}

func (p *progressWriter) Write(b []byte) (int, error) {
	p.buf = append(p.buf, b...)
	for {
		i := bytes.IndexByte(p.buf, '\n')
		if i < 0 {
			break
		}
		f := strings.Fields(string(p.buf[:i]))
		p.buf = p.buf[i+1:]
		if len(f) >= 2 && (f[0] == "CC" || f[0] == "CPP") && (strings.HasSuffix(f[len(f)-1], ".o") || strings.HasSuffix(f[len(f)-1], ".s")) {
			p.done++
			if now := time.Now(); now.Sub(p.last) >= 5*time.Second || p.done == p.total {
				p.last = now
				fmt.Fprintf(p.out, "kbuild: compiling (%s): %d/%d started, %.0fs\n", p.which, p.done, p.total, now.Sub(p.start).Seconds())
			}
		}
	}
	return len(b), nil
}
