package patchrepo

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"golang.org/x/sys/unix"
)

// Errors callers branch on (wrapped).
var (
	ErrExists         = errors.New("repository already exists")
	ErrNoRepository   = errors.New("no repository")
	ErrLevelNotHigher = errors.New("level not higher than the published ones")
	ErrMalformed      = errors.New("malformed patch")
	ErrBuildIDDiffers = errors.New("build-id of NAME.json and module differ")
	ErrNotFound       = errors.New("no such patch")
	ErrRevoked        = errors.New("patch is revoked")
)

// Default metadata lifetimes. The timestamp is short so that a host
// notices a frozen repository; `livefix-server refresh` (from cron or a
// systemd timer, or livefix-server serve) re-signs it.
var DefaultExpires = map[string]time.Duration{
	metadata.ROOT:      365 * 24 * time.Hour,
	metadata.TARGETS:   90 * 24 * time.Hour,
	metadata.SNAPSHOT:  30 * 24 * time.Hour,
	metadata.TIMESTAMP: 7 * 24 * time.Hour,
}

// Settings are the repository's parameters, kept in DIR/settings.json.
type Settings struct {
	// Expires is each role's metadata lifetime, as a Go duration string.
	Expires map[string]string `json:"expires"`
}

func (s *Settings) lifetime(role string) time.Duration {
	if d, err := time.ParseDuration(s.Expires[role]); err == nil && d > 0 {
		return d
	}
	return DefaultExpires[role]
}

// Repo is a repository data directory.
type Repo struct {
	Dir      string
	settings Settings
	// Now is the clock (tests); nil means time.Now.
	Now func() time.Time
}

// Paths inside a data directory.
func (r *Repo) keyDir(role string) string { return filepath.Join(r.Dir, "keys", role) }
func (r *Repo) metaDir() string           { return filepath.Join(r.Dir, "repository", "metadata") }
func (r *Repo) targetsDir() string        { return filepath.Join(r.Dir, "repository", "targets") }

// RepositoryDir is the directory a web server serves.
func RepositoryDir(dataDir string) string { return filepath.Join(dataDir, "repository") }

func (r *Repo) now() time.Time {
	if r.Now != nil {
		return r.Now().UTC()
	}
	return time.Now().UTC()
}

