package packaging

import (
	"bytes"
	"compress/gzip"
	"context"
	"embed"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/goreleaser/nfpm/v2"
	"github.com/goreleaser/nfpm/v2/deb"
	"github.com/goreleaser/nfpm/v2/files"

	"github.com/livefix/livefix/internal/clidoc"
)

//go:embed files
var static embed.FS

// Maintainer is the packages' Maintainer field.
const Maintainer = "livefix developers <packaging@livefix.invalid>"

// Homepage is the packages' Homepage field.
const Homepage = "https://github.com/livefix/livefix"

// helperDir is where helper programs go (not on PATH; livefix finds
// livefix-agent there).
const helperDir = "/usr/lib/livefix"

// unitDir is where Debian 12 packages install systemd units.
const unitDir = "/lib/systemd/system"

// pkg describes one binary package.
type pkg struct {
	name       string
	dir        string // where the program goes: /usr/bin or /usr/sbin
	section    string // its man page's section
	summary    string // the NAME line and the control file's short description
	long       string // the control file's long description
	seeAlso    []string
	files      []clidoc.File // the man page's FILES section
	depends    []string
	recommends []string
	suggests   []string
	units      []string
	// helpers are programs (cmd/NAME) the package installs in
	// helperDir, for the program to run (livefix runs livefix-agent).
	helpers   []string
	conffiles map[string]string // files/NAME -> destination
	scripts   bool              // files/NAME.{postinst,prerm,postrm}
}

var packages = []pkg{
	{
		name: "livefix", dir: "/usr/sbin", section: "8",
		summary: "rebootless Linux patching: applies kernel and process live patches",
		long: `livefix loads, levels up, rolls back and re-applies kernel live patches
(Linux livepatch modules built by livefix-build) and patches running
processes and shared libraries through ptrace. The applied kernel patch
level is recorded in /var/lib/livefix and re-applied early at boot by
livefix.service; livefix-agent.service fetches new patches from a signed
livefix-server repository.`,
		seeAlso: []string{"livefix-build(1)", "livefix-server(8)", "systemctl(1)"},
		files: []clidoc.File{
			{Path: "/etc/livefix/livefix.conf", Desc: "configuration (TOML); enabled = false turns the boot re-apply off"},
			{Path: "/var/lib/livefix", Desc: "the recorded kernel patch levels and their module copies (removed by dpkg --purge)"},
			{Path: "/lib/systemd/system/livefix.service", Desc: "runs livefix boot early at boot, before the network is configured"},
			{Path: "/usr/lib/livefix/livefix-agent", Desc: "runs livefix register, update and daemon (livefix execs it)"},
			{Path: "/lib/systemd/system/livefix-agent.service", Desc: "runs livefix daemon (/usr/lib/livefix/livefix-agent daemon); enable it after livefix register"},
		},
		units:     []string{"livefix.service", "livefix-agent.service"},
		helpers:   []string{"livefix-agent"},
		conffiles: map[string]string{"livefix.conf": "/etc/livefix/livefix.conf"},
		scripts:   true,
	},
	{
		name: "livefix-build", dir: "/usr/bin", section: "1",
		summary: "builds kernel and userspace live patches from source patches",
		long: `livefix-build turns a source patch into a live patch: it compiles only
the touched files before and after the patch, diffs the objects function
by function and emits a Linux livepatch module for the installed Debian
kernel, or a patch file for running programs and shared libraries keyed
by GNU build-id.`,
		seeAlso: []string{"livefix(8)"},
		// What `livefix-build kernel` and `user` run: the compiler and
		// kbuild's tools, the kernel source tarball and headers it
		// builds against, the kernel image and config it reads, patch,
		// xz to unpack the source (tar is essential).
		depends: []string{
			"gcc", "make", "binutils", "libc6-dev", "patch", "xz-utils",
			"flex", "bison", "bc", "libelf-dev", "libssl-dev", "dwarves",
			"linux-source-6.1 | linux-source", "linux-headers-amd64", "linux-image-amd64",
		},
		// qemu and busybox boot the target kernel once to read its
		// symbols when its System.map is Debian's placeholder and the
		// host runs another kernel; rsync copies a source directory;
		// zstd reads .ko.zst modules.
		recommends: []string{"qemu-system-x86", "busybox-static", "rsync"},
		suggests:   []string{"zstd"},
	},
	{
		name: "livefix-server", dir: "/usr/sbin", section: "8",
		summary: "live patch repository and fleet server for livefix hosts",
		long: `livefix-server keeps a signed static repository (The Update Framework) of
kernel and userspace live patches with test and stable feeds, receives
the check-ins of livefix hosts and shows the fleet on a dashboard.
livefix-server.service runs it with its data in /var/lib/livefix-server.`,
		seeAlso: []string{"livefix(8)", "livefix-build(1)"},
		files: []clidoc.File{
			{Path: "/var/lib/livefix-server", Desc: "the service's data: keys, repository, database (kept by dpkg --purge)"},
			{Path: "/lib/systemd/system/livefix-server.service", Desc: "runs livefix-server serve --data /var/lib/livefix-server as a dynamic user"},
		},
		units:   []string{"livefix-server.service"},
		scripts: true,
	},
}

