package kbuild

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// This file holds the tree as one build sees it. A build that can mount
// overlayfs works in a private view: an overlay whose lower layer is the
// shared prepared tree and whose upper layer is a directory of its own
// under Tree.root/builds, mounted over Tree.Dir itself inside a private
// mount namespace of each command it runs (patch, make, rm). Every path
// the compilers see and record is then the tree's own, and whatever they
// write (objects, .cmd records, kbuild's .tmp files, a patched source)
// lands in the build's upper directory: overlayfs copies a file up before
// the first write, so truncating and rewriting it never reaches the
// shared tree. The mount lives only as long as the command's processes,
// so a killed build leaves no mount behind, only its directory, which
// the next build removes once the build's liveness lock is free.
//
// Without overlayfs (not root, a filesystem it cannot stack on, a
// container without mount rights) a build falls back to the old way:
// it patches the shared tree in place, holding the tree lock for the
// whole build, with the marker and backups that make a crash repairable.

const buildsName = "builds" // in Tree.root: one private view per running build

// view is where one BuildPair (or CompileUnits) reads and writes the tree.
type view struct {
	tr      *Tree
	private bool
	id      string   // private: the build's name under builds/
	dir     string   // private: builds/ID, holding upper/ and work/
	live    *os.File // private: builds/ID.lock, flocked while any process of the build lives
	options string   // private: the overlay's mount options
	mount   string   // private: the program mounting it

	unlockUsers func() // the users lock (shared when private, exclusive in place)
	unlockTree  func() // the tree lock while held, else nil

	touched []string // in place: the files apply may change, backed up before the first apply
	marked  bool     // in place: saveAndMark has run
}

// openView returns the view a build works in: a private overlay view
// when overlayfs can be mounted, else the shared tree itself. It holds
// the users lock and the tree lock on return; a private view's caller
// lets the tree lock go (releaseTree) once it has done the steps that
// need it. touched lists the files an in-place build's patches may
// change. The log line says which way the build goes.
func (tr *Tree) openView(ctx context.Context, touched []string, log io.Writer) (_ *view, err error) {
	v := &view{tr: tr, touched: touched}
	reason := tr.startPrivate(ctx, v, log)
	if reason != "" {
		fmt.Fprintf(log, "kbuild: building in the shared tree %s in place, one build at a time (no private view: %s)\n", tr.Dir, reason)
	}
	defer func() {
		if err != nil {
			_ = v.close()
		}
	}()
	v.unlockUsers, err = tr.acquireUsers(ctx, !v.private, log)
	if err != nil {
		return nil, err
	}
	v.unlockTree, err = tr.acquire(ctx, log)
	if err != nil {
		return nil, err
	}
	if v.private {
		fmt.Fprintf(log, "kbuild: building in a private overlay view of %s (%s)\n", tr.Dir, v.dir)
	}
	return v, nil
}

// startPrivate makes v a private view, or says why it cannot be one.
func (tr *Tree) startPrivate(ctx context.Context, v *view, log io.Writer) string {
	if os.Getenv("LIVEFIX_PRIVATE_TREE") == "0" {
		return "LIVEFIX_PRIVATE_TREE=0"
	}
	if os.Geteuid() != 0 {
		return "mounting overlayfs needs root"
	}
	builds := filepath.Join(tr.root, buildsName)
	if strings.ContainsAny(tr.Dir+builds, ",:\\\"' \t\n") {
		return "the cache path " + tr.root + " has characters overlayfs mount options cannot carry"
	}
	if err := os.MkdirAll(builds, 0o755); err != nil {
		return err.Error()
	}
	tr.cleanBuilds(log)
	live, id, err := newLiveLock(builds)
	if err != nil {
		return err.Error()
	}
	pv := &view{tr: tr, private: true, id: id, dir: filepath.Join(builds, id), live: live, touched: v.touched, mount: "mount"}
	if tr.mountProgram != "" {
		pv.mount = tr.mountProgram
	}
	upper, work := filepath.Join(pv.dir, "upper"), filepath.Join(pv.dir, "work")
	pv.options = "lowerdir=" + tr.Dir + ",upperdir=" + upper + ",workdir=" + work
	fail := func(reason string) string {
		removeBuild(builds, id)
		_ = live.Close()
		return reason
	}
	for _, d := range []string{upper, work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fail(err.Error())
		}
	}
	// Mounting once costs a few milliseconds and says for certain
	// whether this kernel and filesystem stack overlays.
	if out, err := pv.runLabel(ctx, nil, "mount", "true"); err != nil {
		return fail(fmt.Sprintf("overlayfs mount failed: %v:%s", err, tail(out, 3)))
	}
	*v = *pv
	return ""
}

