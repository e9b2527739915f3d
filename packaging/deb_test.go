package packaging

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/livefix/livefix/internal/clidoc"
)

// testVersion is stamped into the test build, so the tests know what
// --version must print and which file names to expect.
const testVersion = "0.0.0+test1"

var (
	buildOnce sync.Once
	builtDir  string
	built     []Result
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if builtDir != "" {
		os.RemoveAll(builtDir)
	}
	os.Exit(code)
}

// debs builds the packages once for every test of the package, and
// extracts them into one tree.
func debs(t *testing.T) (map[string]Result, string) {
	t.Helper()
	buildOnce.Do(func() {
		builtDir, buildErr = os.MkdirTemp("", "livefix-deb-test-")
		if buildErr != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		built, buildErr = Build(ctx, Options{Repo: "..", Out: filepath.Join(builtDir, "dist"), Version: testVersion})
		if buildErr != nil {
			return
		}
		for _, r := range built {
			if out, err := exec.Command("dpkg-deb", "-x", r.Path, filepath.Join(builtDir, "root")).CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("dpkg-deb -x %s: %v: %s", r.Path, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatalf("build the packages: %v", buildErr)
	}
	m := map[string]Result{}
	for _, r := range built {
		m[r.Name] = r
	}
	return m, filepath.Join(builtDir, "root")
}

func need(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: run `make setup` (scripts/setup.sh installs it)", tool)
		}
	}
}

func TestPackagesContents(t *testing.T) {
	need(t, "dpkg-deb")
	pkgs, _ := debs(t)
	want := map[string][]string{
		"livefix": {
			"./usr/sbin/livefix", "./usr/lib/livefix/livefix-agent", "./lib/systemd/system/livefix.service", "./lib/systemd/system/livefix-agent.service",
			"./etc/livefix/livefix.conf", "./usr/share/man/man8/livefix.8.gz", "./usr/share/bash-completion/completions/livefix",
			"./usr/share/doc/livefix/copyright", "./usr/share/doc/livefix/changelog.gz",
		},
		"livefix-build": {
			"./usr/bin/livefix-build", "./usr/share/man/man1/livefix-build.1.gz", "./usr/share/bash-completion/completions/livefix-build",
			"./usr/share/doc/livefix-build/copyright", "./usr/share/doc/livefix-build/changelog.gz",
		},
		"livefix-server": {
			"./usr/sbin/livefix-server", "./lib/systemd/system/livefix-server.service", "./usr/share/man/man8/livefix-server.8.gz",
			"./usr/share/bash-completion/completions/livefix-server", "./usr/share/doc/livefix-server/copyright",
		},
	}
	for name, files := range want {
		r, ok := pkgs[name]
		if !ok {
			t.Fatalf("no %s package built", name)
		}
		if base := filepath.Base(r.Path); base != name+"_"+testVersion+"_amd64.deb" {
			t.Errorf("%s: file name %s", name, base)
		}
		out, err := exec.Command("dpkg-deb", "-c", r.Path).Output()
		if err != nil {
			t.Fatalf("dpkg-deb -c %s: %v", r.Path, err)
		}
		for _, f := range files {
			if !regexp.MustCompile(`(?m) ` + regexp.QuoteMeta(f) + `$`).Match(out) {
				t.Errorf("%s: %s missing; contents:\n%s", name, f, out)
			}
		}
		ctl, err := exec.Command("dpkg-deb", "-f", r.Path, "Version", "Architecture").Output()
		if err != nil {
			t.Fatal(err)
		}
		if got := string(ctl); got != "Version: "+testVersion+"\nArchitecture: amd64\n" {
			t.Errorf("%s control fields:\n%s", name, got)
		}
	}
	conf, err := exec.Command("dpkg-deb", "--ctrl-tarfile", pkgs["livefix"].Path).Output()
	if err != nil {
		t.Fatal(err)
	}
	tarList, err := runStdin(conf, "tar", "-xO", "./conffiles")
	if err != nil || strings.TrimSpace(tarList) != "/etc/livefix/livefix.conf" {
		t.Errorf("livefix conffiles = %q (%v), want /etc/livefix/livefix.conf", tarList, err)
	}
	deps, err := exec.Command("dpkg-deb", "-f", pkgs["livefix-build"].Path, "Depends").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"gcc", "make", "libelf-dev", "dwarves", "linux-headers-amd64", "linux-source-6.1"} {
		if !strings.Contains(string(deps), d) {
			t.Errorf("livefix-build Depends lacks %s: %s", d, deps)
		}
	}
}

