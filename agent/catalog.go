package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"github.com/livefix/livefix/patchrepo"
	"github.com/theupdateframework/go-tuf/v2/metadata"
	"github.com/theupdateframework/go-tuf/v2/metadata/config"
	"github.com/theupdateframework/go-tuf/v2/metadata/fetcher"
	"github.com/theupdateframework/go-tuf/v2/metadata/updater"
)

// Level is one published patch level as the verified metadata describes
// it, with the TUF descriptions of its files.
type Level struct {
	patchrepo.Custom
	Files map[string]*metadata.TargetFiles // file name (NAME.ko, NAME.json, NAME.lfp) -> target
}

// Catalog is what one verified refresh of the repository offers.
type Catalog struct {
	Levels []*Level // sorted by kind, build-id, level
	// Skipped lists targets whose custom metadata did not make sense
	// (ignored, never applied).
	Skipped []string
	up      *updater.Updater
	repo    string
}

// ForBuildID returns the levels of kind for build-id id, lowest first.
func (c *Catalog) ForBuildID(kind, id string) []*Level {
	var out []*Level
	for _, l := range c.Levels {
		if l.Kind == kind && l.BuildID == id {
			out = append(out, l)
		}
	}
	return out
}

// ErrUntrusted is wrapped when the repository's metadata, or a download
// against it, does not verify.
var ErrUntrusted = errors.New("repository verification failed")

// ErrUnreachable is wrapped when the repository cannot be reached.
var ErrUnreachable = errors.New("repository unreachable")

func (a *Agent) tufDir() string      { return filepath.Join(a.stateDir(), "tuf") }
func (a *Agent) downloadDir() string { return filepath.Join(a.stateDir(), "download") }

func metadataURL(repo string) string { u, _ := url.JoinPath(repo, "metadata"); return u }
func targetsURL(repo string) string  { u, _ := url.JoinPath(repo, "targets"); return u }

// newUpdater makes a go-tuf client trusting the newest root this host has
// verified (its cache), or the registered root the first time.
func (a *Agent) newUpdater() (*updater.Updater, error) {
	if err := os.MkdirAll(a.tufDir(), 0o700); err != nil {
		return nil, fmt.Errorf("agent state: %w", err)
	}
	root, err := os.ReadFile(filepath.Join(a.tufDir(), "root.json"))
	if errors.Is(err, fs.ErrNotExist) {
		root, err = os.ReadFile(a.Config.Root)
	}
	if err != nil {
		return nil, fmt.Errorf("trusted root metadata: %w (run livefix register again)", err)
	}
	cfg, err := config.New(metadataURL(a.Config.Repository), root)
	if err != nil {
		return nil, fmt.Errorf("tuf client: %w", err)
	}
	cfg.RemoteTargetsURL = targetsURL(a.Config.Repository)
	cfg.LocalMetadataDir = a.tufDir()
	cfg.LocalTargetsDir = a.downloadDir()
	f := fetcher.NewDefaultFetcher()
	f.SetHTTPClient(a.client())
	f.SetHTTPUserAgent("livefix-agent/" + a.Version)
	cfg.Fetcher = f
	up, err := updater.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: trusted root: %w", ErrUntrusted, err)
	}
	return up, nil
}

// Refresh fetches and verifies the repository's metadata (TUF client
// workflow: root chain, timestamp, snapshot, targets) and returns its
// catalog.
func (a *Agent) Refresh(ctx context.Context) (*Catalog, error) {
	up, err := a.newUpdater()
	if err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- up.Refresh() }()
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case err = <-done:
	}
	if err != nil {
		return nil, classify(a.Config.Repository, err)
	}
	tm := up.GetTrustedMetadataSet().Targets[metadata.TARGETS]
	if tm == nil {
		return nil, fmt.Errorf("%w: no targets metadata", ErrUntrusted)
	}
	c := buildCatalog(tm.Signed.Targets, up)
	c.repo = a.Config.Repository
	return c, nil
}

func buildCatalog(targets map[string]*metadata.TargetFiles, up *updater.Updater) *Catalog {
	c := &Catalog{up: up}
	byKey := map[string]*Level{}
	for name, tf := range targets {
		kind, bid, level, file, err := patchrepo.ParseTargetPath(name)
		if err != nil {
			c.Skipped = append(c.Skipped, name+": "+err.Error())
			continue
		}
		if tf.Custom == nil {
			c.Skipped = append(c.Skipped, name+": no custom metadata")
			continue
		}
		cu, err := patchrepo.DecodeCustom(*tf.Custom)
		if err != nil {
			c.Skipped = append(c.Skipped, name+": "+err.Error())
			continue
		}
		if cu.Kind != kind || cu.BuildID != bid || cu.Level != level {
			c.Skipped = append(c.Skipped, name+": custom metadata names another patch")
			continue
		}
		key := kind + "/" + bid + "/" + strconv.Itoa(level)
		l := byKey[key]
		if l == nil {
			l = &Level{Custom: *cu, Files: map[string]*metadata.TargetFiles{}}
			byKey[key] = l
		}
		l.Files[file] = tf
	}
	for _, l := range byKey {
		c.Levels = append(c.Levels, l)
	}
	sort.Slice(c.Levels, func(i, j int) bool {
		x, y := c.Levels[i], c.Levels[j]
		if x.Kind != y.Kind {
			return x.Kind < y.Kind
		}
		if x.BuildID != y.BuildID {
			return x.BuildID < y.BuildID
		}
		return x.Level < y.Level
	})
	sort.Strings(c.Skipped)
	return c
}

// classify wraps a go-tuf error as unreachable or untrusted, keeping the
// library's message (it names the role and the check that failed).
func classify(repo string, err error) error {
	var dl *metadata.ErrDownloadHTTP
	var ue *url.Error
	switch {
	case errors.As(err, &dl) && dl.StatusCode >= 500, errors.As(err, &ue):
		return fmt.Errorf("%w: %s: %w", ErrUnreachable, repo, err)
	case errors.As(err, &dl):
		return fmt.Errorf("%w: %s: %w", ErrUntrusted, repo, err)
	}
	var exp *metadata.ErrExpiredMetadata
	if errors.As(err, &exp) {
		return fmt.Errorf("%w: %s: %w (the repository's operator must run livefix-server refresh)", ErrUntrusted, repo, err)
	}
	return fmt.Errorf("%w: %s: %w", ErrUntrusted, repo, err)
}

// download fetches one file of a level into dir and verifies its signed
// length and hashes (go-tuf's DownloadTarget, bounded by the length).
func (c *Catalog) download(l *Level, file, dir string) (string, error) {
	tf := l.Files[file]
	if tf == nil {
		return "", fmt.Errorf("level %d of %s has no %s in the repository", l.Level, l.BuildID, file)
	}
	out := filepath.Join(dir, file)
	if _, _, err := c.up.DownloadTarget(tf, out, ""); err != nil {
		os.Remove(out)
		return "", fmt.Errorf("download %s: %w", tf.Path, classify(c.repo, err))
	}
	return out, nil
}

// client is the HTTP client for metadata, targets and polls: proxies from
// the environment (HTTPS_PROXY, NO_PROXY), a bounded time per request.
func (a *Agent) client() *http.Client {
	if a.HTTP != nil {
		return a.HTTP
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = http.ProxyFromEnvironment
	t.MaxIdleConnsPerHost = 2
	t.IdleConnTimeout = 30 * time.Second
	a.HTTP = &http.Client{Transport: t, Timeout: a.Config.HTTPTimeout.Duration}
	return a.HTTP
}
