package user

import (
	"bufio"
	"bytes"
	"debug/elf"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/livefix/livefix/elfobj"
	"github.com/livefix/livefix/internal/e2etest"
	"github.com/livefix/livefix/ulp"
)

// debsrcCache is where scripts/setup.sh keeps the source package of the
// installed zlib1g.
const debsrcCache = "/var/cache/livefix/debsrc/zlib"

// debianBuild is the package's own build as livefix-build runs it in its
// copies: dpkg-buildpackage sets up the build environment (dpkg-buildflags,
// build-dependency check, SOURCE_DATE_EPOCH) and calls debian/rules build,
// the step of "dpkg-buildpackage -b" that compiles. The nobiarch profile
// (zlib's own) leaves out the 32-bit packages, which need gcc-multilib.
const debianBuild = "dpkg-buildpackage -b -uc -us -Pnobiarch -T build"

// zlibSource unpacks the cached source package of the installed zlib1g
// into dir and returns the tree and the version.
func zlibSource(t *testing.T, dir string) (string, string) {
	t.Helper()
	fail := t.Skipf
	if os.Getenv("LIVEFIX_REQUIRE_VM") == "1" {
		fail = t.Fatalf
	}
	for _, tool := range []string{"dpkg-source", "dpkg-buildpackage", "dh_strip"} {
		if _, err := exec.LookPath(tool); err != nil {
			fail("%s is required (run scripts/setup.sh): %v", tool, err)
		}
	}
	out, err := exec.Command("dpkg-query", "-W", "-f=${source:Version}", "zlib1g").Output()
	if err != nil {
		fail("dpkg-query zlib1g: %v", err)
	}
	version := strings.TrimSpace(string(out))
	_, upstream, ok := strings.Cut(version, ":")
	if !ok {
		upstream = version
	}
	dsc := filepath.Join(debsrcCache, "zlib_"+upstream+".dsc")
	if _, err := os.Stat(dsc); err != nil {
		fail("the source package of zlib1g %s is not cached (run scripts/setup.sh): %v", version, err)
	}
	tree := filepath.Join(dir, "zlib")
	cmd := exec.Command("dpkg-source", "--no-check", "-x", dsc, tree)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("dpkg-source -x %s: %v\n%s", dsc, err, out)
	}
	return tree, version
}

// zprobe is a running testdata/zlib/zprobe.
type zprobe struct{ *authd }

func startZprobe(t *testing.T, bin string, env []string) *zprobe {
	t.Helper()
	cmd := exec.Command(bin, "4")
	cmd.Env = append(os.Environ(), env...)
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &zprobe{&authd{t: t, cmd: cmd, in: in, rd: bufio.NewReader(out), pid: itoa(cmd.Process.Pid)}}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	if got := p.ask(""); got != "ready" {
		t.Fatalf("zprobe: %q", got)
	}
	return p
}

// libz returns the file the process maps as libz.so.1.
func (p *zprobe) libz() string {
	b, err := os.ReadFile("/proc/" + p.pid + "/maps")
	if err != nil {
		p.t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) == 6 && strings.Contains(filepath.Base(f[5]), "libz.so.1") {
			return f[5]
		}
	}
	p.t.Fatalf("pid %s maps no libz.so.1", p.pid)
	return ""
}

// big is the length the workers ask compressBound about.
const big = math.MaxUint64 - 1000

// wrapped is compressBound(big) as zlib 1.2.13 computes it: the sum wraps.
func wrapped() string {
	var n uint64 = big
	return strconv.FormatUint(n+(n>>12)+(n>>14)+(n>>25)+13, 10)
}