// Open opens the repository in data directory dir.
func Open(dir string) (*Repo, error) {
	r := &Repo{Dir: dir}
	b, err := os.ReadFile(filepath.Join(dir, "settings.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w in %s: run livefix-server keys init --data %s first", ErrNoRepository, dir, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("open repository: %w", err)
	}
	if err := json.Unmarshal(b, &r.settings); err != nil {
		return nil, fmt.Errorf("open repository: %s/settings.json: %w", dir, err)
	}
	return r, nil
}

// InitOptions configure Init. Zero values take the defaults.
type InitOptions struct {
	Keys       map[string]int           // keys per role (default 1)
	Thresholds map[string]int           // signatures needed per role (default 1)
	Expires    map[string]time.Duration // metadata lifetimes (DefaultExpires)
	// RootKeysDir receives the root keys (default DIR/keys/root). Point it
	// at removable storage to keep the root key offline: only keys rotate
	// needs it.
	RootKeysDir string
	Now         func() time.Time
}

// Init creates the keys and the first metadata of a new repository.
func Init(dir string, o InitOptions) (*Repo, error) {
	r := &Repo{Dir: dir, Now: o.Now, settings: Settings{Expires: map[string]string{}}}
	if _, err := os.Stat(filepath.Join(r.metaDir(), "root.json")); err == nil {
		return nil, fmt.Errorf("%w in %s; keys init never overwrites one (use keys rotate)", ErrExists, dir)
	}
	for _, role := range Roles {
		d := DefaultExpires[role]
		if v, ok := o.Expires[role]; ok && v > 0 {
			d = v
		}
		r.settings.Expires[role] = d.String()
	}
	if err := os.MkdirAll(r.metaDir(), 0o755); err != nil {
		return nil, fmt.Errorf("init repository: %w", err)
	}
	if err := os.MkdirAll(r.targetsDir(), 0o755); err != nil {
		return nil, fmt.Errorf("init repository: %w", err)
	}
	unlock, err := r.lock(unix.LOCK_EX)
	if err != nil {
		return nil, err
	}
	defer unlock()
	now := r.now()
	root := metadata.Root(now.Add(r.settings.lifetime(metadata.ROOT)))
	root.Signed.ConsistentSnapshot = true
	keys := map[string][]*signingKey{}
	for _, role := range Roles {
		n := o.Keys[role]
		if n == 0 {
			n = 1
		}
		t := o.Thresholds[role]
		if t == 0 {
			t = 1
		}
		if n < 1 || t < 1 || t > n {
			return nil, fmt.Errorf("init repository: role %s: threshold %d of %d keys; want 1 <= threshold <= keys", role, t, n)
		}
		dir := r.keyDir(role)
		if role == metadata.ROOT && o.RootKeysDir != "" {
			dir = o.RootKeysDir
		}
		for range n {
			k, err := newKey()
			if err != nil {
				return nil, err
			}
			if err := writeKey(dir, k); err != nil {
				return nil, err
			}
			if err := root.Signed.AddKey(k.public, role); err != nil {
				return nil, fmt.Errorf("init repository: %w", err)
			}
			keys[role] = append(keys[role], k)
		}
		root.Signed.Roles[role].Threshold = t
	}
	if err := sign(root, metadata.ROOT, &root.Signed, keys[metadata.ROOT], "the root keys directory"); err != nil {
		return nil, err
	}
	if err := r.writeRoot(root); err != nil {
		return nil, err
	}
	st := &state{
		root:      root,
		targets:   metadata.Targets(now),
		snapshot:  metadata.Snapshot(now),
		timestamp: metadata.Timestamp(now),
	}
	st.targets.Signed.Version = 0
	st.snapshot.Signed.Version = 0
	st.timestamp.Signed.Version = 0
	if err := r.commit(st, true, keys); err != nil {
		return nil, err
	}
	b, _ := json.MarshalIndent(r.settings, "", "  ")
	if err := writeAtomic(filepath.Join(dir, "settings.json"), append(b, '\n'), 0o644); err != nil {
		return nil, err
	}
	return r, nil
}

// lock takes DIR/repo.lock (flock), waiting for another change to end.
func (r *Repo) lock(how int) (func(), error) {
	f, err := os.OpenFile(filepath.Join(r.Dir, "repo.lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock repository: %w", err)
	}
	for {
		err = unix.Flock(int(f.Fd()), how)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock repository %s: %w", f.Name(), err)
	}
	return func() { f.Close() }, nil
}

// state is the metadata in force.
type state struct {
	root      *metadata.Metadata[metadata.RootType]
	targets   *metadata.Metadata[metadata.TargetsType]
	snapshot  *metadata.Metadata[metadata.SnapshotType]
	timestamp *metadata.Metadata[metadata.TimestampType]
}

// load reads the metadata in force by following timestamp -> snapshot ->
// targets, as a host does.
func (r *Repo) load() (*state, error) {
	md := r.metaDir()
	st := &state{}
	var err error
	if st.root, err = metadata.Root().FromFile(filepath.Join(md, "root.json")); err != nil {
		return nil, fmt.Errorf("read root metadata: %w", err)
	}
	if st.timestamp, err = metadata.Timestamp().FromFile(filepath.Join(md, "timestamp.json")); err != nil {
		return nil, fmt.Errorf("read timestamp metadata: %w", err)
	}
	sm := st.timestamp.Signed.Meta["snapshot.json"]
	if sm == nil {
		return nil, fmt.Errorf("read metadata: timestamp names no snapshot")
	}
	if st.snapshot, err = metadata.Snapshot().FromFile(filepath.Join(md, fmt.Sprintf("%d.snapshot.json", sm.Version))); err != nil {
		return nil, fmt.Errorf("read snapshot metadata: %w", err)
	}
	tm := st.snapshot.Signed.Meta["targets.json"]
	if tm == nil {
		return nil, fmt.Errorf("read metadata: snapshot names no targets")
	}
	if st.targets, err = metadata.Targets().FromFile(filepath.Join(md, fmt.Sprintf("%d.targets.json", tm.Version))); err != nil {
		return nil, fmt.Errorf("read targets metadata: %w", err)
	}
	return st, nil
}

func (r *Repo) onlineKeys() (map[string][]*signingKey, error) {
	keys := map[string][]*signingKey{}
	for _, role := range []string{metadata.TARGETS, metadata.SNAPSHOT, metadata.TIMESTAMP} {
		k, err := readKeys(r.keyDir(role))
		if err != nil {
			return nil, err
		}
		keys[role] = k
	}
	return keys, nil
}

// txn is one change of the repository, made under its exclusive lock on
// the metadata in force (see update).
type txn struct {
	r  *Repo
	st *state
	// write: sign and write new snapshot and timestamp metadata, and the
	// targets metadata too when targets.
	write, targets bool
	keys           map[string][]*signingKey // online keys, read on first use
}

// onlineKeys returns the online roles' keys (read once per change), so
// that a change can check it holds them before it stores anything.
func (tx *txn) onlineKeys() (map[string][]*signingKey, error) {
	if tx.keys == nil {
		k, err := tx.r.onlineKeys()
		if err != nil {
			return nil, err
		}
		tx.keys = k
	}
	return tx.keys, nil
}

// entries are the published levels in the metadata in force.
func (tx *txn) entries() ([]*Entry, error) { return entries(&tx.st.targets.Signed) }

// update is every change's sequence: take the repository lock, load the
// metadata in force, let fn change it, then (when fn set tx.write) sign
// and write it with the online keys (commit). An error from fn leaves
// the metadata as it was.
func (r *Repo) update(fn func(tx *txn) error) error {
	unlock, err := r.lock(unix.LOCK_EX)
	if err != nil {
		return err
	}
	defer unlock()
	st, err := r.load()
	if err != nil {
		return err
	}
	tx := &txn{r: r, st: st}
	if err := fn(tx); err != nil || !tx.write {
		return err
	}
	keys, err := tx.onlineKeys()
	if err != nil {
		return err
	}
	return r.commit(st, tx.targets, keys)
}

// view runs fn on the metadata in force under a shared lock.
func (r *Repo) view(fn func(st *state) error) error {
	unlock, err := r.lock(unix.LOCK_SH)
	if err != nil {
		return err
	}
	defer unlock()
	st, err := r.load()
	if err != nil {
		return err
	}
	return fn(st)
}

// commit signs and writes new targets (when changed), snapshot and
// timestamp metadata, each naming the one below it. The timestamp's
// rename is the commit point.
func (r *Repo) commit(st *state, targetsChanged bool, keys map[string][]*signingKey) error {
	root := &st.root.Signed
	if targetsChanged {
		t := &st.targets.Signed
		b, err := signAndWrite(r, st.targets, metadata.TARGETS, &t.Version, &t.Expires, root, keys, true)
		if err != nil {
			return err
		}
		st.snapshot.Signed.Meta["targets.json"] = metaFile(t.Version, b)
	}
	s := &st.snapshot.Signed
	b, err := signAndWrite(r, st.snapshot, metadata.SNAPSHOT, &s.Version, &s.Expires, root, keys, true)
	if err != nil {
		return err
	}
	st.timestamp.Signed.Meta["snapshot.json"] = metaFile(s.Version, b)
	ts := &st.timestamp.Signed
	_, err = signAndWrite(r, st.timestamp, metadata.TIMESTAMP, &ts.Version, &ts.Expires, root, keys, false)
	return err
}

// signAndWrite is one role's step of a commit: the next version (version
// and expires are m's own fields) with the role's lifetime, signed with
// its keys (at least its threshold), written as VERSION.ROLE.json
// (versioned: consistent snapshots) or ROLE.json. It returns the bytes
// written, for the meta of the role above.
func signAndWrite[T metadata.Roles](r *Repo, m *metadata.Metadata[T], role string, version *int64, expires *time.Time,
	root *metadata.RootType, keys map[string][]*signingKey, versioned bool) ([]byte, error) {
	*version++
	*expires = r.now().Add(r.settings.lifetime(role))
	if err := sign(m, role, root, keys[role], r.keyDir(role)); err != nil {
		return nil, err
	}
	b, err := m.ToBytes(true)
	if err != nil {
		return nil, fmt.Errorf("encode %s metadata: %w", role, err)
	}
	name := role + ".json"
	if versioned {
		name = strconv.FormatInt(*version, 10) + "." + name
	}
	return b, writeAtomic(filepath.Join(r.metaDir(), name), b, 0o644)
}

func metaFile(version int64, b []byte) *metadata.MetaFiles {
	sum := sha256.Sum256(b)
	m := metadata.MetaFile(version)
	m.Length = int64(len(b))
	m.Hashes = metadata.Hashes{"sha256": sum[:]}
	return m
}

func (r *Repo) writeRoot(root *metadata.Metadata[metadata.RootType]) error {
	b, err := root.ToBytes(true)
	if err != nil {
		return fmt.Errorf("encode root metadata: %w", err)
	}
	md := r.metaDir()
	if err := writeAtomic(filepath.Join(md, fmt.Sprintf("%d.root.json", root.Signed.Version)), b, 0o644); err != nil {
		return err
	}
	return writeAtomic(filepath.Join(md, "root.json"), b, 0o644)
}

// writeTarget stores a target file under its consistent-snapshot name
// (DIR/HASH.NAME) and returns its TUF description.
func (r *Repo) writeTarget(name string, data []byte, custom *Custom) (*metadata.TargetFiles, error) {
	tf, err := metadata.TargetFile().FromBytes(name, data, "sha256")
	if err != nil {
		return nil, fmt.Errorf("hash target %s: %w", name, err)
	}
	if err := setCustom(tf, custom); err != nil {
		return nil, err
	}
	dir, base := path.Split(name)
	full := filepath.Join(r.targetsDir(), filepath.FromSlash(dir), hex.EncodeToString(tf.Hashes["sha256"])+"."+base)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		return nil, fmt.Errorf("store target: %w", err)
	}
	if err := writeAtomic(full, data, 0o644); err != nil {
		return nil, err
	}
	return tf, nil
}

