package packaging

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"time"
)

// debVersionRE is what a Debian version without epoch or revision may
// hold (deb-version(7)): it starts with a digit.
var debVersionRE = regexp.MustCompile(`^[0-9][A-Za-z0-9.+~]*$`)

// CheckVersion reports whether v can be a (native) Debian package version.
func CheckVersion(v string) error {
	if !debVersionRE.MatchString(v) {
		return fmt.Errorf("version %q: a Debian version starts with a digit and holds only letters, digits and . + ~ (e.g. 1.2.3 or 0.0.0+git20261201.abc1234)", v)
	}
	return nil
}

// Commit is the source the packages are built from.
type Commit struct {
	Hash    string    // abbreviated
	Subject string    // first line of its message
	Time    time.Time // commit time: the changelog's date, the files' mtime
	Dirty   bool      // the work tree has uncommitted changes
}

// HeadCommit describes the git commit checked out in repo.
func HeadCommit(ctx context.Context, repo string) (Commit, error) {
	out, err := git(ctx, repo, "log", "-1", "--format=%h%x00%ct%x00%s")
	if err != nil {
		return Commit{}, err
	}
	parts := strings.SplitN(strings.TrimSpace(out), "\x00", 3)
	if len(parts) != 3 {
		return Commit{}, fmt.Errorf("git log in %s: unexpected output %q", repo, out)
	}
	var sec int64
	if _, err := fmt.Sscan(parts[1], &sec); err != nil {
		return Commit{}, fmt.Errorf("git log in %s: commit time %q: %w", repo, parts[1], err)
	}
	status, err := git(ctx, repo, "status", "--porcelain", "--untracked-files=no")
	if err != nil {
		return Commit{}, err
	}
	return Commit{Hash: parts[0], Time: time.Unix(sec, 0).UTC(), Subject: parts[2], Dirty: strings.TrimSpace(status) != ""}, nil
}

// GitVersion derives the package version from git describe: tag v1.2.3
// gives 1.2.3, 4 commits after it 1.2.3+git4.HASH; with no tag,
// 0.0.0+gitYYYYMMDD.HASH from the commit date. Uncommitted changes add
// ".dirty".
func GitVersion(ctx context.Context, repo string, head Commit) (string, error) {
	var v string
	desc, err := git(ctx, repo, "describe", "--tags", "--match", "v[0-9]*", "--long", "--abbrev=7")
	if err == nil {
		// v1.2.3-4-gabc1234
		d := strings.TrimSpace(desc)
		i := strings.LastIndex(d, "-g")
		j := strings.LastIndex(d[:max(i, 0)], "-")
		if i < 0 || j < 0 {
			return "", fmt.Errorf("git describe in %s: unexpected %q", repo, d)
		}
		tag, n, hash := strings.TrimPrefix(d[:j], "v"), d[j+1:i], d[i+2:]
		v = tag
		if n != "0" {
			v += "+git" + n + "." + hash
		}
	} else {
		v = "0.0.0+git" + head.Time.Format("20060102") + "." + head.Hash
	}
	if head.Dirty {
		if strings.Contains(v, "+") {
			v += ".dirty"
		} else {
			v += "+dirty"
		}
	}
	v = strings.ReplaceAll(v, "-", "~")
	if err := CheckVersion(v); err != nil {
		return "", fmt.Errorf("from git describe: %w (set VERSION)", err)
	}
	return v, nil
}

func git(ctx context.Context, repo string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", append([]string{"-C", repo}, args...)...)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("git %s in %s: %w: %s", strings.Join(args, " "), repo, err, strings.TrimSpace(stderr.String()))
	}
	return out.String(), nil
}