// expect checks the answers of the library as the process runs it: the
// original code, the fixed compressBound (bound) or the fixed compressBound
// and zError (all).
func (p *zprobe) expect(fixBound, fixErr bool) {
	p.t.Helper()
	bound, msg := wrapped(), "[]"
	if fixBound {
		bound = strconv.FormatUint(math.MaxUint64, 10)
	}
	if fixErr {
		msg = "[unknown error]"
	}
	for _, c := range [][2]string{
		{"b " + strconv.FormatUint(big, 10), bound},
		{"b 1000", "1013"},
		{"e -7", msg},
		{"e -3", "[data error]"},
		{"e 2", "[need dictionary]"},
	} {
		if got := p.ask(c[0]); got != c[1] {
			p.t.Fatalf("%q: %s, want %s (fixed compressBound %v, zError %v)", c[0], got, c[1], fixBound, fixErr)
		}
	}
	// The workers' last calls may predate the change; after a few of
	// their 100 µs rounds they have made new ones.
	time.Sleep(20 * time.Millisecond)
	if got, want := p.ask("w"), msg+" "+bound; got != want {
		p.t.Fatalf("workers see %q, want %q", got, want)
	}
	// zlib keeps working in the workers: round trips, none failed.
	r := strings.Fields(p.ask("r"))
	if len(r) != 2 || r[0] == "0" || r[1] != "0" {
		p.t.Fatalf("workers' compress/uncompress round trips and failures: %v", r)
	}
}

// sectionsOf returns the contents of the allocated sections of an ELF
// file (what is loaded into a process), by name.
func sectionsOf(t *testing.T, path string) map[string][]byte {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]byte{}
	for _, s := range f.Sections {
		if s.Flags&elf.SHF_ALLOC == 0 || s.Type == elf.SHT_NOBITS || s.Name == ".note.gnu.build-id" {
			continue
		}
		b, err := s.Data()
		if err != nil {
			t.Fatal(err)
		}
		out[fmt.Sprintf("%s@%#x", s.Name, s.Addr)] = b
	}
	return out
}