func setCustom(tf *metadata.TargetFiles, c *Custom) error {
	b, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("encode custom metadata: %w", err)
	}
	raw := json.RawMessage(b)
	tf.Custom = &raw
	return nil
}

// writeAtomic writes a file through a temporary file, fsync and rename,
// then syncs the directory: readers see the old or the new content.
func writeAtomic(name string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(name)
	f, err := os.CreateTemp(dir, "."+filepath.Base(name)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	tmp := f.Name()
	fail := func(err error) error {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", name, err)
	}
	if _, err := f.Write(data); err != nil {
		return fail(err)
	}
	if err := f.Chmod(mode); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := os.Rename(tmp, name); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", name, err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// Entry is one published patch level: its files and custom metadata.
type Entry struct {
	Custom
	// Targets are the target names of the level's files, sorted.
	Targets []string `json:"targets"`
	Length  int64    `json:"length"`
}

// entries groups the targets of st by kind, build-id and level.
func entries(t *metadata.TargetsType) ([]*Entry, error) {
	byKey := map[string]*Entry{}
	for name, tf := range t.Targets {
		kind, bid, level, _, err := ParseTargetPath(name)
		if err != nil {
			return nil, err
		}
		if tf.Custom == nil {
			return nil, fmt.Errorf("target %s: no custom metadata", name)
		}
		c, err := DecodeCustom(*tf.Custom)
		if err != nil {
			return nil, fmt.Errorf("target %s: %w", name, err)
		}
		key := kind + "/" + bid + "/" + strconv.Itoa(level)
		e := byKey[key]
		if e == nil {
			e = &Entry{Custom: *c}
			byKey[key] = e
		}
		e.Targets = append(e.Targets, name)
		e.Length += tf.Length
	}
	out := make([]*Entry, 0, len(byKey))
	for _, e := range byKey {
		sort.Strings(e.Targets)
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Kind != b.Kind {
			return a.Kind < b.Kind
		}
		if a.BuildID != b.BuildID {
			return a.BuildID < b.BuildID
		}
		return a.Level < b.Level
	})
	return out, nil
}

// Entries lists the published patches of verified-or-local targets
// metadata: the agent uses it on what its TUF client verified.
func Entries(t *metadata.TargetsType) ([]*Entry, error) { return entries(t) }

// List returns every published patch level, revoked ones included.
func (r *Repo) List() ([]*Entry, error) {
	var es []*Entry
	err := r.view(func(st *state) (err error) {
		es, err = entries(&st.targets.Signed)
		return err
	})
	return es, err
}
