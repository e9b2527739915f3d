package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"time"

	"github.com/livefix/livefix/kernelpatch"
	"github.com/livefix/livefix/patchrepo"
)

// Agent updates one host from its repository. It keeps what it verified
// between updates (the daemon's polls): use one Agent from one goroutine
// at a time.
type Agent struct {
	Config *Config
	Kernel Kernel
	// User patches running processes; nil leaves processes alone.
	User UserPatcher
	// Version is this agent's version, compared with a patch's minimum.
	Version string
	// HTTP is the client for every request; nil makes one honouring
	// HTTPS_PROXY/NO_PROXY with Config.HTTPTimeout per request.
	HTTP *http.Client
	// Progress receives human-readable progress; nil discards it.
	Progress io.Writer
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	poll   pollState
	trust  *trust // verified metadata kept between refreshes
	status statusCache
}

func (a *Agent) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

func (a *Agent) stateDir() string { return filepath.Join(a.Config.StateDir, "agent") }

func (a *Agent) progress() io.Writer {
	if a.Progress == nil {
		return io.Discard
	}
	return a.Progress
}

// UpdateOptions control Update.
type UpdateOptions struct {
	// DryRun refreshes and decides but downloads and applies nothing.
	DryRun bool
}

// Report says what Update found and did.
type Report struct {
	Time          time.Time  `json:"time"`
	Repository    string     `json:"repository"`
	Channel       string     `json:"channel"`
	KernelBuildID string     `json:"kernel_build_id"`
	Kernel        Plan       `json:"kernel"`
	Available     int        `json:"available_level"`
	Applied       int        `json:"applied_level"`
	CVEs          []string   `json:"cves,omitempty"`
	Summary       string     `json:"summary,omitempty"`
	Done          bool       `json:"done"` // the plan was carried out (false for dry runs and none)
	DryRun        bool       `json:"dry_run,omitempty"`
	NextDue       *time.Time `json:"next_due,omitempty"` // a delayed level becomes eligible then
	User          []UserPlan `json:"user,omitempty"`
	Notes         []string   `json:"notes,omitempty"`
}

// Update refreshes the metadata, decides the level for the running kernel
// and applies it (and userspace patches) unless DryRun. On error the host
// is left as it was, and the status file says what failed.
func (a *Agent) Update(ctx context.Context, o UpdateOptions) (*Report, error) {
	rep, err := a.update(ctx, o)
	a.record(rep, err)
	return rep, err
}

