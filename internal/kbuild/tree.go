package kbuild

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// These versions change whenever extracting or preparing starts doing
// something different, so that trees made by an older livefix are redone.
const (
	extractVersion = "1"
	prepareVersion = "2"
)

// Tree is a prepared kernel source tree in the cache.
type Tree struct {
	Dir    string // the kernel source tree, ready for single-object builds
	Target Target
	// Includes are headers (file name -> contents) BuildPair puts in the
	// tree's include/ directory for the patched build only, and removes
	// with the patch: livefix's kpatch-macros.h, which patches include.
	Includes map[string][]byte
	// BasePatches are patch files BuildPair applies before the pristine
	// build, so that both sides carry them: changes the running kernel
	// has that the source lacks (a vendor's own patches). They are
	// reverted with the patches.
	BasePatches []string
	// MaxHeaderUnits limits how many translation units a header change
	// may make BuildPair compile (DefaultMaxHeaderUnits when zero).
	MaxHeaderUnits int
	// Progress, when not nil, receives a line every few seconds while
	// BuildPair compiles many units.
	Progress io.Writer

	root  string // CacheDir()/kernel/RELEASE-HASH: Dir, stamps, marker, backups
	lock  string // lock file serialising every user of root
	stamp string // expected contents of the "prepared" stamp
}

// Paths inside Tree.root.
const (
	srcName       = "src"
	extractedName = "extracted" // stamp: the source is fully extracted into src
	preparedName  = "prepared"  // stamp: olddefconfig and prepare finished
	markerName    = "applied"   // marker: a patch is (maybe partly) applied to src
	backupName    = "backup"    // pristine copies of the files a patch touches
)

