package ulp_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/livefix/livefix/ulp"
)

// TestStackCheck: the safety check sees a function on a thread's stack
// when the thread is in a signal handler on a sigaltstack (the function's
// frame is on the interrupted stack) and when it is in the function's
// .cold part (issue 10, priority 4).
func TestStackCheck(t *testing.T) {
	requireHost(t)
	work := t.TempDir()
	res := buildPatch(t, testdata(t, "stacks"), testdata(t, "patches", "stacks.patch"), "make -s", "stacks", work, 1)
	for _, c := range []struct{ mode, busy string }{
		{"alt", "outer"},
		{"cold", "check (its .cold part)"},
	} {
		t.Run(c.mode, func(t *testing.T) {
			state := t.TempDir()
			tg := start(t, nil, res.OrigTarget, c.mode)
			_, err := ulp.Apply(tg.pid, res.Patch, ulp.Options{StateDir: state, Timeout: 300 * time.Millisecond})
			if !errors.Is(err, ulp.ErrBusy) || !strings.Contains(err.Error(), c.busy) {
				t.Fatalf("apply while a thread is in %s: %v, want busy in %s", c.busy, err, c.busy)
			}
			t.Logf("refused: %v", err)
			if got := tg.ask("r"); got != "ok" {
				t.Fatalf("r: %q", got)
			}
			if _, err := ulp.Apply(tg.pid, res.Patch, ulp.Options{StateDir: state}); err != nil {
				t.Fatalf("apply once released: %v", err)
			}
			if got := tg.ask("v"); got != "3 3" {
				t.Fatalf("patched: %q", got)
			}
			if _, err := ulp.Unpatch(tg.pid, "", ulp.Options{StateDir: state}); err != nil {
				t.Fatal(err)
			}
			if got := tg.ask("v"); got != "2 2" {
				t.Fatalf("unpatched: %q", got)
			}
		})
	}
}