func (a *Agent) update(ctx context.Context, o UpdateOptions) (*Report, error) {
	now := a.now()
	rep := &Report{Time: now.UTC(), Repository: a.Config.Repository, Channel: a.Config.Channel, DryRun: o.DryRun}
	bid, err := a.Kernel.BuildID()
	if err != nil {
		return rep, fmt.Errorf("running kernel build-id: %w", err)
	}
	rep.KernelBuildID = bid
	cur, _, err := a.Kernel.Applied()
	if err != nil {
		return rep, fmt.Errorf("applied kernel level: %w", err)
	}
	rep.Applied = cur
	cat, err := a.Refresh(ctx)
	if err != nil {
		rep.Kernel = Plan{Action: ActionNone, From: cur, To: cur, Reason: "kept level " + fmt.Sprint(cur) + ": " + err.Error()}
		return rep, err
	}
	for _, s := range cat.Skipped {
		rep.Notes = append(rep.Notes, "ignored target "+s)
	}
	levels := cat.ForBuildID(patchrepo.KindKernel, bid)
	p := a.plan(levels, cur, now)
	rep.Kernel = p
	for _, l := range levels {
		if ok, _ := a.eligible(l, now); ok {
			rep.Available = l.Level
		}
		if due := a.dueAt(l, now); !due.IsZero() && (rep.NextDue == nil || due.Before(*rep.NextDue)) {
			rep.NextDue = &due
		}
	}
	if !o.DryRun && p.Action != ActionNone {
		if err := a.carryOut(ctx, cat, p, bid); err != nil {
			return rep, err
		}
		rep.Done = true
		rep.Applied = p.To
	}
	rep.CVEs, rep.Summary = fixed(levels, rep.Applied)
	if a.User != nil && a.Config.userspace() {
		up, err := a.updateUser(ctx, cat, now, o.DryRun)
		rep.User = up
		if err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// fixed returns the CVE ids the applied cumulative level fixes: those of
// every published, unrevoked level up to it, and its summary.
func fixed(levels []*Level, applied int) ([]string, string) {
	var cves []string
	summary := ""
	for _, l := range levels {
		if l.Level > applied || l.Revoked != nil {
			continue
		}
		for _, id := range l.CVEs {
			if !slices.Contains(cves, id) {
				cves = append(cves, id)
			}
		}
		if l.Level == applied {
			summary = l.Summary
		}
	}
	sort.Strings(cves)
	return cves, summary
}

// ErrWrongKernel is wrapped when a downloaded patch names another kernel.
var ErrWrongKernel = errors.New("patch is for another kernel")

func (a *Agent) carryOut(ctx context.Context, cat *Catalog, p Plan, bid string) error {
	out := a.progress()
	if p.Action == ActionUnload {
		fmt.Fprintf(out, "unloading level %d: %s\n", p.From, p.Reason)
		if err := a.Kernel.Unload(ctx, out); err != nil {
			return fmt.Errorf("unload level %d: %w", p.From, err)
		}
		return nil
	}
	l := p.target
	dir, err := a.newScratch(fmt.Sprintf("%s-%d-", l.Name, l.Level))
	if err != nil {
		return err
	}
	defer dir.remove()
	fmt.Fprintf(out, "downloading %s level %d\n", l.Name, l.Level)
	js, err := cat.download(ctx, l, l.Name+".json", dir)
	if err != nil {
		return err
	}
	ko, err := cat.download(ctx, l, l.Name+".ko", dir)
	if err != nil {
		return err
	}
	md, err := kernelpatch.ReadMetadata(ko)
	if err != nil || md == nil {
		return fmt.Errorf("%s: %v", js, err)
	}
	if md.BuildID != bid {
		return fmt.Errorf("%w: %s says vmlinux build-id %s, the running kernel has %s; nothing applied", ErrWrongKernel, js, md.BuildID, bid)
	}
	if md.Level != l.Level {
		return fmt.Errorf("%s says level %d but the repository published it as level %d; nothing applied", js, md.Level, l.Level)
	}
	fmt.Fprintf(out, "applying %s level %d (%s)\n", l.Name, l.Level, p.Reason)
	if err := a.Kernel.Apply(ctx, ko, p.Action == ActionDowngrade, out); err != nil {
		return fmt.Errorf("apply level %d: %w", l.Level, err)
	}
	return nil
}

// scratch is the download directory of one update, below
// STATE/agent/download (a directory of its own, so that a daemon and a
// livefix update never share one), removed after the update.
type scratch struct {
	dir   string
	files []string
}

func (a *Agent) newScratch(prefix string) (*scratch, error) {
	dir, err := os.MkdirTemp(a.downloadDir(), prefix)
	if errors.Is(err, fs.ErrNotExist) {
		if err = os.MkdirAll(a.downloadDir(), 0o700); err == nil {
			dir, err = os.MkdirTemp(a.downloadDir(), prefix)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("download directory: %w", err)
	}
	return &scratch{dir: dir}, nil
}

// path names a file in the directory (removed with it).
func (s *scratch) path(name string) string {
	p := filepath.Join(s.dir, name)
	s.files = append(s.files, p)
	return p
}

// remove removes the files it named and the directory.
func (s *scratch) remove() {
	for _, f := range s.files {
		os.Remove(f)
	}
	if os.Remove(s.dir) != nil {
		os.RemoveAll(s.dir)
	}
}
