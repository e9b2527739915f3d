package proc

import (
	"encoding/binary"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Process events from the kernel's process-event connector (netlink
// NETLINK_CONNECTOR, CN_IDX_PROC; needs CAP_NET_ADMIN).

const (
	cnIdxProc        = 1
	cnValProc        = 1
	procCnMcastListn = 1
	procEventFork    = 0x00000001
	procEventExec    = 0x00000002
	nlmsgHdrLen      = 16
	cnMsgLen         = 20
)

// EventKind is the kind of a process event.
type EventKind int

// Event kinds.
const (
	EventExec EventKind = iota + 1 // Pid called execve
	EventFork                      // Pid is a new process
)

// Event is one process event.
type Event struct {
	Kind EventKind
	Pid  int // the process (thread group id)
	// Mono is when the kernel reported it, CLOCK_MONOTONIC nanoseconds.
	Mono int64
}

// MonoNow returns CLOCK_MONOTONIC in nanoseconds, to compare with
// Event.Mono.
func MonoNow() int64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// Events is an open subscription to process events.
type Events struct {
	fd int
}

// ListenEvents subscribes to exec and fork events of every process.
func ListenEvents() (*Events, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_CONNECTOR)
	if err != nil {
		return nil, fmt.Errorf("process events: netlink socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: cnIdxProc, Pid: uint32(os.Getpid())}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("process events: bind (needs CAP_NET_ADMIN): %w", err)
	}
	msg := make([]byte, nlmsgHdrLen+cnMsgLen+4)
	le := binary.LittleEndian
	le.PutUint32(msg[0:], uint32(len(msg)))
	le.PutUint16(msg[4:], unix.NLMSG_DONE)
	le.PutUint32(msg[12:], uint32(os.Getpid()))
	le.PutUint32(msg[16:], cnIdxProc)
	le.PutUint32(msg[20:], cnValProc)
	le.PutUint16(msg[32:], 4)
	le.PutUint32(msg[36:], procCnMcastListn)
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("process events: subscribe: %w", err)
	}
	return &Events{fd: fd}, nil
}

// Next blocks until the next exec or fork event, or until timeoutMS
// passes (then ok is false).
func (e *Events) Next(timeoutMS int) (ev Event, ok bool, err error) {
	buf := make([]byte, 4096)
	for {
		fds := []unix.PollFd{{Fd: int32(e.fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, timeoutMS)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return Event{}, false, fmt.Errorf("process events: poll: %w", err)
		}
		if n == 0 {
			return Event{}, false, nil
		}
		m, _, err := unix.Recvfrom(e.fd, buf, 0)
		if err == unix.ENOBUFS {
			continue // events were lost; the caller's scans catch up
		}
		if err != nil {
			return Event{}, false, fmt.Errorf("process events: receive: %w", err)
		}
		b := buf[:m]
		const off = nlmsgHdrLen + cnMsgLen
		if len(b) < off+16+8 {
			continue
		}
		le := binary.LittleEndian
		what := le.Uint32(b[off:])
		mono := int64(le.Uint64(b[off+8:]))
		data := b[off+16:]
		switch what {
		case procEventExec:
			return Event{Kind: EventExec, Pid: int(le.Uint32(data[4:])), Mono: mono}, true, nil
		case procEventFork:
			if len(data) >= 16 && le.Uint32(data[8:]) == le.Uint32(data[12:]) { // a process, not a thread
				return Event{Kind: EventFork, Pid: int(le.Uint32(data[12:])), Mono: mono}, true, nil
			}
		}
	}
}

// Close ends the subscription.
func (e *Events) Close() error { return unix.Close(e.fd) }
