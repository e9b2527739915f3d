package ulp

import (
	"context"
	"errors"
	"sort"
	"time"

	"golang.org/x/sys/unix"

	"github.com/livefix/livefix/internal/proc"
)

// WatchOptions tunes Watch.
type WatchOptions struct {
	Options
	// Scan is the period of the scan for processes that mapped a target
	// late (dlopen) or that events missed; zero means 100ms.
	Scan time.Duration
	// Report receives every apply Watch attempted: a result or an error,
	// and for a process that exec'd, the time from the kernel's exec
	// event (its timestamp) to the commit of the apply (the jumps written,
	// Result.CommitMono): 0 when a scan found the process.
	Report func(pid int, p *Patch, res *Result, err error, sinceExec time.Duration)
	// Ready, if set, is called once the first scan is done and events are
	// being received.
	Ready func()
}

// Watch applies patches to the processes that map their targets, now
// and as they appear, until ctx ends: a process that execs (the kernel's
// process-event connector reports it at once) is checked right away and
// then a few times over the next 200 ms, while the dynamic linker maps its
// libraries; every Scan, all processes are checked for targets mapped
// later (dlopen) or events lost. Processes already patched at the level
// of a patch, pid 1 unless IncludeInit, and processes not mapping a
// target are left alone without a report.
func Watch(ctx context.Context, patches []*Patch, wo WatchOptions) error {
	if wo.Scan <= 0 {
		wo.Scan = 100 * time.Millisecond
	}
	// Promptness on a loaded host: every thread of the watcher at nice
	// -10 (threads created later inherit it), best effort (needs
	// CAP_SYS_NICE).
	RaisePriority(-10)
	ev, err := proc.ListenEvents()
	if err != nil {
		return err
	}
	defer ev.Close()
	events := make(chan proc.Event, 256)
	go func() {
		for ctx.Err() == nil {
			e, ok, err := ev.Next(100)
			if err != nil {
				return
			}
			if ok {
				select {
				case events <- e:
				default: // full: the periodic scan catches up
				}
			}
		}
	}()
	execs := map[int]int64{} // pid -> its recent exec event (CLOCK_MONOTONIC)
	// Every exec on the host is checked several times: a process that
	// maps no target is dismissed by its maps and remembered build-ids
	// alone, without Apply's lock, record and ELF reading, so that a
	// host running builds (hundreds of execs a second) does not delay the
	// process that matters.
	var ids [][]byte
	for _, p := range patches {
		if id, err := p.BuildID(); err == nil {
			ids = append(ids, id)
		}
	}
	var matcher proc.Matcher
	try := func(pid int, execMono int64) {
		if execMono == 0 {
			execMono = execs[pid]
		}
		if pid == 1 && !wo.IncludeInit {
			return
		}
		if ok, err := matcher.Maps(pid, ids); err != nil || !ok {
			return
		}
		for _, p := range patches {
			res, err := Apply(pid, p, wo.Options)
			if errors.Is(err, proc.ErrNotMapped) || errors.Is(err, ErrAlreadyApplied) || errors.Is(err, ErrLevel) || errors.Is(err, proc.ErrNoProcess) {
				continue
			}
			if wo.Report != nil {
				var since time.Duration
				done := proc.MonoNow()
				if res != nil && res.CommitMono != 0 {
					done = res.CommitMono
				}
				if execMono != 0 {
					since = time.Duration(done - execMono)
				} else if age, ok := processAge(pid); ok && age < time.Second {
					since = age // found by a scan before its exec event
				}
				wo.Report(pid, p, res, err, since)
			}
		}
	}
	scan := func() {
		seen := map[int]bool{}
		for _, p := range patches {
			id, err := p.BuildID()
			if err != nil {
				continue
			}
			pids, _ := proc.MappingProcesses(id)
			for _, pid := range pids {
				if !seen[pid] {
					seen[pid] = true
					try(pid, 0)
				}
			}
		}
	}
	scan()
	if wo.Ready != nil {
		wo.Ready()
	}
	// Checks due for processes that just exec'd.
	type due struct {
		pid  int
		at   time.Time
		mono int64
	}
	var pending []due
	queue := func(e proc.Event) {
		if e.Kind != proc.EventExec {
			return // a fork inherits its parent's patches (adopted by the next command)
		}
		execs[e.Pid] = e.Mono
		now := time.Now()
		for _, d := range []time.Duration{0, 2, 5, 10, 20, 40, 80, 150} {
			pending = append(pending, due{e.Pid, now.Add(d * time.Millisecond), e.Mono})
		}
		sort.Slice(pending, func(i, j int) bool { return pending[i].at.Before(pending[j].at) })
	}
	ticker := time.NewTicker(wo.Scan)
	defer ticker.Stop()
	for {
		var next <-chan time.Time
		if len(pending) > 0 {
			next = time.After(time.Until(pending[0].at))
		}
		select {
		case <-ctx.Done():
			return nil
		case e := <-events:
			queue(e)
		case <-next:
			d := pending[0]
			pending = pending[1:]
			try(d.pid, d.mono)
		case <-ticker.C:
			// Events already received come first: their checks know
			// when the exec was.
			for drained := false; !drained; {
				select {
				case e := <-events:
					queue(e)
				default:
					drained = true
				}
			}
			now := proc.MonoNow()
			for pid, m := range execs {
				if now-m > int64(time.Second) {
					delete(execs, pid)
				}
			}
			scan()
		}
	}
}

// processAge is how long ago pid started (10 ms resolution: field 22 of
// /proc/PID/stat, in clock ticks since boot, against CLOCK_BOOTTIME).
func processAge(pid int) (time.Duration, bool) {
	st, _, err := startTime(pid)
	if err != nil {
		return 0, false
	}
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts) != nil {
		return 0, false
	}
	const hz = 100 // USER_HZ
	return time.Duration(ts.Nano()) - time.Duration(st)*(time.Second/hz), true
}
