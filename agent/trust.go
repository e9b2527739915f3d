package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"github.com/theupdateframework/go-tuf/v2/metadata/trustedmetadata"
)

// Bounds on metadata downloads (go-tuf's client defaults), used when the
// signed metadata gives no length.
const (
	maxRootRotations = 256
	maxSnapshot      = 2000000
	maxTargets       = 5000000
)

// trust is the TUF metadata an agent verified last, kept in memory
// between refreshes so that a daemon neither re-reads nor re-verifies its
// trusted metadata at every poll. It mirrors STATE/agent/tuf/ (the file
// names of go-tuf's client cache: root.json, timestamp.json,
// snapshot.json, targets.json), which carries the rollback protection
// across restarts; a file is written only when its content changed.
type trust struct {
	root *metadata.Metadata[metadata.RootType] // verified
	// raw holds the bytes of each role as last verified or as read from
	// the cache (root included).
	raw map[string][]byte
	// The parsed form of raw's timestamp, snapshot and targets once this
	// agent verified them under root (nil: only raw, to be verified).
	// Each is set together with its raw bytes.
	timestamp *metadata.Metadata[metadata.TimestampType]
	snapshot  *metadata.Metadata[metadata.SnapshotType]
	targets   *metadata.Metadata[metadata.TargetsType]
	// disk identifies the cache's root and timestamp files as this agent
	// last read or wrote them: when another process (livefix update,
	// register) changed them, the cache is read again. (Snapshot and
	// targets only change with a new timestamp.)
	disk map[string]fileID
}

// fileID identifies a file's content cheaply (a stat).
type fileID struct {
	ino, size int64
	mod       time.Time
}

func statID(name string) fileID {
	fi, err := os.Stat(name)
	if err != nil {
		return fileID{}
	}
	return identity(fi)
}

func identity(fi os.FileInfo) fileID {
	id := fileID{size: fi.Size(), mod: fi.ModTime()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		id.ino = int64(st.Ino)
	}
	return id
}

// cacheRoles are the files of the metadata cache, root first.
var cacheRoles = []string{metadata.ROOT, metadata.TIMESTAMP, metadata.SNAPSHOT, metadata.TARGETS}

func (a *Agent) cacheFile(role string) string { return filepath.Join(a.tufDir(), role+".json") }

// watched says whether a cache file's identity is checked before the
// copy in memory is used.
func watched(role string) bool { return role == metadata.ROOT || role == metadata.TIMESTAMP }

// loadTrust returns the agent's trusted metadata: the copy in memory
// when the cache files are as this agent left them, else what the cache
// holds (its root verified again; the first time, the registered root).
func (a *Agent) loadTrust() (*trust, error) {
	if t := a.trust; t != nil {
		if statID(a.cacheFile(metadata.ROOT)) == t.disk[metadata.ROOT] &&
			statID(a.cacheFile(metadata.TIMESTAMP)) == t.disk[metadata.TIMESTAMP] {
			return t, nil
		}
		a.trust = nil
	}
	if err := os.MkdirAll(a.tufDir(), 0o700); err != nil {
		return nil, fmt.Errorf("agent state: %w", err)
	}
	t := &trust{raw: map[string][]byte{}, disk: map[string]fileID{}}
	root, err := os.ReadFile(a.cacheFile(metadata.ROOT))
	cached := err == nil
	if errors.Is(err, fs.ErrNotExist) {
		root, err = os.ReadFile(a.Config.Root)
	}
	if err != nil {
		return nil, fmt.Errorf("trusted root metadata: %w (run livefix register again)", err)
	}
	tm, err := trustedmetadata.New(root)
	if err != nil {
		return nil, fmt.Errorf("%w: trusted root: %w", ErrUntrusted, err)
	}
	t.root = tm.Root
	t.raw[metadata.ROOT] = root
	if !cached {
		if err := a.persist(t, metadata.ROOT, root); err != nil {
			return nil, err
		}
	}
	for _, role := range cacheRoles {
		if role != metadata.ROOT {
			if b, err := os.ReadFile(a.cacheFile(role)); err == nil {
				t.raw[role] = b
			}
		}
		if watched(role) {
			t.disk[role] = statID(a.cacheFile(role))
		}
	}
	a.trust = t
	return t, nil
}

