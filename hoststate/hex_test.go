package hoststate

import (
	"regexp"
	"strings"
	"testing"
)

// TestLowerHex checks the hand-written check against the expression it
// replaces.
func TestLowerHex(t *testing.T) {
	re := regexp.MustCompile(`^[0-9a-f]{2,128}$`)
	for _, s := range []string{"", "a", "ab", "0f", "AB", "0g", "a b", strings.Repeat("f", 128), strings.Repeat("f", 129), "12\n"} {
		if got, want := lowerHex(s), re.MatchString(s); got != want {
			t.Errorf("lowerHex(%q) = %v, want %v", s, got, want)
		}
	}
}
