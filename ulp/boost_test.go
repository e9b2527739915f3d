package ulp

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

func TestParseTaskStat(t *testing.T) {
	rest := func(state string, cpu string) string {
		f := make([]string, 50)
		for i := range f {
			f[i] = "0"
		}
		f[0], f[36] = state, cpu
		return strings.Join(f, " ")
	}
	tests := []struct {
		name      string
		stat      string
		wantState byte
		wantCPU   int
		wantOK    bool
	}{
		{"plain", "1234 (gapd) " + rest("R", "1"), 'R', 1, true},
		{"sleeping", "1234 (gapd) " + rest("S", "0"), 'S', 0, true},
		{"name with spaces and parens", "1234 (a) (b c)) " + rest("R", "3"), 'R', 3, true},
		{"no name", "1234 gapd R 1", 0, 0, false},
		{"truncated", "1234 (gapd) R 1 2 3", 0, 0, false},
		{"bad cpu", "1234 (gapd) " + rest("R", "x"), 0, 0, false},
		{"bad state", "1234 (gapd) " + rest("RR", "1"), 0, 0, false},
	}
	for _, tt := range tests {
		state, cpu, ok := parseTaskStat([]byte(tt.stat))
		if state != tt.wantState || cpu != tt.wantCPU || ok != tt.wantOK {
			t.Errorf("%s: parseTaskStat = %q, %d, %v; want %q, %d, %v", tt.name, state, cpu, ok, tt.wantState, tt.wantCPU, tt.wantOK)
		}
	}
}

// The calling thread is running while it reads its own stat, so its CPU
// is among the running ones of this process.
func TestRunningCPUsSeesItself(t *testing.T) {
	cpus := runningCPUs(os.Getpid())
	if len(cpus) == 0 {
		t.Fatalf("runningCPUs(self) = %v, want at least the reading thread's CPU", cpus)
	}
	if got := fmt.Sprint(runningCPUs(-1)); got != "[]" {
		t.Errorf("runningCPUs(-1) = %s, want none", got)
	}
}