// newLiveLock creates and flocks builds/ID.lock for a new build ID. The
// lock is taken under a temporary name and renamed into place, so that a
// cleaner never sees an unlocked ID.lock of a live build.
func newLiveLock(builds string) (*os.File, string, error) {
	f, err := os.CreateTemp(builds, ".new-*.lock")
	if err != nil {
		return nil, "", err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		_ = os.Remove(f.Name())
		return nil, "", fmt.Errorf("lock private view: %w", err)
	}
	id := strconv.Itoa(os.Getpid()) + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	if err := os.Rename(f.Name(), filepath.Join(builds, id+".lock")); err != nil {
		f.Close()
		_ = os.Remove(f.Name())
		return nil, "", err
	}
	return f, id, nil
}

// cleanBuilds removes the private views of builds that died: those whose
// ID.lock no process holds any more (the build and every compiler it
// started inherit it). A view without a lock file, or a lock file left
// under its temporary name, is removed too once nobody holds it.
func (tr *Tree) cleanBuilds(log io.Writer) {
	builds := filepath.Join(tr.root, buildsName)
	entries, err := os.ReadDir(builds)
	if err != nil {
		return
	}
	locks := map[string]bool{}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".lock") && !strings.HasPrefix(e.Name(), ".new-") {
			locks[strings.TrimSuffix(e.Name(), ".lock")] = true
		}
	}
	for _, e := range entries {
		name := e.Name()
		switch {
		case strings.HasPrefix(name, ".new-"):
			// A build between creating its lock and renaming it has
			// not locked it yet for an instant: only old ones go.
			if info, err := e.Info(); err != nil || time.Since(info.ModTime()) < time.Minute {
				continue
			}
			if f, ok := tryLock(filepath.Join(builds, name)); ok {
				_ = os.Remove(filepath.Join(builds, name))
				f.Close()
			}
		case strings.HasSuffix(name, ".lock"):
			id := strings.TrimSuffix(name, ".lock")
			f, ok := tryLock(filepath.Join(builds, name))
			if !ok {
				continue // a live build
			}
			if _, err := os.Stat(filepath.Join(builds, id)); err == nil {
				fmt.Fprintf(log, "kbuild: removing the private view of a build that died (%s)\n", id)
			}
			removeBuild(builds, id)
			f.Close()
		case e.IsDir() && !locks[name]:
			// No lock file: its build never got one or a cleaner
			// removed the lock but not the whole directory.
			fmt.Fprintf(log, "kbuild: removing the private view %s, which has no lock\n", name)
			_ = os.RemoveAll(filepath.Join(builds, name))
		}
	}
}

// tryLock takes path's flock if nobody holds it.
func tryLock(path string) (*os.File, bool) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, false
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, false
	}
	return f, true
}

// removeBuild removes builds/ID and then builds/ID.lock: the directory
// first, so that a lock file outlives any part of its view.
func removeBuild(builds, id string) {
	if err := os.RemoveAll(filepath.Join(builds, id)); err != nil {
		return
	}
	_ = os.Remove(filepath.Join(builds, id+".lock"))
}

// overlayScript mounts the overlay ($1: options) over the tree ($2) and
// runs the command in it; the cd after the mount is what puts the
// command inside the overlay rather than in the lower directory.
const overlayScript = `"$0" -n -t overlay livefix-build -o "$1" "$2" && cd "$2" && shift 2 && exec "$@"`

// run runs a command in the tree as this build sees it.
func (v *view) run(ctx context.Context, tee io.Writer, name string, args ...string) ([]byte, error) {
	return v.runLabel(ctx, tee, name, name, args...)
}

// runLabel is run naming the command label in errors.
func (v *view) runLabel(ctx context.Context, tee io.Writer, label, name string, args ...string) ([]byte, error) {
	if !v.private {
		return runTee(ctx, v.tr.Dir, tee, name, args...)
	}
	argv := append([]string{"-c", overlayScript, v.mount, v.options, v.tr.Dir, name}, args...)
	return runCmd(ctx, command{dir: "/", tee: tee, name: "sh", args: argv, label: label, newMountNS: true, extra: []*os.File{v.live}})
}

