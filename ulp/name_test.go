package ulp

import (
	"regexp"
	"strings"
	"testing"
)

// TestValidName checks the hand-written check against the expression it
// replaces.
func TestValidName(t *testing.T) {
	re := regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$`)
	for _, s := range []string{"", "a", "A9", "x.y_z+1-2", ".a", "-a", "_a", "+a", "a b", "a/b", "é", "a\x00",
		strings.Repeat("a", 128), strings.Repeat("a", 129), "9" + strings.Repeat("-", 127), "a:b", "a~b"} {
		if got, want := ValidName(s), re.MatchString(s); got != want {
			t.Errorf("ValidName(%q) = %v, want %v", s, got, want)
		}
	}
}
