package e2etest

import (
	"fmt"
	"slices"
	"testing"
)

// recorder is a testing.TB that keeps the errors it is given.
type recorder struct {
	testing.TB
	errs []string
}

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func TestCheckGuest(t *testing.T) {
	tests := []struct {
		name   string
		output string
		want   []string
		errs   []string
	}{
		{"all passed", "boot noise\nPASS a\nPASS b extra\n", []string{"a", "b"}, nil},
		{"failed", "PASS a\nFAIL b got 1 want 2\n", []string{"a", "b"},
			[]string{"guest check b failed: got 1 want 2", "guest check b passed 0 times, want once"}},
		{"missing", "PASS a\n", []string{"a", "b"}, []string{"guest check b passed 0 times, want once"}},
		{"twice", "PASS a\nPASS a\n", []string{"a"}, []string{"guest check a passed 2 times, want once"}},
		{"unexpected", "PASS a\nPASS c\n", []string{"a"}, []string{"guest check c is not in the test's list"}},
		{"not at line start", "xPASS a\n", []string{"a"}, []string{"guest check a passed 0 times, want once"}},
		{"empty output", "", []string{"a"}, []string{"guest check a passed 0 times, want once"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &recorder{TB: t}
			CheckGuest(r, tt.output, tt.want)
			if !slices.Equal(r.errs, tt.errs) {
				t.Errorf("errors %q, want %q", r.errs, tt.errs)
			}
		})
	}
}
