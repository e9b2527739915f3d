package fleetagent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/livefix/livefix/agent"
	"github.com/livefix/livefix/fleetapi"
	"golang.org/x/sys/unix"
)

// ErrNotEnrolled: the configuration has no host id and credential.
var ErrNotEnrolled = errors.New("host not enrolled with a fleet server (livefix register --server URL --key ORG-KEY)")

func client(cfg *agent.Config) *fleetapi.Client {
	return &fleetapi.Client{BaseURL: strings.TrimRight(cfg.Server, "/")}
}

// Hostname is this host's name as the check-ins report it.
func Hostname() string {
	h, err := os.Hostname()
	if err != nil || !fleetapi.ValidHostname(h) {
		return "unknown"
	}
	return h
}

// Enroll exchanges an organisation key for a host id and credential and
// puts them into cfg (the caller saves it, mode 0600).
func Enroll(ctx context.Context, cfg *agent.Config, orgKey string) error {
	r, err := client(cfg).Register(ctx, orgKey, Hostname())
	if err != nil {
		return err
	}
	cfg.HostID, cfg.HostCredential = r.HostID, r.Credential
	return nil
}

// Enrolled reports whether the configuration carries a host credential.
func Enrolled(cfg *agent.Config) bool { return cfg.HostID != "" && cfg.HostCredential != "" }

func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}

// Result classifies an update attempt for the check-in.
func Result(err error) string {
	if err == nil {
		return fleetapi.ResultOK
	}
	// kernelpatch reports a transition that did not complete and was
	// reverted as "rolled back"; the host kept its previous level.
	m := err.Error()
	if strings.Contains(m, "rolled back") || strings.Contains(m, "did not complete") {
		return fleetapi.ResultStalled
	}
	return fleetapi.ResultFailed
}

// Build makes a check-in from the last update attempt's report and error
// (rep nil: from the status file the agent keeps).
func Build(a *agent.Agent, rep *agent.Report, uerr error, at time.Time, version string) fleetapi.CheckIn {
	cfg := a.Config
	c := fleetapi.CheckIn{HostID: cfg.HostID, Hostname: Hostname(), KernelRelease: kernelRelease(),
		AgentVersion: version, Channel: cfg.Channel, Result: fleetapi.ResultNone}
	if a.Kernel != nil {
		if bid, err := a.Kernel.BuildID(); err == nil {
			c.BuildID = bid
		}
		if lv, _, err := a.Kernel.Applied(); err == nil {
			c.Level = int64(lv)
		}
	}
	if rep != nil {
		if c.BuildID == "" {
			c.BuildID = rep.KernelBuildID
		}
		if a.Kernel == nil {
			c.Level = int64(rep.Applied)
		}
		for _, u := range rep.User {
			if u.Applied > 0 || u.Processes == 0 {
				c.Userspace = append(c.Userspace, fleetapi.UserPatch{BuildID: u.BuildID, Level: int64(u.Level), Name: u.Name})
			}
		}
	}
	if rep != nil || uerr != nil {
		c.Result, c.ResultAt = Result(uerr), at
		if uerr != nil {
			c.Error = truncate(uerr.Error(), fleetapi.MaxErrorLen)
		}
	} else if st, err := agent.ReadStatus(cfg.StateDir); err == nil && st != nil {
		if c.BuildID == "" {
			c.BuildID = st.KernelBuildID
		}
		c.ResultAt = st.LastCheck
		c.Result = fleetapi.ResultOK
		if st.Error != "" {
			c.Result, c.Error = fleetapi.ResultFailed, truncate(st.Error, fleetapi.MaxErrorLen)
		}
	}
	return c
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	// A rune cut in two becomes invalid UTF-8: drop it.
	return strings.ToValidUTF8(s[:n], "")
}

// Reporter sends check-ins for one agent: after every update attempt
// (OnUpdate, for agent.DaemonOptions) and every checkin_interval with
// ±10% jitter (Run). Check-ins never block or fail an update: errors go to
// Log.
type Reporter struct {
	Agent   *agent.Agent
	Version string
	Client  *fleetapi.Client // nil: the configured server
	Log     io.Writer        // nil: discarded

	mu      sync.Mutex
	lastRep *agent.Report
	lastErr error
	lastAt  time.Time
}

func (r *Reporter) client() *fleetapi.Client {
	if r.Client != nil {
		return r.Client
	}
	return client(r.Agent.Config)
}

func (r *Reporter) logf(format string, args ...any) {
	if r.Log != nil {
		fmt.Fprintf(r.Log, format+"\n", args...)
	}
}

// Send sends one check-in now for the given attempt (rep and err nil:
// the last one this Reporter saw, else the status file).
func (r *Reporter) Send(ctx context.Context, rep *agent.Report, uerr error) error {
	if !Enrolled(r.Agent.Config) {
		return ErrNotEnrolled
	}
	at := time.Now()
	r.mu.Lock()
	if rep != nil || uerr != nil {
		r.lastRep, r.lastErr, r.lastAt = rep, uerr, at
	} else if r.lastRep != nil || r.lastErr != nil {
		rep, uerr, at = r.lastRep, r.lastErr, r.lastAt
	}
	r.mu.Unlock()
	c := Build(r.Agent, rep, uerr, at, r.Version)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err := r.client().CheckIn(ctx, r.Agent.Config.HostCredential, c)
	return err
}

// OnUpdate is the daemon's hook: it checks in after each attempt.
func (r *Reporter) OnUpdate(rep *agent.Report, uerr error) {
	if !Enrolled(r.Agent.Config) {
		return
	}
	if err := r.Send(context.Background(), rep, uerr); err != nil {
		r.logf("check-in after update: %v", err)
	}
}

// Run checks in once at start and then every checkin_interval (±10%)
// until ctx ends. It does nothing for a host that is not enrolled.
func (r *Reporter) Run(ctx context.Context) {
	if !Enrolled(r.Agent.Config) {
		return
	}
	interval := r.Agent.Config.CheckinInterval.Duration
	if interval <= 0 {
		interval = time.Hour
	}
	for {
		if err := r.Send(ctx, nil, nil); err != nil && ctx.Err() == nil {
			r.logf("periodic check-in: %v", err)
		}
		wait := interval + time.Duration((rand.Float64()*0.2-0.1)*float64(interval))
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}