// Prepare returns the cached, prepared source tree for t, creating it on
// first use: it extracts t.Source, installs t.Config as .config (with the
// signing-key settings pointed at local paths, since Debian's certificates
// are not shipped), and runs `make olddefconfig` and `make prepare`, then
// writes a stamp. A complete tree is reused; an incomplete one is redone.
// A patch left applied by a crashed BuildPair is reverted.
//
// Prepare holds an exclusive lock on the tree while it works, so
// concurrent callers, in this process or others, wait for each other.
// Progress lines go to log, which may be nil.
func Prepare(ctx context.Context, t Target, log io.Writer) (*Tree, error) {
	if log == nil {
		log = io.Discard
	}
	if t.Release == "" || t.Config == "" || t.Source == "" {
		return nil, fmt.Errorf("prepare kernel tree: target needs Release, Config and Source (use DefaultTarget)")
	}
	config, err := os.ReadFile(t.Config)
	if err != nil {
		return nil, fmt.Errorf("prepare kernel tree: read config: %w; run `make setup`", err)
	}
	srcInfo, err := os.Stat(t.Source)
	if err != nil {
		return nil, fmt.Errorf("prepare kernel tree: kernel source: %w; run `make setup` to install linux-source", err)
	}
	sum := sha256.Sum256(config)
	hash := hex.EncodeToString(sum[:])
	kernelDir := filepath.Join(CacheDir(), "kernel")
	if err := os.MkdirAll(kernelDir, 0o755); err != nil {
		return nil, fmt.Errorf("prepare kernel tree: create cache dir: %w (set LIVEFIX_CACHE to a writable directory)", err)
	}
	name := t.Release + "-" + hash[:12]
	tr := &Tree{
		Target: t,
		root:   filepath.Join(kernelDir, name),
		lock:   filepath.Join(kernelDir, name+".lock"),
	}
	tr.Dir = filepath.Join(tr.root, srcName)
	source := fmt.Sprintf("source=%s\nsource-size=%d\nsource-mtime=%d\n", t.Source, srcInfo.Size(), srcInfo.ModTime().UnixNano())
	extractedStamp := "extract-version=" + extractVersion + "\n" + source
	tr.stamp = extractedStamp + "prepare-version=" + prepareVersion + "\nrelease=" + t.Release + "\nconfig-sha256=" + hash + "\n"

	// A prepared tree with no patch applied needs no lock to be handed
	// out: BuildPair takes the lock, repairs and re-checks the stamp
	// itself. This spares every build one wait for the shared tree.
	if _, err := os.Stat(filepath.Join(tr.root, markerName)); errors.Is(err, os.ErrNotExist) &&
		stampIs(filepath.Join(tr.root, preparedName), tr.stamp) {
		fmt.Fprintf(log, "kbuild: using prepared tree %s\n", tr.Dir)
		return tr, nil
	}
	unlock, err := tr.acquire(ctx, log)
	if err != nil {
		return nil, err
	}
	defer unlock()

	if err := tr.recover(log); err != nil {
		return nil, err
	}
	if stampIs(filepath.Join(tr.root, preparedName), tr.stamp) {
		fmt.Fprintf(log, "kbuild: using prepared tree %s\n", tr.Dir)
		return tr, nil
	}
	_ = os.Remove(filepath.Join(tr.root, preparedName))
	if !stampIs(filepath.Join(tr.root, extractedName), extractedStamp) {
		if err := tr.extract(ctx, srcInfo.IsDir(), log); err != nil {
			return nil, err
		}
		if err := writeFileAtomic(filepath.Join(tr.root, extractedName), []byte(extractedStamp)); err != nil {
			return nil, fmt.Errorf("prepare kernel tree: %w", err)
		}
	}
	if err := os.WriteFile(filepath.Join(tr.Dir, ".config"), localConfig(config), 0o644); err != nil {
		return nil, fmt.Errorf("prepare kernel tree: write .config: %w", err)
	}
	// prepare compiles asm-offsets and modpost's helpers with KCFLAGS, so it
	// runs with BuildPair's flags; otherwise every first build redoes it.
	jobs := "-j" + strconv.Itoa(runtime.NumCPU())
	for _, step := range [][]string{{"olddefconfig"}, {jobs, "KCFLAGS=" + PatchCFLAGS, "prepare"}} {
		if err := tr.make(ctx, log, step...); err != nil {
			return nil, fmt.Errorf("prepare kernel tree: %w", err)
		}
	}
	if err := writeFileAtomic(filepath.Join(tr.root, preparedName), []byte(tr.stamp)); err != nil {
		return nil, fmt.Errorf("prepare kernel tree: %w", err)
	}
	fmt.Fprintf(log, "kbuild: tree ready at %s\n", tr.Dir)
	return tr, nil
}

// make runs make in the tree and logs how long it took.
func (tr *Tree) make(ctx context.Context, log io.Writer, args ...string) error {
	start := time.Now()
	fmt.Fprintf(log, "kbuild: make %s\n", strings.Join(args, " "))
	out, err := run(ctx, tr.Dir, "make", args...)
	if err != nil {
		return fmt.Errorf("make %s in %s: %w:%s", strings.Join(args, " "), tr.Dir, err, tail(out, 12))
	}
	fmt.Fprintf(log, "kbuild: make %s done in %.1fs\n", strings.Join(args, " "), time.Since(start).Seconds())
	return nil
}

// extract replaces src with a fresh copy of the target's source.
func (tr *Tree) extract(ctx context.Context, isDir bool, log io.Writer) error {
	if err := os.RemoveAll(tr.root); err != nil {
		return fmt.Errorf("prepare kernel tree: remove stale tree: %w", err)
	}
	tmp := tr.Dir + ".tmp"
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return fmt.Errorf("prepare kernel tree: %w", err)
	}
	start := time.Now()
	fmt.Fprintf(log, "kbuild: extracting %s into %s\n", tr.Target.Source, tr.Dir)
	var out []byte
	var err error
	if isDir {
		out, err = run(ctx, tmp, "rsync", "-a", "--delete", strings.TrimSuffix(tr.Target.Source, "/")+"/", tmp+"/")
	} else {
		out, err = run(ctx, tmp, "tar", "-x", "-f", tr.Target.Source, "--strip-components=1")
	}
	if err != nil {
		_ = os.RemoveAll(tmp)
		return fmt.Errorf("prepare kernel tree: extract %s: %w:%s", tr.Target.Source, err, tail(out, 8))
	}
	if _, err := os.Stat(filepath.Join(tmp, "Makefile")); err != nil {
		_ = os.RemoveAll(tmp)
		return fmt.Errorf("prepare kernel tree: %s does not hold a kernel source tree (no top-level Makefile)", tr.Target.Source)
	}
	if err := os.Rename(tmp, tr.Dir); err != nil {
		return fmt.Errorf("prepare kernel tree: %w", err)
	}
	fmt.Fprintf(log, "kbuild: extracted in %.1fs\n", time.Since(start).Seconds())
	return nil
}