// persist records newly verified metadata of role in memory and in the
// cache (through a temporary file and rename: readers see whole files).
func (a *Agent) persist(t *trust, role string, data []byte) error {
	t.raw[role] = data
	name := a.cacheFile(role)
	id, err := replaceFile(name, data, 0o600)
	if err != nil {
		delete(t.disk, role) // read again next time
		return fmt.Errorf("metadata cache: %w", err)
	}
	if watched(role) {
		t.disk[role] = id
	}
	return nil
}

// refreshMetadata runs the TUF client workflow (specification 5.3-5.6:
// root chain, timestamp, snapshot, targets) with go-tuf's trusted
// metadata set doing the checks of everything new: signatures and
// thresholds, versions against the previously trusted ones (rollback),
// expiry, lengths and hashes (mix-and-match). It is go-tuf's updater
// sequence, with two differences: the previously trusted metadata comes
// from memory instead of being re-read from disk, and what this agent
// verified under the same root is not verified again (only its expiry
// and version are checked again, as go-tuf does for a cached file).
// timestamp, when not nil, is the timestamp.json a poll fetched just now
// (verified here like a download). Each role's new metadata is kept as
// soon as it verified, as go-tuf's updater does.
func (a *Agent) refreshMetadata(ctx context.Context, t *trust, timestamp []byte) (*trustedmetadata.TrustedMetadata, error) {
	var err error
	tm := &trustedmetadata.TrustedMetadata{Root: t.root, Targets: map[string]*metadata.Metadata[metadata.TargetsType]{}, RefTime: time.Now().UTC()}
	base := metadataURL(a.Config.Repository) + "/"

	// 5.3: every newer root version, each signed by the previous root's
	// keys and its own.
	for v, last := tm.Root.Signed.Version+1, tm.Root.Signed.Version+maxRootRotations; v <= last; v++ {
		data, err := a.fetch(ctx, base+strconv.FormatInt(v, 10)+".root.json", maxRoot)
		var dl *metadata.ErrDownloadHTTP
		if errors.As(err, &dl) && dl.StatusCode == http.StatusNotFound {
			break
		}
		if err != nil {
			return nil, err
		}
		if _, err := tm.UpdateRoot(data); err != nil {
			return nil, err
		}
		// What was verified under the old root is verified again.
		t.root, t.timestamp, t.snapshot, t.targets = tm.Root, nil, nil, nil
		if err := a.persist(t, metadata.ROOT, data); err != nil {
			return nil, err
		}
	}

	// 5.4: the trusted timestamp is the reference for rollback; a new
	// one must verify under the (new) root and not go back.
	if t.timestamp != nil {
		tm.Timestamp = t.timestamp
	} else if old := t.raw[metadata.TIMESTAMP]; old != nil {
		if _, err := tm.UpdateTimestamp(old); err != nil && !errors.Is(err, &metadata.ErrRepository{}) {
			return nil, err
		}
	}
	if timestamp == nil {
		if timestamp, err = a.fetch(ctx, base+"timestamp.json", maxTimestamp); err != nil {
			return nil, err
		}
	}
	switch _, err := tm.UpdateTimestamp(timestamp); {
	case errors.Is(err, &metadata.ErrEqualVersionNumber{}):
		// Nothing new: the trusted one stays.
	case err != nil:
		return nil, err
	default:
		t.timestamp = tm.Timestamp
		if err := a.persist(t, metadata.TIMESTAMP, timestamp); err != nil {
			return nil, err
		}
	}
	t.timestamp = tm.Timestamp
	if tm.Timestamp == nil || tm.Timestamp.Signed.IsExpired(tm.RefTime) {
		return nil, &metadata.ErrExpiredMetadata{Msg: "timestamp.json is expired"}
	}
	snapMeta := tm.Timestamp.Signed.Meta["snapshot.json"]
	if snapMeta == nil {
		return nil, &metadata.ErrRepository{Msg: "timestamp names no snapshot"}
	}

	// 5.5: the snapshot the timestamp names; the trusted one is kept
	// when it is that version, else it is the reference for rollback.
	snapOK := false
	switch old := t.raw[metadata.SNAPSHOT]; {
	case t.snapshot != nil:
		tm.Snapshot = t.snapshot
		snapOK = !t.snapshot.Signed.IsExpired(tm.RefTime) && t.snapshot.Signed.Version == snapMeta.Version
	case old != nil:
		_, err := tm.UpdateSnapshot(old, true)
		if err != nil && !errors.Is(err, &metadata.ErrRepository{}) {
			return nil, err
		}
		snapOK = err == nil
	}
	if !snapOK {
		data, err := a.fetch(ctx, base+versioned(tm.Root, snapMeta, metadata.SNAPSHOT), orMax(snapMeta.Length, maxSnapshot))
		if err != nil {
			return nil, err
		}
		if _, err := tm.UpdateSnapshot(data, false); err != nil {
			return nil, err
		}
		t.snapshot = tm.Snapshot
		if err := a.persist(t, metadata.SNAPSHOT, data); err != nil {
			return nil, err
		}
	}
	t.snapshot = tm.Snapshot
	targetsMeta := tm.Snapshot.Signed.Meta["targets.json"]
	if targetsMeta == nil {
		return nil, &metadata.ErrRepository{Msg: "snapshot names no targets"}
	}

	// 5.6: the targets the snapshot names (length and hashes first).
	switch old := t.raw[metadata.TARGETS]; {
	case t.targets != nil:
		if targetsMeta.VerifyLengthHashes(old) == nil && t.targets.Signed.Version == targetsMeta.Version && !t.targets.Signed.IsExpired(tm.RefTime) {
			tm.Targets[metadata.TARGETS] = t.targets
		}
	case old != nil:
		if _, err := tm.UpdateTargets(old); err != nil && !errors.Is(err, &metadata.ErrRepository{}) {
			return nil, err
		}
	}
	if tm.Targets[metadata.TARGETS] == nil {
		data, err := a.fetch(ctx, base+versioned(tm.Root, targetsMeta, metadata.TARGETS), orMax(targetsMeta.Length, maxTargets))
		if err != nil {
			return nil, err
		}
		if _, err := tm.UpdateTargets(data); err != nil {
			return nil, err
		}
		t.targets = tm.Targets[metadata.TARGETS]
		if err := a.persist(t, metadata.TARGETS, data); err != nil {
			return nil, err
		}
	}
	t.targets = tm.Targets[metadata.TARGETS]
	return tm, nil
}