// path is where the Go side reads a file the build wrote (an object, a
// .cmd record): the build's upper directory, or the shared tree in place.
func (v *view) path(rel string) string {
	return filepath.Join(v.base(), rel)
}

// base is the directory path reads below.
func (v *view) base() string {
	if v.private {
		return filepath.Join(v.dir, "upper")
	}
	return v.tr.Dir
}

// writeFile puts a file into the tree as this build sees it. A private
// view's upper directory is written while nothing has it mounted, which
// overlayfs allows.
func (v *view) writeFile(rel string, data []byte) error {
	p := v.path(rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return os.WriteFile(p, data, 0o644)
}

// remove deletes build results from the tree as this build sees it, so
// that make compiles them again; in a private view an rm inside the
// overlay hides a copy the shared tree has too.
func (v *view) remove(ctx context.Context, rels []string) error {
	if !v.private {
		for _, rel := range rels {
			_ = os.Remove(filepath.Join(v.tr.Dir, rel))
		}
		return nil
	}
	if len(rels) == 0 {
		return nil
	}
	out, err := v.run(ctx, nil, "rm", append([]string{"-f", "--"}, rels...)...)
	if err != nil {
		return fmt.Errorf("remove old results: %w:%s", err, tail(out, 4))
	}
	return nil
}

// apply applies patch files in order to the tree as this build sees it,
// with patch -p1: --forward, so an already applied patch is an error
// rather than reversed, and no reject files are left behind. In place,
// the first apply backs up v.touched and writes the marker first; close
// reverts. kind prefixes the log line ("base patch ").
func (v *view) apply(ctx context.Context, patches []string, kind string, log io.Writer) error {
	if len(patches) == 0 {
		return nil
	}
	if !v.private && !v.marked {
		if err := v.tr.saveAndMark(v.touched); err != nil {
			return err
		}
		v.marked = true
	}
	for _, p := range patches {
		out, err := v.run(ctx, nil, "patch", "-p1", "--batch", "--forward", "--no-backup-if-mismatch", "--reject-file=-", "-i", p)
		if err != nil {
			return fmt.Errorf("apply %s: %w:%s", p, err, tail(out, 10))
		}
		fmt.Fprintf(log, "kbuild: applied %s%s\n", kind, p)
	}
	return nil
}

// exists reports whether a file is in the tree as this build sees it: in
// a private view, in the upper directory unless as a whiteout (a character
// device 0/0: deleted in the view), else in the shared tree.
func (v *view) exists(rel string) bool {
	if v.private {
		if fi, err := os.Lstat(filepath.Join(v.base(), rel)); err == nil {
			if fi.Mode()&os.ModeCharDevice != 0 {
				if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Rdev == 0 {
					return false
				}
			}
			return true
		}
	}
	_, err := os.Stat(filepath.Join(v.tr.Dir, rel))
	return err == nil
}

// releaseTree lets the tree lock go: a private view builds without it.
func (v *view) releaseTree() {
	if v.private && v.unlockTree != nil {
		v.unlockTree()
		v.unlockTree = nil
	}
}

// withTree runs f holding the tree lock: at once when v holds it (in
// place), else after taking it for the length of f.
func (v *view) withTree(ctx context.Context, log io.Writer, f func() error) error {
	if v.unlockTree != nil {
		return f()
	}
	unlock, err := v.tr.acquire(ctx, log)
	if err != nil {
		return err
	}
	defer unlock()
	return f()
}

// close ends the view: in place it reverts the patches (the marker goes
// last) and removes results from the shared tree; a private view's
// directory is removed. Then the locks are released.
func (v *view) close(results ...[]buildTarget) error {
	var err error
	if v.private {
		removeBuild(filepath.Join(v.tr.root, buildsName), v.id)
		if v.live != nil {
			_ = v.live.Close()
		}
	} else {
		if v.marked {
			if rerr := v.tr.revert(); rerr != nil {
				err = rerr
			}
		}
		for _, ts := range results {
			v.tr.removeTargets(ts)
		}
	}
	if v.unlockTree != nil {
		v.unlockTree()
		v.unlockTree = nil
	}
	if v.unlockUsers != nil {
		v.unlockUsers()
		v.unlockUsers = nil
	}
	return err
}
