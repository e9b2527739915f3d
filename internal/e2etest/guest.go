package e2etest

import (
	"regexp"
	"slices"
	"strings"
	"testing"
)

var resultRE = regexp.MustCompile(`(?m)^(PASS|FAIL) (\S+)(.*)$`)

// CheckGuest reads the "PASS name" and "FAIL name detail" lines a guest
// script printed and requires every check in want to have passed exactly
// once, none to have failed and none outside want to have run.
func CheckGuest(t testing.TB, output string, want []string) {
	t.Helper()
	passed := map[string]int{}
	for _, m := range resultRE.FindAllStringSubmatch(output, -1) {
		if m[1] == "FAIL" {
			t.Errorf("guest check %s failed:%s", m[2], m[3])
			continue
		}
		passed[m[2]]++
	}
	for _, w := range want {
		if passed[w] != 1 {
			t.Errorf("guest check %s passed %d times, want once", w, passed[w])
		}
	}
	for k := range passed {
		if !slices.Contains(want, k) {
			t.Errorf("guest check %s is not in the test's list", k)
		}
	}
}

// GuestLog returns a writer for kernelvm.Config.Log that copies the
// guest's console into t's log when the tests run with -v.
func GuestLog(t testing.TB) *Log { return &Log{t: t} }

// Log is GuestLog's writer.
type Log struct{ t testing.TB }

func (w *Log) Write(p []byte) (int, error) {
	if testing.Verbose() {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// GuestShell is the shell prelude of the guest scripts: t NAME CMD...
// runs one check and prints the "PASS NAME" or "FAIL NAME: CMD" line that
// CheckGuest reads; has/hasnt test for a substring, eq compares two
// strings (printing both when they differ), not negates a command, and
// gone says a livepatch module NAME is neither in sysfs nor loaded.
// Scripts start with it: const script = e2etest.GuestShell + `...`.
const GuestShell = `
t() {
	name=$1; shift
	if "$@"; then echo "PASS $name"; else echo "FAIL $name: $*"; fi
}
has() { case "$1" in *"$2"*) return 0;; esac; return 1; }
hasnt() { ! has "$1" "$2"; }
not() { ! "$@"; }
eq() { [ "$1" = "$2" ] || { echo "  got: $1"; echo " want: $2"; return 1; }; }
gone() { [ ! -e /sys/kernel/livepatch/$1 ] && [ ! -e /sys/module/$1 ]; }
`
