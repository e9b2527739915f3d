package agent

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"time"
)

// pollState is what the cheap timestamp poll remembers between polls.
type pollState struct {
	etag, lastModified string
	sum                [32]byte
	seen               bool
	// fresh is the timestamp metadata the last poll fetched (unverified),
	// used by the refresh that follows instead of fetching it again.
	fresh []byte
}

// maxTimestamp bounds the timestamp metadata a poll reads (go-tuf's
// default limit for it).
const maxTimestamp = 16384

// Poll asks for the timestamp metadata with a conditional GET and reports
// whether it changed since the last poll. It verifies nothing (Update
// does): it only decides whether a full refresh is worth it.
func (a *Agent) Poll(ctx context.Context) (bool, error) {
	a.poll.fresh = nil
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, metadataURL(a.Config.Repository)+"/timestamp.json", nil)
	if err != nil {
		return false, err
	}
	req.Header.Set("User-Agent", "livefix-agent/"+a.Version)
	if a.poll.etag != "" {
		req.Header.Set("If-None-Match", a.poll.etag)
	}
	if a.poll.lastModified != "" {
		req.Header.Set("If-Modified-Since", a.poll.lastModified)
	}
	resp, err := a.client().Do(req)
	if err != nil && ctx.Err() == nil {
		// Once more on a new connection: a kept-alive one may have been
		// closed by the server or a middlebox between polls.
		a.client().CloseIdleConnections()
		resp, err = a.client().Do(req)
	}
	if err != nil {
		return false, fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotModified:
		return false, nil
	case resp.StatusCode != http.StatusOK:
		err := fmt.Errorf("%w: GET %s: %s", ErrUnreachable, req.URL, resp.Status)
		return false, err
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxTimestamp+1))
	if err != nil {
		return false, fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	if len(body) <= maxTimestamp {
		a.poll.fresh = body
	}
	sum := sha256.Sum256(body)
	changed := !a.poll.seen || sum != a.poll.sum
	a.poll.etag, a.poll.lastModified = resp.Header.Get("ETag"), resp.Header.Get("Last-Modified")
	a.poll.sum, a.poll.seen = sum, true
	return changed, nil
}

// DaemonOptions control Run.
type DaemonOptions struct {
	// Once stops after the first update (tests).
	Once bool
	// OnUpdate is called after each update attempt (tests, the fleet
	// check-in).
	OnUpdate func(*Report, error)
}

// Run is the daemon: poll the timestamp every PollInterval ± PollJitter,
// and run an update (applying when auto_update) when it changed, when a
// delayed level becomes due, after a failure, and at start. It sleeps
// between polls. It returns when ctx ends.
func (a *Agent) Run(ctx context.Context, o DaemonOptions) error {
	out := a.progress()
	var due time.Time
	failed := true // update at start
	for {
		changed, err := a.Poll(ctx)
		if ctx.Err() != nil {
			return nil
		}
		switch {
		case err != nil:
			fmt.Fprintf(out, "poll: %v; keeping the current level\n", err)
			a.recordUnreachable(err)
			failed = true
		case changed || failed || (!due.IsZero() && !a.now().Before(due)):
			rep, uerr := a.Update(ctx, UpdateOptions{DryRun: !a.Config.auto()})
			if ctx.Err() != nil {
				return nil
			}
			if uerr != nil {
				fmt.Fprintf(out, "update: %v\n", uerr)
			} else if rep.Done {
				fmt.Fprintf(out, "%s: level %d -> %d (%s)\n", rep.Kernel.Action, rep.Kernel.From, rep.Kernel.To, rep.Kernel.Reason)
			}
			failed = uerr != nil // retried at the next poll
			due = time.Time{}
			if rep != nil && rep.NextDue != nil {
				due = *rep.NextDue
			}
			if o.OnUpdate != nil {
				o.OnUpdate(rep, uerr)
			}
			if o.Once {
				return uerr
			}
		}
		t := time.NewTimer(a.nextPoll())
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

func (a *Agent) nextPoll() time.Duration {
	d := a.Config.PollInterval.Duration
	if j := a.Config.PollJitter.Duration; j > 0 {
		d += time.Duration(rand.Int64N(int64(2*j))) - j
	}
	return d
}

// recordUnreachable notes a failed poll in the status, keeping the rest.
func (a *Agent) recordUnreachable(err error) {
	bid, _ := a.Kernel.BuildID()
	cur, _, _ := a.Kernel.Applied()
	a.record(&Report{Time: a.now().UTC(), KernelBuildID: bid, Applied: cur}, err)
}
