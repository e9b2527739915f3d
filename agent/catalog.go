package agent

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"github.com/livefix/livefix/patchrepo"
	"github.com/theupdateframework/go-tuf/v2/metadata"
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
	Skipped    []string
	agent      *Agent
	consistent bool // consistent snapshots: targets are stored as DIR/HASH.NAME
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

// Refresh fetches and verifies the repository's metadata (TUF client
// workflow: root chain, timestamp, snapshot, targets) and returns its
// catalog.
func (a *Agent) Refresh(ctx context.Context) (*Catalog, error) {
	ts := a.poll.fresh
	a.poll.fresh = nil
	t, err := a.loadTrust()
	if err != nil {
		return nil, err
	}
	tm, err := a.refreshMetadata(ctx, t, ts)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, classify(a.Config.Repository, err)
	}
	c := buildCatalog(tm.Targets[metadata.TARGETS].Signed.Targets)
	c.agent, c.consistent = a, tm.Root.Signed.ConsistentSnapshot
	return c, nil
}

func buildCatalog(targets map[string]*metadata.TargetFiles) *Catalog {
	c := &Catalog{}
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
// length and hashes before writing it (the download is bounded by the
// signed length).
func (c *Catalog) download(ctx context.Context, l *Level, file string, dir *scratch) (string, error) {
	tf := l.Files[file]
	if tf == nil {
		return "", fmt.Errorf("level %d of %s has no %s in the repository", l.Level, l.BuildID, file)
	}
	repo := c.agent.Config.Repository
	data, err := c.agent.fetch(ctx, targetsURL(repo)+"/"+c.remotePath(tf), tf.Length)
	if err == nil {
		err = tf.VerifyLengthHashes(data)
	}
	if err != nil {
		return "", fmt.Errorf("download %s: %w", tf.Path, classify(repo, err))
	}
	out := dir.path(file)
	if err := os.WriteFile(out, data, 0o644); err != nil {
		return "", fmt.Errorf("download %s: %w", tf.Path, err)
	}
	return out, nil
}

// remotePath is where a target is stored: DIR/HASH.NAME with consistent
// snapshots (the first of its hashes, as go-tuf's client takes it).
func (c *Catalog) remotePath(tf *metadata.TargetFiles) string {
	if !c.consistent {
		return tf.Path
	}
	var sum string
	for _, h := range tf.Hashes {
		sum = hex.EncodeToString(h)
		break
	}
	dir, base := path.Split(tf.Path)
	return dir + sum + "." + base
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