// localConfig rewrites the settings that name Debian's signing
// certificates, which are not part of the source package: no extra trusted
// or revoked keys, and a module signing key kbuild may generate itself.
func localConfig(config []byte) []byte {
	set := map[string]string{
		"CONFIG_SYSTEM_TRUSTED_KEYS":    `""`,
		"CONFIG_SYSTEM_REVOCATION_KEYS": `""`,
		"CONFIG_MODULE_SIG_KEY":         `"certs/signing_key.pem"`,
	}
	var out bytes.Buffer
	for _, line := range strings.SplitAfter(string(config), "\n") {
		key, _, ok := strings.Cut(strings.TrimSpace(line), "=")
		if v, has := set[key]; ok && has {
			fmt.Fprintf(&out, "%s=%s\n", key, v)
			delete(set, key)
			continue
		}
		out.WriteString(line)
	}
	if out.Len() > 0 && !bytes.HasSuffix(out.Bytes(), []byte("\n")) {
		out.WriteByte('\n')
	}
	// Settings the config does not mention are left to olddefconfig,
	// whose defaults are already local paths.
	return out.Bytes()
}

// acquire takes the tree's exclusive lock, waiting for other holders
// while ctx allows. It waits in the kernel (a blocking flock), so that it
// gets the lock as soon as the holder releases it rather than at its next
// poll.
func (tr *Tree) acquire(ctx context.Context, log io.Writer) (func(), error) {
	f, err := os.OpenFile(tr.lock, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock kernel tree: %w", err)
	}
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if err == nil {
		return func() { _ = f.Close() }, nil // closing releases the lock
	}
	if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
		_ = f.Close()
		return nil, fmt.Errorf("lock kernel tree %s: %w", tr.lock, err)
	}
	fmt.Fprintf(log, "kbuild: waiting for another livefix build using %s\n", tr.root)
	got := make(chan error, 1)
	var mu sync.Mutex
	abandoned := false
	go func() {
		var err error
		for {
			err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
			if !errors.Is(err, syscall.EINTR) {
				break
			}
		}
		mu.Lock()
		defer mu.Unlock()
		if abandoned {
			_ = f.Close() // the caller gave up: release at once
			return
		}
		got <- err
	}()
	select {
	case err := <-got:
		if err != nil {
			_ = f.Close()
			return nil, fmt.Errorf("lock kernel tree %s: %w", tr.lock, err)
		}
		return func() { _ = f.Close() }, nil
	case <-ctx.Done():
		mu.Lock()
		defer mu.Unlock()
		select {
		case <-got: // the lock came just now
			_ = f.Close()
		default:
			abandoned = true
		}
		return nil, fmt.Errorf("lock kernel tree: %w", ctx.Err())
	}
}

func stampIs(path, want string) bool {
	b, err := os.ReadFile(path)
	return err == nil && string(b) == want
}

