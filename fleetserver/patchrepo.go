package fleetserver

import (
	"context"
	"errors"
	"sync"

	"github.com/livefix/livefix/fleetdb"
	"github.com/livefix/livefix/patchrepo"
)

// PatchRepository is the signed repository in a data directory
// (patchrepo) as the dashboard's Repository. It opens the repository on
// first use, so a server started before `livefix-server keys init` picks
// it up without a restart. Every change takes the repository's own lock,
// so the dashboard, the CLI and other replicas never interleave.
func PatchRepository(dataDir string) *PatchRepo { return &PatchRepo{dir: dataDir} }

// PatchRepo adapts patchrepo.Repo to Repository.
type PatchRepo struct {
	dir string
	mu  sync.Mutex
	r   *patchrepo.Repo
}

func (p *PatchRepo) open() (*patchrepo.Repo, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.r != nil {
		return p.r, nil
	}
	r, err := patchrepo.Open(p.dir)
	if err != nil {
		if errors.Is(err, patchrepo.ErrNoRepository) {
			return nil, errNoRepository
		}
		return nil, err
	}
	p.r = r
	return r, nil
}

// Exists reports whether the data directory holds a repository.
func (p *PatchRepo) Exists() bool {
	_, err := p.open()
	return err == nil
}

func level(e *patchrepo.Entry) fleetdb.Level {
	return fleetdb.Level{BuildID: e.BuildID, Level: int64(e.Level), KernelRelease: e.Release, Channel: e.Channel,
		Summary: e.Summary, CVEs: e.CVEs, PublishedAt: e.Published, Revoked: e.Revoked != nil}
}

// Levels lists the kernel patch levels (userspace patches are keyed by
// the build-ids of programs, not of the hosts' kernels).
func (p *PatchRepo) Levels(ctx context.Context) ([]fleetdb.Level, error) {
	r, err := p.open()
	if errors.Is(err, errNoRepository) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	es, err := r.List()
	if err != nil {
		return nil, err
	}
	var out []fleetdb.Level
	for _, e := range es {
		if e.Kind == patchrepo.KindKernel {
			out = append(out, level(e))
		}
	}
	return out, nil
}

// Promote moves a level to another channel.
func (p *PatchRepo) Promote(ctx context.Context, buildID string, lv int64, channel string) error {
	r, err := p.open()
	if err != nil {
		return err
	}
	_, err = r.Promote(buildID, int(lv), channel)
	return err
}

// Revoke withdraws a level.
func (p *PatchRepo) Revoke(ctx context.Context, buildID string, lv int64, reason string) error {
	r, err := p.open()
	if err != nil {
		return err
	}
	_, err = r.Revoke(buildID, int(lv), reason)
	return err
}

// Publish adds a patch on a channel.
func (p *PatchRepo) Publish(ctx context.Context, path, channel string) (fleetdb.Level, error) {
	r, err := p.open()
	if err != nil {
		return fleetdb.Level{}, err
	}
	e, err := r.Publish(path, patchrepo.PublishOptions{Channel: channel})
	if err != nil {
		return fleetdb.Level{}, err
	}
	return level(e), nil
}

// Refresh re-signs the expiring timestamp (and, when due, snapshot and
// targets) metadata; without a repository it does nothing.
func (p *PatchRepo) Refresh() (*patchrepo.RefreshResult, error) {
	r, err := p.open()
	if errors.Is(err, errNoRepository) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return r.Refresh()
}
