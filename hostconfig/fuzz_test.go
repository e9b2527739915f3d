package hostconfig

import (
	"strings"
	"testing"
)

// FuzzParse: any configuration file is refused with a message or parsed,
// never a panic; an unknown key's message names a line.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"enabled = false\n", "# c\nenabled = true\nx = 1\n", "[a]\nb = 1\n", "enabled = \n", "a.b.c = 1"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		_, err := Parse(b)
		if err != nil && strings.Contains(err.Error(), "unknown key") && !strings.HasPrefix(err.Error(), "line ") {
			t.Fatalf("unknown key without a line: %v", err)
		}
	})
}