func writeFileAtomic(path string, data []byte) error {
	// A temporary name of its own: records are written by processes
	// that do not hold the tree's lock (CompiledUnits), and two writers
	// of one name would rename each other's file away.
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		_ = os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// marker records which files a patch may have changed, so that they can be
// put back even if the process dies while the patch is applied.
type marker struct {
	Saved   []string `json:"saved"`   // copied to backup/ before patching
	Created []string `json:"created"` // did not exist before patching
}

// saveAndMark copies the pristine versions of files into backup/ and then
// writes the marker. Until the marker exists the tree is untouched.
func (tr *Tree) saveAndMark(files []string) error {
	backup := filepath.Join(tr.root, backupName)
	if err := os.RemoveAll(backup); err != nil {
		return fmt.Errorf("clear backups: %w", err)
	}
	var m marker
	for _, rel := range files {
		src := filepath.Join(tr.Dir, rel)
		if _, err := os.Lstat(src); errors.Is(err, os.ErrNotExist) {
			m.Created = append(m.Created, rel)
			continue
		}
		if err := copyFile(src, filepath.Join(backup, rel)); err != nil {
			return fmt.Errorf("back up %s: %w", rel, err)
		}
		m.Saved = append(m.Saved, rel)
	}
	data, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("marker: %w", err)
	}
	return writeFileAtomic(filepath.Join(tr.root, markerName), data)
}

// recover puts back the files recorded in a leftover marker. If that is
// impossible the tree is thrown away, to be extracted again.
func (tr *Tree) recover(log io.Writer) error {
	data, err := os.ReadFile(filepath.Join(tr.root, markerName))
	if errors.Is(err, os.ErrNotExist) {
		_ = os.RemoveAll(filepath.Join(tr.root, backupName))
		return nil
	}
	if err == nil {
		fmt.Fprintf(log, "kbuild: reverting a patch left applied in %s\n", tr.Dir)
		err = tr.restore(data)
	}
	if err != nil {
		fmt.Fprintf(log, "kbuild: cannot revert (%v); discarding the tree\n", err)
		if rerr := os.RemoveAll(tr.root); rerr != nil {
			return fmt.Errorf("discard damaged kernel tree %s: %w; remove it by hand", tr.root, rerr)
		}
	}
	return nil
}

// revert undoes saveAndMark and the patching that followed it.
func (tr *Tree) revert() error {
	data, err := os.ReadFile(filepath.Join(tr.root, markerName))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("revert patch: %w", err)
	}
	if err := tr.restore(data); err != nil {
		return fmt.Errorf("revert patch in %s: %w", tr.Dir, err)
	}
	return nil
}

func (tr *Tree) restore(data []byte) error {
	var m marker
	if err := json.Unmarshal(data, &m); err != nil {
		return fmt.Errorf("read marker: %w", err)
	}
	backup := filepath.Join(tr.root, backupName)
	for _, rel := range m.Saved {
		if !filepath.IsLocal(rel) {
			return fmt.Errorf("marker names %q outside the tree", rel)
		}
		if err := copyFile(filepath.Join(backup, rel), filepath.Join(tr.Dir, rel)); err != nil {
			return fmt.Errorf("restore %s: %w", rel, err)
		}
	}
	for _, rel := range m.Created {
		if !filepath.IsLocal(rel) {
			return fmt.Errorf("marker names %q outside the tree", rel)
		}
		if err := os.Remove(filepath.Join(tr.Dir, rel)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove %s: %w", rel, err)
		}
	}
	// The marker goes last: until it is gone, the next user reverts again.
	if err := os.Remove(filepath.Join(tr.root, markerName)); err != nil {
		return fmt.Errorf("remove marker: %w", err)
	}
	_ = os.RemoveAll(backup)
	return nil
}

// copyFile copies a regular file with its mode and modification time,
// replacing dst atomically.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", src)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	tmp := dst + ".livefix-tmp"
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, fi.Mode().Perm())
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, fi.Mode().Perm())
	}
	if err == nil {
		err = os.Chtimes(tmp, fi.ModTime(), fi.ModTime())
	}
	if err == nil {
		err = os.Rename(tmp, dst)
	}
	if err != nil {
		_ = os.Remove(tmp)
	}
	return err
}
