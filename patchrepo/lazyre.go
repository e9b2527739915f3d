package patchrepo

import (
	"regexp"
	"sync"
)

// lazyRegexp is a regular expression compiled on its first use, not at
// program start: every command of the livefix binary links this package,
// and compiling the bounded repetitions ({0,252} and the like) at init
// cost milliseconds of cold start even to commands that never validate
// anything (livefix process patch must start in a few milliseconds).
type lazyRegexp struct {
	expr string
	once sync.Once
	re   *regexp.Regexp
}

func lazyRE(expr string) *lazyRegexp { return &lazyRegexp{expr: expr} }

// MatchString is regexp.MatchString of the compiled expression.
func (l *lazyRegexp) MatchString(s string) bool {
	l.once.Do(func() { l.re = regexp.MustCompile(l.expr) })
	return l.re.MatchString(s)
}
