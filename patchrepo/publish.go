package patchrepo

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// PublishOptions describe a patch being published.
type PublishOptions struct {
	Channel  string   // ChannelTest or ChannelStable
	CVEs     []string // added to those NAME.json names
	Summary  string   // replaces NAME.json's summary when set
	MinAgent string   // oldest agent version that may apply it
}

// Publish adds the patch at path (NAME.ko with NAME.json beside it, or a
// .lfp) to the repository. It refuses a malformed patch and a level not
// higher than every published level (revoked ones included) of the same
// build-id. Concurrent publishes are serialised by the repository lock.
func (r *Repo) Publish(path string, o PublishOptions) (*Entry, error) {
	if !ValidChannel(o.Channel) {
		return nil, fmt.Errorf("publish: channel %q; want %q or %q", o.Channel, ChannelTest, ChannelStable)
	}
	for _, id := range o.CVEs {
		if !ValidCVE(id) {
			return nil, fmt.Errorf("publish: %q is not a CVE id (CVE-YYYY-NNNN)", id)
		}
	}
	if o.MinAgent != "" && !validVersion(o.MinAgent) {
		return nil, fmt.Errorf("publish: minimum agent version %q is not a version (like 1.2.0)", o.MinAgent)
	}
	p, err := readPatch(path)
	if err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}
	cves := p.cves
	for _, id := range o.CVEs {
		if !slices.Contains(cves, id) {
			cves = append(cves, id)
		}
	}
	for _, id := range cves {
		if !ValidCVE(id) {
			return nil, fmt.Errorf("publish: %w: %s names %q, not a CVE id", ErrMalformed, path, id)
		}
	}
	summary := p.summary
	if o.Summary != "" {
		summary = o.Summary
	}
	var e *Entry
	err = r.update(func(tx *txn) error {
		es, err := tx.entries()
		if err != nil {
			return err
		}
		for _, x := range es {
			if x.Kind == p.kind && x.BuildID == p.buildID && x.Level >= p.level {
				state := "published"
				if x.Revoked != nil {
					state = "published and revoked"
				}
				return fmt.Errorf("publish %s: %w: level %d of %s build-id %s is already %s (%s); build this patch as level %d or higher",
					path, ErrLevelNotHigher, x.Level, p.kind, p.buildID, state, x.Name, maxLevel(es, p.kind, p.buildID)+1)
			}
		}
		// The keys are needed to commit: check before storing anything.
		if _, err := tx.onlineKeys(); err != nil {
			return err
		}
		now := r.now()
		c := &Custom{
			Kind: p.kind, BuildID: p.buildID, Level: p.level, Name: p.name, Release: p.release,
			Channel: o.Channel, Published: now, CVEs: cves, Summary: summary, MinAgent: o.MinAgent,
		}
		if o.Channel == ChannelStable {
			c.StableSince = &now
		}
		if err := c.Validate(); err != nil {
			return fmt.Errorf("publish %s: %w", path, err)
		}
		e = &Entry{Custom: *c}
		for _, f := range p.files {
			name := TargetPath(p.kind, p.buildID, p.level, f.name)
			tf, err := r.writeTarget(name, f.data, c)
			if err != nil {
				return err
			}
			tx.st.targets.Signed.Targets[name] = tf
			e.Targets = append(e.Targets, name)
			e.Length += tf.Length
		}
		tx.write, tx.targets = true, true
		return nil
	})
	if err != nil {
		return nil, err
	}
	return e, nil
}

func maxLevel(es []*Entry, kind, bid string) int {
	m := 0
	for _, e := range es {
		if e.Kind == kind && e.BuildID == bid && e.Level > m {
			m = e.Level
		}
	}
	return m
}

// change applies fn to the custom metadata of every target of one level
// and commits. fn returns false when nothing needs to change.
func (r *Repo) change(buildID string, level int, fn func(c *Custom) (bool, error)) (*Entry, error) {
	buildID = strings.ToLower(buildID)
	var e *Entry
	err := r.update(func(tx *txn) error {
		es, err := tx.entries()
		if err != nil {
			return err
		}
		for _, x := range es {
			if x.BuildID == buildID && x.Level == level {
				e = x
			}
		}
		if e == nil {
			return fmt.Errorf("%w: level %d of build-id %s is not published (see livefix-server list)", ErrNotFound, level, buildID)
		}
		c := e.Custom
		changed, err := fn(&c)
		if err != nil || !changed {
			return err
		}
		if err := c.Validate(); err != nil {
			return err
		}
		for _, name := range e.Targets {
			if err := setCustom(tx.st.targets.Signed.Targets[name], &c); err != nil {
				return err
			}
		}
		e.Custom = c
		tx.write, tx.targets = true, true
		return nil
	})
	if err != nil {
		return nil, err
	}
	return e, nil
}

// Promote moves a level to channel (only test -> stable exists). It
// returns the entry unchanged when the level is on that channel already.
func (r *Repo) Promote(buildID string, level int, channel string) (*Entry, error) {
	if channel != ChannelStable {
		return nil, fmt.Errorf("promote: channel %q; a level can only be promoted to %q", channel, ChannelStable)
	}
	return r.change(buildID, level, func(c *Custom) (bool, error) {
		if c.Revoked != nil {
			return false, fmt.Errorf("promote: %w: level %d of %s was revoked (%s); publish a new level", ErrRevoked, c.Level, c.BuildID, c.Revoked.Reason)
		}
		if c.Channel == channel {
			return false, nil
		}
		now := r.now()
		c.Channel, c.StableSince = channel, &now
		return true, nil
	})
}

// Revoke withdraws a level: hosts running it move to the highest level
// still published for their channel, or unload the patch when none is.
func (r *Repo) Revoke(buildID string, level int, reason string) (*Entry, error) {
	if strings.TrimSpace(reason) == "" {
		return nil, fmt.Errorf("revoke: a reason is required (--reason TEXT); hosts show it")
	}
	return r.change(buildID, level, func(c *Custom) (bool, error) {
		if c.Revoked != nil {
			return false, nil
		}
		c.Revoked = &Revocation{Time: r.now(), Reason: reason}
		return true, nil
	})
}

// Refresh re-signs the timestamp, and the snapshot and targets metadata
// when less than half their lifetime is left, so that a repository with
// no new patches does not expire. Run it more often than half the
// timestamp lifetime.
func (r *Repo) Refresh() (*RefreshResult, error) {
	var st *state
	err := r.update(func(tx *txn) error {
		st = tx.st
		tx.write = true
		tx.targets = st.targets.Signed.Expires.Sub(r.now()) < r.settings.lifetime(metadata.TARGETS)/2
		return nil
	})
	if err != nil {
		return nil, err
	}
	now := r.now()
	res := &RefreshResult{
		Timestamp: st.timestamp.Signed.Expires, Snapshot: st.snapshot.Signed.Expires,
		Targets: st.targets.Signed.Expires, Root: st.root.Signed.Expires,
	}
	if st.root.Signed.Expires.Sub(now) < r.settings.lifetime(metadata.ROOT)/4 {
		res.Warning = fmt.Sprintf("root metadata expires %s: run livefix-server keys rotate root with the offline root keys before then",
			st.root.Signed.Expires.Format("2006-01-02"))
	}
	return res, nil
}

// RefreshResult gives the expiry of each role after Refresh.
type RefreshResult struct {
	Root      time.Time `json:"root_expires"`
	Targets   time.Time `json:"targets_expires"`
	Snapshot  time.Time `json:"snapshot_expires"`
	Timestamp time.Time `json:"timestamp_expires"`
	Warning   string    `json:"warning,omitempty"`
}
