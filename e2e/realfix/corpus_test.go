package realfix_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/livefix/livefix/internal/kbuild"
	"github.com/livefix/livefix/internal/kerneltest"
)

var update = flag.Bool("update", false, "regenerate testdata/corpus.json (TestCorpus) and testdata/outcomes.golden (TestRealFixes)")

// The corpus rule's parameters. The rule itself is corpusRule; its text
// is stored with the selection.
const (
	oldVersion      = "6.1.190-1" // upstream 6.1.191 and 6.1.192 lie between it and the packaged tree
	debianVersion   = "6.1.192-1" // Debian's own security fixes lie between it and the packaged tree
	packagedVersion = "6.1.192-3" // the running kernel's source, /usr/src/linux-source-6.1.tar.xz
	corpusSize      = 36
	maxChangedLines = 40
	corpusFile      = "testdata/corpus.json"
	srcPrefix       = "linux-source-6.1/"
)

const corpusRule = `1. Debian fixes: every .c file that differs between linux-source-6.1 6.1.192-1 and the packaged 6.1.192-3, in path order, taken as they are.
2. Stable fixes: every other .c file present in both 6.1.190-1 and 6.1.192-3 whose contents differ, ordered by the sha256 (hex) of its path.
3. In that order a stable candidate is kept, until the corpus has 36 fixes, when
   a. this kernel configuration compiles it, for vmlinux or a module (kbuild's object lists: internal/kbuild Tree.CompiledUnits);
   b. diff -u of the two files changes at most 40 lines (added plus removed): small per-file diffs over two stable releases are almost always one commit;
   c. the old file compiles in the 6.1.192-3 tree (kbuild BuildPair with the packaged file before and the old file after): a fix that also changed a header cannot be reversed alone.
   Otherwise it is recorded as skipped with the first failed condition.
The rule never looks at what livefix makes of a fix.`

// Corpus is testdata/corpus.json: the selection and how it was made.
type Corpus struct {
	Rule            string `json:"rule"`
	OldVersion      string `json:"old_version"`
	DebianVersion   string `json:"debian_version"`
	PackagedVersion string `json:"packaged_version"`
	Size            int    `json:"size"`
	MaxChangedLines int    `json:"max_changed_lines"`
	Fixes           []Fix  `json:"fixes"`
	Skipped         []Skip `json:"skipped"`
}

// Fix is one real fix: the file as the older package has it (From) and as
// the packaged tree has it.
type Fix struct {
	Path      string   `json:"path"`
	Kind      string   `json:"kind"` // "debian" or "stable"
	From      string   `json:"from"` // package version of the old file
	OldSHA256 string   `json:"old_sha256"`
	NewSHA256 string   `json:"new_sha256"`
	Changed   int      `json:"changed_lines"`
	Units     []string `json:"units,omitempty"` // translation units compiled for it, when not the file itself
}

// Skip is a stable candidate the rule passed over, with the condition it
// failed.
type Skip struct {
	Path   string `json:"path"`
	Reason string `json:"reason"`
}

func pathSHA(p string) string {
	s := sha256.Sum256([]byte(p))
	return hex.EncodeToString(s[:])
}

func fileSHA(p string) (string, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return "", err
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:]), nil
}

// tarballOf returns the source tarball of a package version: the cached
// one of scripts/setup.sh, or the installed one for the packaged version.
func tarballOf(tgt kbuild.Target, version string) string {
	if version == packagedVersion {
		return tgt.Source
	}
	return filepath.Join(kbuild.CacheDir(), "realfix", version, "linux-source-6.1.tar.xz")
}