// Options says what Build builds.
type Options struct {
	Repo    string    // the module's root directory (holds go.mod and cmd/)
	Out     string    // where the .deb files go (created)
	Version string    // empty: from git (GitVersion)
	Log     io.Writer // progress; nil: discarded
}

// Result is one built package.
type Result struct {
	Name    string
	Path    string
	Version string
	Binary  string // the built program inside the staging tree, before packaging
	Size    int64  // the program's size in bytes
}

// Build compiles the programs and writes one .deb per package into
// opts.Out.
func Build(ctx context.Context, opts Options) ([]Result, error) {
	log := opts.Log
	if log == nil {
		log = io.Discard
	}
	repo, err := filepath.Abs(opts.Repo)
	if err != nil {
		return nil, err
	}
	head, err := HeadCommit(ctx, repo)
	if err != nil {
		return nil, fmt.Errorf("package: %w", err)
	}
	version := opts.Version
	if version == "" {
		if version, err = GitVersion(ctx, repo, head); err != nil {
			return nil, fmt.Errorf("package: %w", err)
		}
	} else if err := CheckVersion(version); err != nil {
		return nil, fmt.Errorf("package: %w", err)
	}
	if err := os.MkdirAll(opts.Out, 0o755); err != nil {
		return nil, fmt.Errorf("package: %w", err)
	}
	stage, err := os.MkdirTemp("", "livefix-deb-")
	if err != nil {
		return nil, fmt.Errorf("package: %w", err)
	}
	defer os.RemoveAll(stage)

	fmt.Fprintf(log, "deb: building the programs, version %s\n", version)
	bin := filepath.Join(stage, "bin")
	if err := buildPrograms(ctx, repo, bin, version); err != nil {
		return nil, err
	}
	mtime := head.Time
	if epoch := os.Getenv("SOURCE_DATE_EPOCH"); epoch != "" {
		var sec int64
		if _, err := fmt.Sscan(epoch, &sec); err != nil {
			return nil, fmt.Errorf("package: SOURCE_DATE_EPOCH %q is not a number of seconds", epoch)
		}
		mtime = time.Unix(sec, 0).UTC()
	}
	var out []Result
	for _, p := range packages {
		res, err := buildPackage(ctx, log, p, stage, opts.Out, version, head, mtime)
		if err != nil {
			return nil, fmt.Errorf("package %s: %w", p.name, err)
		}
		fmt.Fprintf(log, "deb: %s (%s: %.1f MB)\n", res.Path, p.name, float64(res.Size)/1e6)
		out = append(out, res)
	}
	return out, nil
}

