package proc

import (
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
)

// TraceEnv names the environment variable that turns on step tracing:
// LIVEFIX_TRACE=1 makes a command record, in memory, the CLOCK_MONOTONIC
// time of every step that touches a target (seize, interrupt, each
// thread's stop, injected syscalls, memory writes, restart and detach of
// each thread) and of the steps its caller marks (Mark), and print them
// to standard error when it ends (FlushTrace). The times compare with the
// target's own clock_gettime(CLOCK_MONOTONIC): that is how the gap a
// target sees is attributed to the steps of a command (docs/userspace.md,
// "Where the gap goes"). Recording costs a clock read and an append; the
// output is written after the target is let go, never during a stop.
const TraceEnv = "LIVEFIX_TRACE"

// TraceStep is one recorded step.
type TraceStep struct {
	Mono int64  // CLOCK_MONOTONIC nanoseconds
	Step string // what happened, e.g. "interrupt 1234"
}

var trace struct {
	on    atomic.Bool
	mu    sync.Mutex
	steps []TraceStep
}

func init() {
	if v := os.Getenv(TraceEnv); v != "" && v != "0" {
		trace.on.Store(true)
		trace.steps = make([]TraceStep, 0, 256)
	}
}

// Tracing reports whether step tracing is on.
func Tracing() bool { return trace.on.Load() }

// Mark records a step now, when tracing is on.
func Mark(step string) {
	if trace.on.Load() {
		MarkAt(MonoNow(), step)
	}
}

// MarkAt records a step at mono, when tracing is on.
func MarkAt(mono int64, step string) {
	if !trace.on.Load() {
		return
	}
	trace.mu.Lock()
	trace.steps = append(trace.steps, TraceStep{Mono: mono, Step: step})
	trace.mu.Unlock()
}

// markf is Mark with formatting, paid only when tracing is on.
func markf(format string, args ...any) {
	if trace.on.Load() {
		MarkAt(MonoNow(), fmt.Sprintf(format, args...))
	}
}

// TraceSteps returns the steps recorded so far.
func TraceSteps() []TraceStep {
	trace.mu.Lock()
	defer trace.mu.Unlock()
	return append([]TraceStep(nil), trace.steps...)
}

// FlushTrace writes the recorded steps to w, one line each:
// "livefix-trace MONO_NS STEP", and forgets them.
func FlushTrace(w io.Writer) {
	if !trace.on.Load() {
		return
	}
	trace.mu.Lock()
	steps := trace.steps
	trace.steps = trace.steps[:0:0]
	trace.mu.Unlock()
	for _, s := range steps {
		fmt.Fprintf(w, "livefix-trace %d %s\n", s.Mono, s.Step)
	}
}

// ptraceName names the requests that tracing records.
var ptraceName = map[int]string{
	0x4206: "seize", 0x4207: "interrupt", 0x4208: "listen",
	7: "cont", 17: "detach", 24: "syscall", 9: "singlestep", 13: "setregs",
}