// requireTarballs fails (or skips, when kernel tests are not required)
// unless the older source tarballs are cached.
func requireTarballs(t *testing.T, tgt kbuild.Target) {
	t.Helper()
	for _, v := range []string{oldVersion, debianVersion, packagedVersion} {
		if _, err := os.Stat(tarballOf(tgt, v)); err != nil {
			msg := fmt.Sprintf("linux-source-6.1 %s is not cached (%v); run scripts/setup.sh", v, err)
			if kerneltest.Required() {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
	}
}

// extract unpacks members (tree-relative paths, or tar --wildcards
// patterns when wild) of a version's tarball into dir/VERSION/.
func extract(ctx context.Context, tgt kbuild.Target, version, dir string, members []string, wild bool) (string, error) {
	out := filepath.Join(dir, version)
	if err := os.MkdirAll(out, 0o755); err != nil {
		return "", err
	}
	args := []string{"-xJf", tarballOf(tgt, version), "-C", out, "--strip-components=1"}
	if wild {
		args = append(args, "--wildcards")
	}
	for _, m := range members {
		args = append(args, srcPrefix+m)
	}
	if b, err := exec.CommandContext(ctx, "tar", args...).CombinedOutput(); err != nil {
		return "", fmt.Errorf("extract %s from linux-source-6.1 %s: %w: %s", strings.Join(members, " "), version, err, lastLines(b, 5))
	}
	return out, nil
}

// fixPatch returns diff -u from one file to another, named a/rel and b/rel
// (patch -p1), and the number of changed lines.
func fixPatch(ctx context.Context, rel, from, to string) ([]byte, int, error) {
	out, err := exec.CommandContext(ctx, "diff", "-u", "--label", "a/"+rel, "--label", "b/"+rel, from, to).Output()
	var ee *exec.ExitError
	if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 1) {
		return nil, 0, fmt.Errorf("diff %s: %w", rel, err)
	}
	n := 0
	for _, l := range strings.Split(string(out), "\n") {
		if (strings.HasPrefix(l, "+") && !strings.HasPrefix(l, "+++ ")) || (strings.HasPrefix(l, "-") && !strings.HasPrefix(l, "--- ")) {
			n++
		}
	}
	return out, n, nil
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func loadCorpus(t *testing.T) *Corpus {
	t.Helper()
	data, err := os.ReadFile(corpusFile)
	if err != nil {
		t.Fatalf("%v (regenerate with go test -run TestCorpus -update)", err)
	}
	var c Corpus
	if err := json.Unmarshal(data, &c); err != nil {
		t.Fatalf("%s: %v", corpusFile, err)
	}
	return &c
}

// cFiles lists the .c files under root, tree-relative.
func cFiles(root string) (map[string]bool, error) {
	files := map[string]bool{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(p, ".c") {
			rel, _ := filepath.Rel(root, p)
			files[filepath.ToSlash(rel)] = true
		}
		return nil
	})
	return files, err
}

func sameFile(a, b string) bool {
	x, err1 := os.ReadFile(a)
	y, err2 := os.ReadFile(b)
	return err1 == nil && err2 == nil && bytes.Equal(x, y)
}

// TestCorpus checks testdata/corpus.json against the cached source
// tarballs: the rule's parameters, the order, each fix's digests and
// changed-line count, and that the configuration compiles it. With
// -update it applies the rule from scratch (every .c file of three
// trees, compile checks in the shared kernel tree) and rewrites the file.
func TestCorpus(t *testing.T) {
	tgt := kerneltest.RequireTarget(t)
	requireTarballs(t, tgt)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Minute)
	defer cancel()
	if *update {
		c := selectCorpus(ctx, t, tgt)
		data, err := json.MarshalIndent(c, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(corpusFile, append(data, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s: %d fixes, %d skipped", corpusFile, len(c.Fixes), len(c.Skipped))
	}
	c := loadCorpus(t)
	if c.Rule != corpusRule || c.OldVersion != oldVersion || c.DebianVersion != debianVersion || c.PackagedVersion != packagedVersion ||
		c.Size != corpusSize || c.MaxChangedLines != maxChangedLines {
		t.Fatalf("%s was made by another rule; regenerate it with -update", corpusFile)
	}
	if len(c.Fixes) != corpusSize {
		t.Fatalf("%d fixes, want %d", len(c.Fixes), corpusSize)
	}
	// Order: Debian fixes by path, then stable fixes and skipped
	// candidates interleaved by the sha256 of the path.
	var stable []string
	for i, f := range c.Fixes {
		switch f.Kind {
		case "debian":
			if i > 0 && (c.Fixes[i-1].Kind != "debian" || c.Fixes[i-1].Path >= f.Path) {
				t.Errorf("fix %d %s: Debian fixes come first, in path order", i, f.Path)
			}
		case "stable":
			stable = append(stable, f.Path)
			if f.Changed > maxChangedLines {
				t.Errorf("%s changes %d lines, more than %d", f.Path, f.Changed, maxChangedLines)
			}
		default:
			t.Errorf("%s: kind %q", f.Path, f.Kind)
		}
	}
	all := slices.Clone(stable)
	for _, s := range c.Skipped {
		all = append(all, s.Path)
	}
	if !slices.IsSortedFunc(stable, func(a, b string) int { return strings.Compare(pathSHA(a), pathSHA(b)) }) {
		t.Error("stable fixes are not in sha256(path) order")
	}
	slices.SortFunc(all, func(a, b string) int { return strings.Compare(pathSHA(a), pathSHA(b)) })
	if len(stable) > 0 && all[len(all)-1] != stable[len(stable)-1] && pathSHA(all[len(all)-1]) > pathSHA(stable[len(stable)-1]) {
		t.Errorf("skipped candidate %s comes after the last kept fix", all[len(all)-1])
	}

	// The files themselves: digests and changed lines, from the tarballs.
	dir := t.TempDir()
	srcs := extractCorpus(ctx, t, tgt, c.Fixes, dir)
	tr, err := kbuild.Prepare(ctx, tgt, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range c.Fixes {
		s := srcs[f.Path]
		_, n, err := fixPatch(ctx, f.Path, s.old, s.new)
		if err != nil {
			t.Fatal(err)
		}
		if n != f.Changed {
			t.Errorf("%s: %d changed lines, corpus says %d", f.Path, n, f.Changed)
		}
		units, err := tr.CompiledUnits(ctx, f.Path)
		if err != nil {
			t.Fatal(err)
		}
		if len(units) == 0 {
			t.Errorf("%s: this configuration does not compile it", f.Path)
		}
	}
}

type fixSources struct{ old, new string }

// extractVersions runs extract for every version at once (each tarball
// decompresses on its own core) and returns the source root per version.
func extractVersions(ctx context.Context, tgt kbuild.Target, dir string, members map[string][]string, wild bool) (map[string]string, error) {
	roots := map[string]string{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, len(members))
	for v, m := range members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			root, err := extract(ctx, tgt, v, dir, m, wild)
			if err != nil {
				errs <- err
				return
			}
			mu.Lock()
			roots[v] = root
			mu.Unlock()
		}()
	}
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return roots, errors.Join(all...)
}

// extractCorpus unpacks each fix's old and new file into dir and checks
// their digests against the corpus.
func extractCorpus(ctx context.Context, t *testing.T, tgt kbuild.Target, fixes []Fix, dir string) map[string]fixSources {
	t.Helper()
	byVersion := map[string][]string{}
	for _, f := range fixes {
		byVersion[f.From] = append(byVersion[f.From], f.Path)
		byVersion[packagedVersion] = append(byVersion[packagedVersion], f.Path)
	}
	roots, err := extractVersions(ctx, tgt, dir, byVersion, false)
	if err != nil {
		t.Fatal(err)
	}
	srcs := map[string]fixSources{}
	for _, f := range fixes {
		s := fixSources{old: filepath.Join(roots[f.From], f.Path), new: filepath.Join(roots[packagedVersion], f.Path)}
		for _, c := range []struct{ path, want, what string }{{s.old, f.OldSHA256, f.From}, {s.new, f.NewSHA256, packagedVersion}} {
			got, err := fileSHA(c.path)
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Errorf("%s of %s has sha256 %s, corpus says %s (another package build?)", f.Path, c.what, got, c.want)
			}
		}
		srcs[f.Path] = s
	}
	if t.Failed() {
		t.FailNow()
	}
	return srcs
}

// selectCorpus applies corpusRule.
func selectCorpus(ctx context.Context, t *testing.T, tgt kbuild.Target) *Corpus {
	t.Helper()
	dir := t.TempDir()
	all := []string{"*.c"}
	roots, err := extractVersions(ctx, tgt, dir, map[string][]string{oldVersion: all, debianVersion: all, packagedVersion: all}, true)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]map[string]bool{}
	for v, r := range roots {
		f, err := cFiles(r)
		if err != nil {
			t.Fatal(err)
		}
		files[v] = f
	}
	c := &Corpus{Rule: corpusRule, OldVersion: oldVersion, DebianVersion: debianVersion, PackagedVersion: packagedVersion,
		Size: corpusSize, MaxChangedLines: maxChangedLines}
	newPath := func(p string) string { return filepath.Join(roots[packagedVersion], p) }
	add := func(p, kind, from string, n int, units []string) {
		oldSum, err1 := fileSHA(filepath.Join(roots[from], p))
		newSum, err2 := fileSHA(newPath(p))
		if err := errors.Join(err1, err2); err != nil {
			t.Fatal(err)
		}
		if len(units) == 1 && units[0] == p {
			units = nil
		}
		c.Fixes = append(c.Fixes, Fix{Path: p, Kind: kind, From: from, OldSHA256: oldSum, NewSHA256: newSum, Changed: n, Units: units})
	}
	debian := map[string]bool{}
	var paths []string
	for p := range files[debianVersion] {
		if files[packagedVersion][p] && !sameFile(filepath.Join(roots[debianVersion], p), newPath(p)) {
			paths = append(paths, p)
		}
	}
	slices.Sort(paths)
	for _, p := range paths {
		_, n, err := fixPatch(ctx, p, filepath.Join(roots[debianVersion], p), newPath(p))
		if err != nil {
			t.Fatal(err)
		}
		debian[p] = true
		add(p, "debian", debianVersion, n, nil)
	}
	var cands []string
	for p := range files[oldVersion] {
		if !debian[p] && files[packagedVersion][p] && !sameFile(filepath.Join(roots[oldVersion], p), newPath(p)) {
			cands = append(cands, p)
		}
	}
	slices.SortFunc(cands, func(a, b string) int { return strings.Compare(pathSHA(a), pathSHA(b)) })
	t.Logf("%d Debian fixes, %d stable candidates", len(paths), len(cands))

	tr, err := kbuild.Prepare(ctx, tgt, nil)
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	checks := loadChecks()
	need := corpusSize - len(c.Fixes)
	// Conditions a and b, evaluated lazily in candidate order.
	type cand struct {
		path, key, skip string
		units           []string
		n               int
	}
	var list []*cand
	next := 0
	eval := func() bool {
		if next == len(cands) {
			return false
		}
		p := cands[next]
		next++
		cd := &cand{path: p}
		list = append(list, cd)
		units, err := tr.CompiledUnits(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		if len(units) == 0 {
			cd.skip = "not compiled by this configuration (kbuild's object lists)"
			return true
		}
		_, n, err := fixPatch(ctx, p, filepath.Join(roots[oldVersion], p), newPath(p))
		if err != nil {
			t.Fatal(err)
		}
		if n > maxChangedLines {
			cd.skip = fmt.Sprintf("diff changes %d lines, more than %d", n, maxChangedLines)
			return true
		}
		oldSum, err1 := fileSHA(filepath.Join(roots[oldVersion], p))
		newSum, err2 := fileSHA(newPath(p))
		if err := errors.Join(err1, err2); err != nil {
			t.Fatal(err)
		}
		cd.units, cd.n, cd.key = units, n, p+" "+oldSum+" "+newSum
		return true
	}
	// Condition c, in batches: the candidates that may still be kept are
	// compile-checked together (one make run per side), failures found
	// from the compiler's messages, the rest confirmed on the next round.
	for {
		kept := 0
		var pending []*cand
		for i := 0; kept+len(pending) < need; i++ {
			if i == len(list) && !eval() {
				break
			}
			cd := list[i]
			if cd.skip != "" {
				continue
			}
			why, ok := checks[cd.key]
			switch {
			case !ok:
				pending = append(pending, cd)
			case why == "":
				kept++
			}
		}
		if len(pending) == 0 {
			break
		}
		if len(pending) > 8 {
			pending = pending[:8]
		}
		compileCheck(ctx, t, tr, work, pending, func(cd *cand) (string, string, string) {
			return cd.path, newPath(cd.path), filepath.Join(roots[oldVersion], cd.path)
		},
			func(cd *cand, why string) { checks[cd.key] = why })
		saveChecks(t, checks)
	}
	for _, cd := range list {
		if len(c.Fixes) == corpusSize {
			break
		}
		if cd.skip != "" {
			c.Skipped = append(c.Skipped, Skip{Path: cd.path, Reason: cd.skip})
			continue
		}
		if why := checks[cd.key]; why != "" {
			c.Skipped = append(c.Skipped, Skip{Path: cd.path, Reason: "the " + oldVersion + " file does not compile in the " + packagedVersion + " tree: " + why})
			continue
		}
		add(cd.path, "stable", oldVersion, cd.n, cd.units)
	}
	if len(c.Fixes) != corpusSize {
		t.Fatalf("only %d fixes satisfy the rule", len(c.Fixes))
	}
	return c
}

// firstError returns the first compiler "error:" line of a build error,
// without the tree's path, or the error's first line.
func firstError(msg string) string {
	for _, l := range strings.Split(msg, "\n") {
		if i := strings.Index(l, "error: "); i >= 0 {
			return strings.TrimSpace(l)
		}
	}
	first, _, _ := strings.Cut(msg, "\n")
	return first
}

// Compile checks are the slow part of the rule (two compiles in the
// shared tree per candidate); their results are cached per file pair, so
// that -update can resume: path, old and new sha256 -> first compile
// error, "" when the old file compiles.
func checksFile() string { return filepath.Join(kbuild.CacheDir(), "realfix", "compile-checks.json") }

func loadChecks() map[string]string {
	m := map[string]string{}
	if data, err := os.ReadFile(checksFile()); err == nil {
		_ = json.Unmarshal(data, &m)
	}
	return m
}

func saveChecks(t *testing.T, m map[string]string) {
	data, err := json.Marshal(m)
	if err == nil {
		err = os.WriteFile(checksFile(), data, 0o644)
	}
	if err != nil {
		t.Logf("cache compile checks: %v", err)
	}
}

// compileCheck builds the packaged and the old file of each candidate in
// one BuildPair (the old files as the patched side) and reports each
// candidate's first compile error, "" when it compiles. A failed batch
// names its failing files in the compiler's messages; they are reported,
// the others are left for the next round. A failure naming none of them
// is checked file by file.
func compileCheck[C any](ctx context.Context, t *testing.T, tr *kbuild.Tree, work string, batch []C, files func(C) (rel, packaged, old string), report func(C, string)) {
	var patches []string
	for i, cd := range batch {
		rel, packaged, old := files(cd)
		rev, _, err := fixPatch(ctx, rel, packaged, old)
		if err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(work, fmt.Sprintf("reverse%d.patch", i))
		if err := os.WriteFile(f, rev, 0o644); err != nil {
			t.Fatal(err)
		}
		patches = append(patches, f)
	}
	start := time.Now()
	_, err := tr.BuildPair(ctx, patches, filepath.Join(work, "objects"), nil)
	t.Logf("compile check of %d files: %.1fs: %v", len(batch), time.Since(start).Seconds(), err)
	if err != nil && ctx.Err() != nil {
		t.Fatal(err)
	}
	if err == nil {
		for _, cd := range batch {
			report(cd, "")
		}
		return
	}
	found := false
	for _, cd := range batch {
		rel, _, _ := files(cd)
		for _, l := range strings.Split(err.Error(), "\n") {
			if l = strings.TrimSpace(l); strings.HasPrefix(l, rel+":") && strings.Contains(l, "error: ") {
				report(cd, l)
				found = true
				break
			}
		}
	}
	if found || len(batch) == 1 {
		if !found {
			report(batch[0], firstError(err.Error()))
		}
		return
	}
	for _, cd := range batch {
		compileCheck(ctx, t, tr, work, []C{cd}, files, report)
	}
}