// TestDebianZlib covers acceptance item 4 of issue 10: the installed
// zlib1g's Debian source package is built with its own packaging
// (dpkg-buildpackage, into a temporary directory, never installed); a
// threaded program using that library is fixed live with a patch built by
// livefix-build from the package's own build for the stripped library and
// its dh_strip debug file, and unpatched. The rebuilt library's build-id is
// compared with the installed one's: if equal, the same patch is applied to
// a process using the system's copy; if not but the loaded code is the
// same, a patch built for the system's file itself (symbols from .dynsym)
// is; otherwise that build must be refused.
func TestDebianZlib(t *testing.T) {
	require(t)
	work := t.TempDir()
	pristine, version := zlibSource(t, work)
	livefix, livefixBuild := e2etest.Tools(t)
	t.Logf("zlib %s from %s", version, debsrcCache)

	// The package as Debian builds it, in a copy of the unpacked source:
	// its .debs land in pkg/ (never installed), its files under debian/.
	pkg := filepath.Join(work, "pkg")
	os.MkdirAll(pkg, 0o755)
	tree := filepath.Join(pkg, "zlib")
	if out, err := exec.Command("cp", "-a", pristine, tree).CombinedOutput(); err != nil {
		t.Fatalf("copy: %v %s", err, out)
	}
	done := phase()
	cmd := exec.Command("dpkg-buildpackage", "-b", "-uc", "-us", "-Pnobiarch")
	cmd.Dir = tree
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("dpkg-buildpackage -b: %v\n%s", err, tail(out, 40))
	}
	t.Logf("dpkg-buildpackage -b: %s", done())
	libdir := filepath.Join(tree, "debian", "zlib1g", "lib", "x86_64-linux-gnu")
	libs, _ := filepath.Glob(filepath.Join(libdir, "libz.so.1.*"))
	if len(libs) != 1 {
		t.Fatalf("the zlib1g package tree has %v, want one libz.so.1.*", libs)
	}
	lib := libs[0]
	id := buildIDOf(t, lib)
	if out, _ := exec.Command("readelf", "-S", lib).Output(); strings.Contains(string(out), ".symtab") {
		t.Fatalf("dh_strip left a .symtab in %s", lib)
	}
	dbg := filepath.Join(tree, "debian", ".debhelper", "zlib1g", "dbgsym-root", "usr", "lib", "debug", ".build-id", id[:2], id[2:]+".debug")
	if _, err := os.Stat(dbg); err != nil {
		t.Fatalf("dh_strip's debug file: %v", err)
	}
	if debs, _ := filepath.Glob(filepath.Join(pkg, "zlib1g-dbgsym_*.deb")); len(debs) != 1 {
		t.Fatalf("no zlib1g-dbgsym package next to the build: %v", debs)
	}

	// The program, linked against the rebuilt library and run with it.
	bin := filepath.Join(work, "zprobe")
	cc := exec.Command("gcc", "-O2", "-g", "-pthread", "-I", pristine, "-o", bin, filepath.Join("testdata", "zlib", "zprobe.c"), filepath.Join(libdir, "libz.so.1"))
	if out, err := cc.CombinedOutput(); err != nil {
		t.Fatalf("gcc zprobe: %v %s", err, out)
	}
	mk := func(t *testing.T, patch, target string, extra ...string) (string, string, int) {
		t.Helper()
		lfp := filepath.Join(t.TempDir(), strings.TrimSuffix(filepath.Base(patch), ".patch")+".lfp")
		abs, _ := filepath.Abs(filepath.Join("testdata", "zlib", patch))
		args := append([]string{"user", "--src", pristine, "--patch", abs, "--build", debianBuild, "--target-binary", target, "-o", lfp}, extra...)
		done := phase()
		out, rc := run(t, nil, livefixBuild, args...)
		t.Logf("livefix-build for %s: %s", target, done())
		return lfp, out, rc
	}
	cycle := func(t *testing.T, p *zprobe, lfp, name string, fixErr bool) {
		t.Helper()
		p.expect(false, false)
		env := []string{"LIVEFIX_STATE_DIR=" + t.TempDir()}
		if out, rc := run(t, env, livefix, "process", "patch", "--pid", p.pid, lfp); rc != 0 || !strings.Contains(out, "patched with "+name) {
			t.Fatalf("patch: exit %d", rc)
		}
		p.expect(true, fixErr)
		if out, rc := run(t, env, livefix, "process", "list"); rc != 0 || !strings.Contains(out, "compressBound") {
			t.Fatalf("list: exit %d", rc)
		}
		if _, rc := run(t, env, livefix, "process", "unpatch", "--pid", p.pid); rc != 0 {
			t.Fatalf("unpatch: exit %d", rc)
		}
		p.expect(false, false)
	}

	var fix string
	t.Run("rebuilt", func(t *testing.T) {
		lfp, out, rc := mk(t, "zlib-fix.patch", lib, "--debug-file", dbg)
		for _, want := range []string{"compress.c: changed compressBound", "zutil.c: changed zError", "build-id " + id, "symbols from " + dbg} {
			if !strings.Contains(out, want) {
				t.Fatalf("livefix-build: exit %d, no %q in its output", rc, want)
			}
		}
		if rc != 0 {
			t.Fatalf("livefix-build: exit %d", rc)
		}
		// zlib's Makefile compiles zutil.c for libz.a and, with -fPIC, for
		// libz.so, whose z_errmsg access the linker relaxed (the version
		// script makes it local): the -fPIC variant must be the one used.
		if got := gotRelocs(t, lfp, "zutil.c"); got["z_errmsg"] != elf.R_X86_64_REX_GOTPCRELX {
			t.Fatalf("the patch's zutil.c reaches z_errmsg through %v, want the -fPIC variant (R_X86_64_REX_GOTPCRELX)", got["z_errmsg"])
		}
		fix = lfp
		p := startZprobe(t, bin, []string{"LD_LIBRARY_PATH=" + libdir})
		if got, err := filepath.EvalSymlinks(p.libz()); err != nil || got != lib {
			t.Fatalf("zprobe maps %s (%v), want the rebuilt %s", p.libz(), err, lib)
		}
		cycle(t, p, lfp, "zlib-fix", true)
	})
	if fix == "" {
		t.FailNow()
	}

	// The system's own copy.
	sys, err := filepath.EvalSymlinks("/lib/x86_64-linux-gnu/libz.so.1")
	if err != nil {
		t.Fatal(err)
	}
	sysID := buildIDOf(t, sys)
	a, b := sectionsOf(t, lib), sectionsOf(t, sys)
	var differ []string
	for k, v := range a {
		if !bytes.Equal(v, b[k]) {
			differ = append(differ, k)
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			differ = append(differ, k)
		}
	}
	t.Logf("rebuilt %s build-id %s; installed %s build-id %s; loaded sections that differ: %v", lib, id, sys, sysID, differ)
	t.Run("system-copy", func(t *testing.T) {
		p := startZprobe(t, bin, nil)
		if got, err := filepath.EvalSymlinks(p.libz()); err != nil || got != sys {
			t.Fatalf("zprobe without LD_LIBRARY_PATH maps %s (%v), want the system's %s", p.libz(), err, sys)
		}
		switch {
		case sysID == id:
			t.Logf("the rebuild reproduces the installed build-id: the patch for it applies to the system's copy")
			cycle(t, p, fix, "zlib-fix", true)
		case len(differ) == 0:
			// The same code and data, other build-id (the build-id also
			// covers what is not loaded: debug info, .comment). A patch
			// keyed to the system's file, from its .dynsym (no debug file
			// of that build here): zError's fix needs the hidden table
			// z_errmsg, so only compressBound's fix is applied.
			lfp, out, rc := mk(t, "bound.patch", sys)
			if rc != 0 || !strings.Contains(out, "build-id "+sysID) || !strings.Contains(out, "symbols from .dynsym") {
				t.Fatalf("livefix-build for %s: exit %d", sys, rc)
			}
			cycle(t, p, lfp, "bound", false)
		default:
			// Other code: the build must be refused naming the function.
			_, out, rc := mk(t, "bound.patch", sys)
			if rc != 3 || !strings.Contains(out, "compressBound") || !strings.Contains(out, "does not match") {
				t.Fatalf("livefix-build for a %s whose code differs from the rebuild: exit %d, want a refusal naming compressBound", sys, rc)
			}
		}
	})
}

