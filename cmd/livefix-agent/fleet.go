package main

import (
	"context"
	"fmt"
	"io"

	"github.com/livefix/livefix/agent"
	"github.com/livefix/livefix/fleetagent"
)

// The fleet server side of the agent: register --key enrolls the host,
// update and daemon check in after every attempt (daemon also every
// checkin_interval).
func init() { enrollHost = fleetagent.Enroll }

// checkIn reports an update attempt to the fleet server, when the host is
// enrolled. A failed check-in is said, never fatal: the update stands.
func checkIn(a *agent.Agent, rep *agent.Report, uerr error, stderr io.Writer) {
	if !fleetagent.Enrolled(a.Config) {
		return
	}
	r := &fleetagent.Reporter{Agent: a, Version: agentVersion}
	if err := r.Send(context.Background(), rep, uerr); err != nil {
		fmt.Fprintf(stderr, "livefix: check-in with %s failed (the update itself stands): %v\n", a.Config.Server, err)
	}
}

// daemonReporter starts the periodic check-ins and returns the hook that
// checks in after every update attempt.
func daemonReporter(ctx context.Context, a *agent.Agent, log io.Writer) func(*agent.Report, error) {
	r := &fleetagent.Reporter{Agent: a, Version: agentVersion, Log: log}
	go r.Run(ctx)
	return r.OnUpdate
}
