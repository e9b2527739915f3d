package proc

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

func TestTrace(t *testing.T) {
	was := trace.on.Load()
	defer trace.on.Store(was)

	trace.on.Store(false)
	Mark("off")
	markf("off %d", 1)
	if s := TraceSteps(); len(s) != 0 {
		t.Fatalf("steps recorded while tracing is off: %v", s)
	}

	trace.on.Store(true)
	before := MonoNow()
	Mark("one")
	markf("two %d", 2)
	MarkAt(before-1, "three")
	steps := TraceSteps()
	if len(steps) != 3 || steps[0].Step != "one" || steps[1].Step != "two 2" || steps[2].Mono != before-1 {
		t.Fatalf("steps = %v", steps)
	}
	if steps[0].Mono < before || steps[1].Mono < steps[0].Mono {
		t.Errorf("times not monotonic: %v (before %d)", steps, before)
	}
	var b bytes.Buffer
	FlushTrace(&b)
	want := fmt.Sprintf("livefix-trace %d one\nlivefix-trace %d two 2\nlivefix-trace %d three\n", steps[0].Mono, steps[1].Mono, before-1)
	if b.String() != want {
		t.Errorf("FlushTrace wrote %q, want %q", b.String(), want)
	}
	if s := TraceSteps(); len(s) != 0 {
		t.Errorf("steps kept after FlushTrace: %v", s)
	}
	// The ptrace requests a trace names.
	for _, n := range []string{"seize", "interrupt", "cont", "detach", "syscall"} {
		found := false
		for _, v := range ptraceName {
			found = found || v == n
		}
		if !found {
			t.Errorf("ptrace request %q is not traced", n)
		}
	}
	if strings.Contains(b.String(), "off") {
		t.Errorf("a step marked while off was written")
	}
}
