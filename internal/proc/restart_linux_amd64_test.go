package proc

import (
	"os"
	"runtime"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestParseRunDelay(t *testing.T) {
	tests := []struct {
		in   string
		want uint64
		ok   bool
	}{
		{"204826 172779 3\n", 172779, true},
		{"0 0 0", 0, true},
		{"123456789012 98765432109 4567\n", 98765432109, true},
		{"", 0, false},
		{"1 2\n", 0, false},
		{"1 2 3 4\n", 0, false},
		{"1 x 3\n", 0, false},
		{"1 -2 3\n", 0, false},
	}
	for _, tt := range tests {
		got, ok := parseRunDelay([]byte(tt.in))
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseRunDelay(%q) = %d, %v; want %d, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestSortRestart(t *testing.T) {
	tests := []struct {
		name string
		in   []thread // tid and owed
		want []int    // tids in restart order
	}{
		{"waited longest last", []thread{{tid: 1, owed: 9e6}, {tid: 2, owed: 0}, {tid: 3, owed: 4e6}}, []int{2, 3, 1}},
		{"ties by tid", []thread{{tid: 7}, {tid: 3}, {tid: 5, owed: 1}, {tid: 4}}, []int{3, 4, 7, 5}},
		{"one", []thread{{tid: 42, owed: 5}}, []int{42}},
		{"none", nil, nil},
	}
	for _, tt := range tests {
		var ts []*thread
		for i := range tt.in {
			ts = append(ts, &tt.in[i])
		}
		sortRestart(ts)
		var got []int
		for _, th := range ts {
			got = append(got, th.tid)
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("%s: restart order %v, want %v", tt.name, got, tt.want)
		}
	}
}

// The run delay of a thread that waits for a CPU grows: two threads of
// this process spinning on one CPU wait for each other.
func TestRunDelayGrows(t *testing.T) {
	p := &Process{pid: os.Getpid()}
	defer p.closeSchedFiles()
	one := firstCPU(t)
	unlock := lockOnCPU(t, one) // this goroutine's thread, from here on
	defer unlock()
	tid := unix.Gettid()
	a, ok := p.runDelay(tid)
	if !ok {
		t.Fatalf("runDelay of this thread: no reading from /proc/%d/task/%d/schedstat", p.pid, tid)
	}
	done := make(chan int)
	for range 2 {
		go func() {
			// A thread of its own on that CPU with the test's thread.
			unlock := lockOnCPU(t, one)
			defer unlock()
			for end := time.Now().Add(50 * time.Millisecond); time.Now().Before(end); {
			}
			done <- 0
		}()
	}
	for end := time.Now().Add(50 * time.Millisecond); time.Now().Before(end); {
	}
	<-done
	<-done
	b, ok := p.runDelay(tid)
	if !ok || b <= a {
		t.Errorf("run delay of a thread sharing its CPU with two spinners: %d then %d (%v), want growth", a, b, ok)
	}
}

// firstCPU is the set of the lowest CPU this process may run on.
func firstCPU(t *testing.T) unix.CPUSet {
	t.Helper()
	var all, one unix.CPUSet
	if err := unix.SchedGetaffinity(0, &all); err != nil {
		t.Fatal(err)
	}
	for cpu := 0; cpu < 1024; cpu++ {
		if all.IsSet(cpu) {
			one.Set(cpu)
			return one
		}
	}
	t.Fatal("no CPU in this process's affinity")
	return one
}

// lockOnCPU locks the calling goroutine to its thread and that thread to
// set; the returned function undoes both. It may run on any goroutine (it
// reports with Errorf).
func lockOnCPU(t *testing.T, set unix.CPUSet) func() {
	runtime.LockOSThread()
	var old unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		t.Errorf("get affinity: %v", err)
	}
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		t.Errorf("set affinity: %v", err)
	}
	return func() {
		unix.SchedSetaffinity(0, &old)
		runtime.UnlockOSThread()
	}
}

// The tracer thread is real-time (as root), and stops and restarts a
// target whose busy threads share its one CPU: its waits for their stops
// sleep rather than spin, or they would get no CPU to stop on (at most
// what real-time throttling leaves them: 50 ms a second).
func TestRealtimeTracer(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SCHED_FIFO needs root")
	}
	tg := startTarget(t, buildTarget(t), "8") // 4 spinning, 4 sleeping
	p := attach(t, tg.pid)
	tracer := int(p.worker.Load())
	attr, err := unix.SchedGetAttr(tracer, 0)
	if err != nil {
		t.Fatal(err)
	}
	if attr.Policy != unix.SCHED_FIFO || attr.Priority != 1 {
		t.Fatalf("tracer thread %d: policy %d priority %d, want SCHED_FIFO (%d) at 1", tracer, attr.Policy, attr.Priority, unix.SCHED_FIFO)
	}
	one := firstCPU(t)
	for _, tid := range append(p.Threads(), tracer) {
		if err := unix.SchedSetaffinity(tid, &one); err != nil {
			t.Fatal(err)
		}
	}
	// Spinning, the tracer makes each stop last about 230 ms here; each
	// sleeping wait a few milliseconds at most, tens of milliseconds
	// when other processes crowd that CPU too (the test packages of
	// make test run side by side).
	const cycles = 20
	var took []time.Duration
	for i := range cycles {
		if err := p.Resume(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond)
		start := time.Now()
		if err := p.Stop(); err != nil {
			t.Fatalf("stop %d: %v", i, err)
		}
		took = append(took, time.Since(start))
	}
	slices.Sort(took)
	if med := took[cycles/2]; med > 100*time.Millisecond {
		t.Errorf("stops of a target sharing the tracer's CPU: median %v (all %v), want under 100ms", med, took)
	}
	for tid, st := range threadStates(t, tg.pid) {
		if st != 't' {
			t.Errorf("thread %d state %c after Stop, want t", tid, st)
		}
	}
	mustDetach(t, p)
	if got := tg.ask("value"); got != "value 7" {
		t.Fatalf("after detach target says %q", got)
	}

	// NoBoost: the fair scheduler, nice unchanged.
	q, err := Attach(tg.pid, AttachOptions{Timeout: 5 * time.Second, NoBoost: true})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Detach()
	if attr, err := unix.SchedGetAttr(int(q.worker.Load()), 0); err != nil {
		t.Error(err)
	} else if attr.Policy != unix.SCHED_NORMAL {
		t.Errorf("NoBoost tracer: policy %d, want SCHED_NORMAL", attr.Policy)
	}
}