// versioned is a role's file name: VERSION.ROLE.json with consistent
// snapshots, ROLE.json without.
func versioned(root *metadata.Metadata[metadata.RootType], meta *metadata.MetaFiles, role string) string {
	if root.Signed.ConsistentSnapshot {
		return strconv.FormatInt(meta.Version, 10) + "." + role + ".json"
	}
	return role + ".json"
}

func orMax(length, max int64) int64 {
	if length > 0 {
		return length
	}
	return max
}

// fetch GETs url with the agent's client and returns the body, refusing
// more than limit bytes, with go-tuf's fetcher errors (ErrDownloadHTTP
// for a status other than 200, ErrDownloadLengthMismatch past limit).
func (a *Agent) fetch(ctx context.Context, url string, limit int64) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", "livefix-agent/"+a.Version)
	resp, err := a.client().Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		// Read a short error body so that the connection is kept.
		io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return nil, &metadata.ErrDownloadHTTP{StatusCode: resp.StatusCode, URL: url}
	}
	if resp.ContentLength > limit {
		return nil, &metadata.ErrDownloadLengthMismatch{Msg: fmt.Sprintf("download failed for %s, length %d is larger than expected %d", url, resp.ContentLength, limit)}
	}
	var buf bytes.Buffer
	if resp.ContentLength > 0 {
		buf.Grow(int(resp.ContentLength))
	}
	if _, err := buf.ReadFrom(io.LimitReader(resp.Body, limit+1)); err != nil {
		return nil, err
	}
	if int64(buf.Len()) > limit {
		return nil, &metadata.ErrDownloadLengthMismatch{Msg: fmt.Sprintf("download failed for %s, length %d is larger than expected %d", url, buf.Len(), limit)}
	}
	return buf.Bytes(), nil
}