// TestBinarySize holds livefix to the budget (issue 7: at most
// 15 MB).
func TestBinarySize(t *testing.T) {
	pkgs, root := debs(t)
	st, err := os.Stat(filepath.Join(root, "usr/sbin/livefix"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("livefix binary: %d bytes (%.1f MB); livefix-build %.1f MB; livefix-server %.1f MB",
		st.Size(), float64(st.Size())/1e6, float64(pkgs["livefix-build"].Size)/1e6, float64(pkgs["livefix-server"].Size)/1e6)
	if st.Size() > 15e6 {
		t.Errorf("livefix binary is %d bytes, over the 15 MB budget", st.Size())
	}
}

func TestVersion(t *testing.T) {
	_, root := debs(t)
	for _, bin := range []string{"usr/sbin/livefix", "usr/bin/livefix-build", "usr/sbin/livefix-server", "usr/lib/livefix/livefix-agent"} {
		out, err := exec.Command(filepath.Join(root, bin), "--version").CombinedOutput()
		want := filepath.Base(bin) + " " + testVersion + "\n"
		if bin == "usr/lib/livefix/livefix-agent" {
			want = "livefix " + testVersion + "\n" // the agent commands are livefix's
		}
		if err != nil || string(out) != want {
			t.Errorf("%s --version = %q, %v; want %q", bin, out, err, want)
		}
	}
}

// TestLintian: no error and no warning. The packages ship overrides only
// for statically-linked-binary, each with its reason.
func TestLintian(t *testing.T) {
	need(t, "lintian")
	pkgs, _ := debs(t)
	args := []string{"--no-cfg", "--display-level", ">=warning"}
	for _, r := range pkgs {
		args = append(args, r.Path)
	}
	out, err := exec.Command("lintian", args...).CombinedOutput()
	var problems []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "E: ") || strings.HasPrefix(l, "W: ") {
			problems = append(problems, l)
		}
	}
	if len(problems) > 0 {
		t.Errorf("lintian:\n%s", strings.Join(problems, "\n"))
	}
	if err != nil && len(problems) == 0 {
		t.Errorf("lintian failed: %v\n%s", err, out)
	}
}

