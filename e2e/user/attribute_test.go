package user

import (
	"testing"
	"time"
)

// TestAttribute checks the benchmark's split of a gap by traced steps.
func TestAttribute(t *testing.T) {
	const exec = 1_000_000
	trace := `livefix-trace 1002000 main
livefix-trace 1005000 apply: stop 1 (one thread, map the region)
livefix-trace 1005100 interrupt 10
livefix-trace 1005200 cont 10
livefix-trace 1008000 apply: stop 2 (all threads, commit)
livefix-trace 1008100 interrupt 10
livefix-trace 1008120 interrupt 11
livefix-trace 1008300 stopped 11
livefix-trace 1008500 detach 10
livefix-trace 1008600 detach 11
livefix-trace 1009000 exit
pid 10: patched
`
	for _, tc := range []struct {
		name               string
		w                  [3]int64 // start, end, thread
		lead, stop, tail   time.Duration
		steps              int
		restart, restarted int
	}{
		{"gap over the commit stop", [3]int64{1_007_900, 1_008_700, 11}, 200, 500, 100, 6, 2, 2},
		{"gap begins inside the stop", [3]int64{1_008_200, 1_008_650, 10}, 0, 400, 50, 3, 1, 2},
		{"gap of a thread the stop did not restart", [3]int64{1_008_200, 1_008_650, 12}, 0, 400, 50, 3, 0, 2},
		{"gap before any stop", [3]int64{1_003_000, 1_004_000, 10}, 1000, 0, 0, 0, 0, 0},
		{"gap over stop 1 only", [3]int64{1_005_050, 1_005_300, 10}, 50, 100, 100, 2, 1, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := attribute(exec, tc.w, trace)
			if a.lead != tc.lead || a.stop != tc.stop || a.tail != tc.tail || len(a.steps) != tc.steps {
				t.Errorf("attribute = %s; want lead %v stop %v tail %v, %d steps", a, tc.lead, tc.stop, tc.tail, tc.steps)
			}
			if a.tid != tc.w[2] || a.restart != tc.restart || a.restarted != tc.restarted {
				t.Errorf("attribute = %s; want thread %d restarted %d of %d", a, tc.w[2], tc.restart, tc.restarted)
			}
			if a.execToMain != 2000 || a.gap != time.Duration(tc.w[1]-tc.w[0]) {
				t.Errorf("exec to main %v, gap %v", a.execToMain, a.gap)
			}
		})
	}
	if got := untraced(trace); got != "pid 10: patched\n" {
		t.Errorf("untraced = %q", got)
	}
}