// gotRelocs returns, for the unit of src in the patch file lfp, the type
// of a relocation against each symbol.
func gotRelocs(t *testing.T, lfp, src string) map[string]elf.R_X86_64 {
	t.Helper()
	p, err := ulp.ReadFile(lfp)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]elf.R_X86_64{}
	for _, u := range p.Units {
		if u.Object != src {
			continue
		}
		f, err := elfobj.Read(u.ELF)
		if err != nil {
			t.Fatal(err)
		}
		for _, rs := range f.RelocSections() {
			for _, r := range rs {
				for _, rel := range r.Relocs {
					if rel.Sym != nil {
						out[rel.Sym.Name] = rel.Type
					}
				}
			}
		}
		return out
	}
	t.Fatalf("%s has no unit %s", lfp, src)
	return nil
}

// phase starts timing a step that runs child processes; the function it
// returns says how long the step took and how much CPU its children used
// (user+system, waited-for descendants included), which the load of a
// shared machine does not inflate as it does the wall time.
func phase() func() string {
	cpu := func() time.Duration {
		var ru syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	start, c := time.Now(), cpu()
	return func() string {
		return fmt.Sprintf("%v wall, %v CPU", time.Since(start).Round(time.Millisecond), (cpu() - c).Round(time.Millisecond))
	}
}

// tail returns the last n lines of out.
func tail(out []byte, n int) string {
	l := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}