// TestSystemdVerify runs systemd-analyze verify on every unit, in a root
// that holds the extracted packages (the binaries at their ExecStart
// paths) and this machine's own units (the targets the units order
// against). Any output is a failure: verify reports unknown keys and
// bad values as messages with exit status 0.
func TestSystemdVerify(t *testing.T) {
	need(t, "systemd-analyze")
	_, extracted := debs(t)
	root := t.TempDir()
	if out, err := exec.Command("cp", "-a", extracted+"/.", root).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v: %s", err, out)
	}
	if err := os.MkdirAll(filepath.Join(root, "usr/lib/systemd"), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", "-a", "/usr/lib/systemd/system", filepath.Join(root, "usr/lib/systemd/")).CombinedOutput(); err != nil {
		t.Fatalf("copy the host's units: %v: %s", err, out)
	}
	units, err := filepath.Glob(filepath.Join(root, "lib/systemd/system/livefix*.service"))
	if err != nil || len(units) != 3 {
		t.Fatalf("units in the packages: %v (%v), want 3", units, err)
	}
	verify := func(unit string) (string, error) {
		cmd := exec.Command("systemd-analyze", "verify", "--root="+root, unit)
		// Documentation=man:... must name a page the packages ship.
		cmd.Env = append(os.Environ(), "MANPATH="+filepath.Join(root, "usr/share/man"))
		out, err := cmd.CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	for _, u := range units {
		if out, err := verify(u); err != nil || out != "" {
			t.Errorf("systemd-analyze verify %s: %v\n%s", filepath.Base(u), err, out)
		}
	}

	// The check sees mistakes: a misspelt key, a missing binary, a
	// missing man page.
	good, err := os.ReadFile(filepath.Join(root, "lib/systemd/system/livefix.service"))
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(root, "lib/systemd/system/livefix-broken.service")
	for _, mutate := range []func(string) string{
		func(s string) string { return strings.Replace(s, "RemainAfterExit=", "RemainAfterExi=", 1) },
		func(s string) string {
			return strings.Replace(s, "/usr/sbin/livefix boot", "/usr/sbin/livefix-missing boot", 1)
		},
		func(s string) string { return strings.Replace(s, "man:livefix(8)", "man:livefix-missing(8)", 1) },
	} {
		if err := os.WriteFile(bad, []byte(mutate(string(good))), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := verify(bad); err == nil && out == "" {
			t.Errorf("systemd-analyze verify accepted a broken unit:\n%s", mutate(string(good)))
		}
	}
}

// TestManPages renders each page with man's warnings on and checks that
// it documents every command and option the program's help lists.
func TestManPages(t *testing.T) {
	need(t, "man")
	_, root := debs(t)
	for _, p := range packages {
		page := filepath.Join(root, "usr/share/man/man"+p.section, p.name+"."+p.section+".gz")
		cmd := exec.Command("man", "--warnings", "-E", "UTF-8", "-l", page)
		cmd.Env = append(os.Environ(), "MANWIDTH=100", "MAN_KEEP_FORMATTING=0")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil || stderr.Len() > 0 {
			t.Errorf("man %s: %v\n%s", page, err, stderr.String())
		}
		text := stripOverstrike(stdout.String())
		if strings.Contains(text, "clidoc-") {
			t.Errorf("%s(%s) shows the generator's temporary directory (a flag default taken from the environment?)", p.name, p.section)
		}
		var helpers []string
		for _, h := range p.helpers {
			helpers = append(helpers, filepath.Join(root, helperDir, h))
		}
		help, cleanup, err := clidoc.ExecHelp(filepath.Join(root, p.dir, p.name), 10*time.Second, helpers...)
		if err != nil {
			t.Fatal(err)
		}
		defer cleanup()
		tree, err := clidoc.Walk(context.Background(), p.name, help)
		if err != nil {
			t.Fatal(err)
		}
		if len(tree.Leaves()) < 2 {
			t.Errorf("%s: only %d commands found in its help", p.name, len(tree.Leaves()))
		}
		for _, c := range tree.All() {
			if !strings.Contains(text, c.Name()) {
				t.Errorf("%s(%s) does not mention %q", p.name, p.section, c.Name())
			}
			for _, o := range c.Options {
				if !strings.Contains(text, o.Flag()) {
					t.Errorf("%s(%s) does not document %s of %q", p.name, p.section, o.Flag(), c.Name())
				}
			}
		}
	}
}

var overstrike = regexp.MustCompile(".\b")

func stripOverstrike(s string) string { return overstrike.ReplaceAllString(s, "") }

// TestBashCompletion sources the packaged completion script and asks it
// what it completes.
func TestBashCompletion(t *testing.T) {
	need(t, "bash")
	_, root := debs(t)
	tests := []struct {
		prog  string
		words []string // the last one is being completed
		want  string
	}{
		{"livefix", []string{"livefix", "ker"}, "kernel"},
		{"livefix", []string{"livefix", "kernel", "l"}, "list load"},
		{"livefix", []string{"livefix", "kernel", "load", "--t"}, "--timeout"},
		{"livefix", []string{"livefix", "process", "patch", "--p"}, "--pid"},
		{"livefix", []string{"livefix", "kernel", "load", "x.ko", "--timeout", ""}, ""},
		{"livefix-build", []string{"livefix-build", "kernel", "--pa"}, "--patch"},
		{"livefix-build", []string{"livefix-build", ""}, "diff kernel user"},
		{"livefix-server", []string{"livefix-server", "se"}, "serve"},
	}
	for _, tt := range tests {
		script := filepath.Join(root, "usr/share/bash-completion/completions", tt.prog)
		var words []string
		for _, w := range tt.words {
			words = append(words, "'"+w+"'")
		}
		fn := "_" + strings.ReplaceAll(tt.prog, "-", "_")
		sh := fmt.Sprintf(`source %q; COMP_WORDS=(%s); COMP_CWORD=%d; %s 2>/dev/null; printf '%%s\n' "${COMPREPLY[@]}" | sort | tr '\n' ' '`,
			script, strings.Join(words, " "), len(tt.words)-1, fn)
		out, err := exec.Command("bash", "--norc", "-c", sh).Output()
		if got := strings.TrimSpace(string(out)); err != nil || got != tt.want {
			t.Errorf("%s: complete %q = %q (%v), want %q", tt.prog, strings.Join(tt.words, " "), got, err, tt.want)
		}
	}
}

// TestCopyright checks the copyright file names livefix's license and
// every module linked into livefix.
func TestCopyright(t *testing.T) {
	_, root := debs(t)
	data, err := os.ReadFile(filepath.Join(root, "usr/share/doc/livefix/copyright"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("go", "version", "-m", filepath.Join(root, "usr/sbin/livefix"), filepath.Join(root, "usr/lib/livefix/livefix-agent")).Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) >= 3 && f[0] == "dep" && !strings.Contains(string(data), "Files: vendor/"+f[1]+"/*") {
			t.Errorf("copyright does not name %s", f[1])
		}
	}
	if !strings.Contains(string(data), "/usr/share/common-licenses/GPL-2") {
		t.Error("copyright does not refer to the GPL-2 text")
	}
}

func runStdin(stdin []byte, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	out, err := cmd.Output()
	return string(out), err
}

// TestConffile: the shipped livefix.conf is TOML holding only
// "enabled = true" as a setting.
func TestConffile(t *testing.T) {
	_, root := debs(t)
	var conf struct{ Enabled *bool }
	md, err := toml.DecodeFile(filepath.Join(root, "etc/livefix/livefix.conf"), &conf)
	if err != nil {
		t.Fatal(err)
	}
	if conf.Enabled == nil || !*conf.Enabled {
		t.Errorf("livefix.conf: enabled = %v, want true", conf.Enabled)
	}
	if keys := md.Keys(); len(keys) != 1 {
		t.Errorf("livefix.conf sets %v; livefix rejects unknown keys, so it must hold only enabled", keys)
	}
}

// TestReproducible builds the packages a second time: every byte must
// be the same (mtimes from the commit, no temporary path or build time
// in any file).
func TestReproducible(t *testing.T) {
	first, _ := debs(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	second, err := Build(ctx, Options{Repo: "..", Out: t.TempDir(), Version: testVersion})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range second {
		a, err := os.ReadFile(first[r.Name].Path)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(r.Path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("%s differs between two builds of the same tree", filepath.Base(r.Path))
		}
	}
}