// buildPrograms compiles every package's program, statically, with the
// version stamped into main.version and the symbol table left out.
func buildPrograms(ctx context.Context, repo, bin, version string) error {
	args := []string{"build", "-trimpath", "-ldflags", "-s -w -X main.version=" + version, "-o", bin + "/"}
	for _, p := range packages {
		args = append(args, "./cmd/"+p.name)
		for _, h := range p.helpers {
			args = append(args, "./cmd/"+h)
		}
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("package: go %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return nil
}

func buildPackage(ctx context.Context, log io.Writer, p pkg, stage, outDir, version string, head Commit, mtime time.Time) (Result, error) {
	binary := filepath.Join(stage, "bin", p.name)
	st, err := os.Stat(binary)
	if err != nil {
		return Result{}, err
	}
	dir := filepath.Join(stage, p.name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Result{}, err
	}
	doc := "/usr/share/doc/" + p.name
	var contents files.Contents
	add := func(src, dst, typ string, mode os.FileMode) {
		contents = append(contents, &files.Content{
			Source: src, Destination: dst, Type: typ,
			FileInfo: &files.ContentFileInfo{Mode: mode, MTime: mtime, Owner: "root", Group: "root"},
		})
	}
	write := func(name string, data []byte) (string, error) {
		path := filepath.Join(dir, name)
		return path, os.WriteFile(path, data, 0o644)
	}

	add(binary, p.dir+"/"+p.name, files.TypeFile, 0o755)
	var helpers []string
	for _, h := range p.helpers {
		hb := filepath.Join(stage, "bin", h)
		helpers = append(helpers, hb)
		add(hb, helperDir+"/"+h, files.TypeFile, 0o755)
	}

	// Man page and completion from the program's own help (with its
	// helpers beside it: livefix's agent commands are livefix-agent's).
	help, cleanup, err := clidoc.ExecHelp(binary, 10*time.Second, helpers...)
	if err != nil {
		return Result{}, err
	}
	defer cleanup()
	root, err := clidoc.Walk(ctx, p.name, help)
	if err != nil {
		return Result{}, fmt.Errorf("read the command tree: %w", err)
	}
	for _, c := range root.All() {
		if !c.OwnHelp {
			fmt.Fprintf(log, "deb: note: %q prints no usage for --help (run as nobody); its man page entry is its parent's one line\n", c.Name())
		}
	}
	var man bytes.Buffer
	if err := clidoc.WriteMan(&man, root, clidoc.Page{
		Section: p.section, Date: mtime.Format("2006-01-02"), Source: p.name + " " + version,
		Manual: "livefix manual", Summary: p.summary, Files: p.files, SeeAlso: p.seeAlso,
	}); err != nil {
		return Result{}, err
	}
	gz, err := gzipBest(man.Bytes())
	if err != nil {
		return Result{}, err
	}
	path, err := write(p.name+"."+p.section+".gz", gz)
	if err != nil {
		return Result{}, err
	}
	add(path, fmt.Sprintf("/usr/share/man/man%s/%s.%s.gz", p.section, p.name, p.section), files.TypeFile, 0o644)

	var comp bytes.Buffer
	if err := clidoc.WriteBash(&comp, root); err != nil {
		return Result{}, err
	}
	if path, err = write(p.name+".bash", comp.Bytes()); err != nil {
		return Result{}, err
	}
	add(path, "/usr/share/bash-completion/completions/"+p.name, files.TypeFile, 0o644)

	// Debian's documentation: copyright and changelog.
	cr, err := copyright(ctx, binary, helpers...)
	if err != nil {
		return Result{}, err
	}
	if path, err = write("copyright", cr); err != nil {
		return Result{}, err
	}
	add(path, doc+"/copyright", files.TypeFile, 0o644)
	if gz, err = gzipBest(changelog(p.name, version, head)); err != nil {
		return Result{}, err
	}
	if path, err = write("changelog.gz", gz); err != nil {
		return Result{}, err
	}
	add(path, doc+"/changelog.gz", files.TypeFile, 0o644)

	// Units, conffiles, lintian overrides from files/.
	for _, u := range p.units {
		if path, err = copyStatic(dir, u); err != nil {
			return Result{}, err
		}
		add(path, unitDir+"/"+u, files.TypeFile, 0o644)
	}
	for src, dst := range p.conffiles {
		if path, err = copyStatic(dir, src); err != nil {
			return Result{}, err
		}
		add(path, dst, files.TypeConfig, 0o644)
	}
	if _, err := static.ReadFile("files/" + p.name + ".lintian-overrides"); err == nil {
		if path, err = copyStatic(dir, p.name+".lintian-overrides"); err != nil {
			return Result{}, err
		}
		add(path, "/usr/share/lintian/overrides/"+p.name, files.TypeFile, 0o644)
	}
	var scripts nfpm.Scripts
	if p.scripts {
		for _, s := range []struct {
			suffix string
			dst    *string
		}{{"postinst", &scripts.PostInstall}, {"prerm", &scripts.PreRemove}, {"postrm", &scripts.PostRemove}} {
			if *s.dst, err = copyStatic(dir, p.name+"."+s.suffix); err != nil {
				return Result{}, err
			}
		}
	}

	info := &nfpm.Info{
		Name:          p.name,
		Arch:          "amd64",
		Platform:      "linux",
		Version:       version,
		VersionSchema: "none",
		Section:       "admin",
		Priority:      "optional",
		Maintainer:    Maintainer,
		Homepage:      Homepage,
		Description:   p.summary + "\n" + p.long,
		MTime:         mtime,
		Overridables: nfpm.Overridables{
			Depends:    p.depends,
			Recommends: p.recommends,
			Suggests:   p.suggests,
			Contents:   contents,
			Scripts:    scripts,
			Umask:      0o022,
			Deb:        nfpm.Deb{Compression: "xz"},
		},
	}
	info = nfpm.WithDefaults(info)
	if err := nfpm.PrepareForPackager(info, "deb"); err != nil {
		return Result{}, err
	}
	target := filepath.Join(outDir, deb.Default.ConventionalFileName(info))
	f, err := os.Create(target + ".tmp")
	if err != nil {
		return Result{}, err
	}
	if err := deb.Default.Package(info, f); err != nil {
		f.Close()
		os.Remove(f.Name())
		return Result{}, err
	}
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return Result{}, err
	}
	if err := os.Rename(f.Name(), target); err != nil {
		return Result{}, err
	}
	return Result{Name: p.name, Path: target, Version: version, Binary: binary, Size: st.Size()}, nil
}

// copyStatic writes files/NAME into dir and returns its path.
func copyStatic(dir, name string) (string, error) {
	data, err := static.ReadFile("files/" + name)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, name)
	return path, os.WriteFile(path, data, 0o644)
}

// gzipBest compresses like gzip -9n: best compression, no name or time
// in the header (reproducible; lintian checks for maximum compression).
func gzipBest(data []byte) ([]byte, error) {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(data); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
