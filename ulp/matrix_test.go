package ulp_test

import (
	"bytes"
	"debug/elf"
	"path/filepath"
	"strings"
	"testing"

	"github.com/livefix/livefix/ulp"
)

// calcConfig is one way of building testdata/calc.
type calcConfig struct {
	name   string
	make   string
	target string // app or libcalc.so
	cf     bool   // built with -fcf-protection: entries start with endbr64
}

var calcConfigs = []calcConfig{
	{"exe-pie-O0", "make -s PIE=1 OPT=-O0 CF=-fcf-protection=none", "app", false},
	{"exe-pie-O2-cf", "make -s PIE=1 OPT=-O2 CF=-fcf-protection=full", "app", true},
	{"exe-nopie-O0-cf", "make -s PIE=0 OPT=-O0 CF=-fcf-protection=full", "app", true},
	{"exe-nopie-O2", "make -s PIE=0 OPT=-O2 CF=-fcf-protection=none", "app", false},
	{"lib-O0-cf", "make -s OPT=-O0 CF=-fcf-protection=full", "libcalc.so", true},
	{"lib-O2", "make -s OPT=-O2 CF=-fcf-protection=none", "libcalc.so", false},
	{"lib-O2-cf", "make -s OPT=-O2 CF=-fcf-protection=full", "libcalc.so", true},
}

// calcCase is one patch of testdata/calc and how to observe it: after
// the setup commands, query answers before with the original code and
// after with the patched code. Commands are for the executable's copy
// (lower case); the library's copy uses the upper-case command.
type calcCase struct {
	patch         string
	setup         []string
	query         string
	before, after string
	funcs         []string // redirected functions; % stands for app_ or lib_
	// funcsO0, if set, replaces funcs at -O0 (where nothing is inlined).
	funcsO0 []string
}

var calcCases = []calcCase{
	// A new static function called by the changed one.
	{"newfunc", nil, "a 5", "6", "1005", []string{"%answer"}, nil},
	// New static (writable) data read by the changed function.
	{"newdata", nil, "a 5", "6", "16", []string{"%answer"}, nil},
	// strtol, which the original never calls, from libc.
	{"libccall", nil, "a 5", "6", "505", []string{"%answer"}, nil},
	// A static variable of the original, set through original code first:
	// the patch must read the running copy, not a copy of its own.
	{"readstatic", []string{"b 77"}, "a 5", "6", "82", []string{"%answer"}, nil},
	// scale() is inlined into scaled() at -O2 (and a real call at -O0).
	{"inline", []string{"b 0"}, "s 5", "10", "15", []string{"%scaled"}, []string{"scale"}},
	// A thread-local variable of the original.
	{"tls", []string{"t 3"}, "a 5", "6", "3005", []string{"%answer"}, nil},
}

func side(c calcConfig, cmd string) string {
	if c.target == "libcalc.so" {
		return strings.ToUpper(cmd[:1]) + cmd[1:]
	}
	return cmd
}

func TestPatchMatrix(t *testing.T) {
	requireHost(t)
	for _, cfg := range calcConfigs {
		t.Run(cfg.name, func(t *testing.T) {
			outer := t
			work := t.TempDir()
			state := t.TempDir()
			var tg *target
			var origTarget string
			for _, cs := range calcCases {
				t.Run(cs.patch, func(t *testing.T) {
					res := buildPatch(t, testdata(t, "calc"), testdata(t, "patches", cs.patch+".patch"), cfg.make, cfg.target, filepath.Join(work, cs.patch), 1)
					if tg == nil {
						// Every build of the unpatched tree is the same
						// binary; run the first one.
						origTarget = res.OrigTarget
						dir := filepath.Dir(origTarget)
						tg = start(outer, []string{"LD_LIBRARY_PATH=" + dir}, filepath.Join(dir, "app"))
					} else if id := buildID(t, res.OrigTarget); id != res.Patch.Target.BuildID || id != buildID(t, origTarget) {
						t.Fatalf("the unpatched build is not reproducible: %s vs %s", id, buildID(t, origTarget))
					}
					tg.t = t
					var funcs []string
					for _, u := range res.Patch.Units {
						for _, f := range u.Funcs {
							funcs = append(funcs, f.OrigName)
						}
					}
					prefix := map[string]string{"app": "app_", "libcalc.so": "lib_"}[cfg.target]
					names := cs.funcs
					if cs.funcsO0 != nil && strings.Contains(cfg.make, "-O0") {
						names = cs.funcsO0
					}
					want := ""
					for _, f := range names {
						want += strings.ReplaceAll(f, "%", prefix) + " "
					}
					if got := strings.Join(funcs, " ") + " "; got != want {
						t.Fatalf("patch redirects %q, want %q", got, want)
					}
					for _, c := range cs.setup {
						if got := tg.ask(side(cfg, c)); got != "ok" {
							t.Fatalf("%s: %q", c, got)
						}
					}
					q := side(cfg, cs.query)
					if got := tg.ask(q); got != cs.before {
						t.Fatalf("before patching: %s = %s, want %s", q, got, cs.before)
					}
					entry := symAddr(t, tg, origTarget, strings.ReplaceAll(names[0], "%", prefix))
					origBytes := tg.memory(entry, 9)
					// gcc puts endbr64 on global functions under
					// -fcf-protection (not on statics whose address is
					// never taken).
					hasEndbr := bytes.HasPrefix(origBytes, []byte{0xf3, 0x0f, 0x1e, 0xfa})
					if global := strings.Contains(names[0], "%"); hasEndbr != (cfg.cf && global) {
						t.Fatalf("entry of %s: endbr64 present %v, built with cf-protection %v", names[0], hasEndbr, cfg.cf)
					}
					r, err := ulp.Apply(tg.pid, res.Patch, ulp.Options{StateDir: state})
					if err != nil {
						t.Fatalf("apply: %v", err)
					}
					if got := tg.ask(q); got != cs.after {
						t.Fatalf("after patching: %s = %s, want %s", q, got, cs.after)
					}
					patched := tg.memory(entry, 9)
					jmpAt := 0
					if hasEndbr {
						jmpAt = 4
						if !bytes.Equal(patched[:4], origBytes[:4]) {
							t.Fatalf("endbr64 not kept: % x", patched)
						}
					}
					if patched[jmpAt] != 0xe9 {
						t.Fatalf("no jmp at entry+%d: % x", jmpAt, patched)
					}
					recs, err := ulp.List(state)
					if err != nil || len(recs) != 1 || len(recs[0].Patches) != 1 || recs[0].Patches[0].Name != cs.patch {
						t.Fatalf("list: %v %+v", err, recs)
					}
					applied := recs[0].Patches[0]
					if applied.Unmap == 0 || applied.Unmap%4096 != 0 {
						t.Fatalf("no patch here takes the address of its code, yet Unmap is %d", applied.Unmap)
					}
					if _, err := ulp.Unpatch(tg.pid, "", ulp.Options{StateDir: state}); err != nil {
						t.Fatalf("unpatch: %v", err)
					}
					if got := tg.ask(q); got != cs.before {
						t.Fatalf("after unpatching: %s = %s, want %s", q, got, cs.before)
					}
					if got := tg.memory(entry, 9); !bytes.Equal(got, origBytes) {
						t.Fatalf("entry not restored: % x, want % x", got, origBytes)
					}
					if strings.Contains(tg.maps(), hexAddr(r.Region)) {
						t.Fatalf("patch code at %#x still mapped", r.Region)
					}
					// Data and literals the program may point to stay.
					if applied.Unmap < applied.Size && !strings.Contains(tg.maps(), hexAddr(r.Region+applied.Unmap)) {
						t.Fatalf("patch data at %#x unmapped", r.Region+applied.Unmap)
					}
					if recs, _ := ulp.List(state); len(recs) != 0 {
						t.Fatalf("list after unpatch: %+v", recs)
					}
				})
			}
		})
	}
}

func buildID(t testing.TB, path string) string {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := f.Section(".note.gnu.build-id")
	if s == nil {
		t.Fatalf("%s: no build-id", path)
	}
	d, _ := s.Data()
	return hexString(d[16:])
}

// symAddr returns the runtime address of a function of the object at
// path (the executable or libcalc.so) in tg.
func symAddr(t testing.TB, tg *target, path, name string) uint64 {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	syms, err := f.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	var val uint64
	for _, s := range syms {
		if s.Name == name {
			val = s.Value
		}
	}
	if val == 0 {
		t.Fatalf("%s not in %s", name, path)
	}
	if f.Type == elf.ET_EXEC {
		return val
	}
	// Bias: the first mapping of the file (offset 0, vaddr 0).
	for _, l := range strings.Split(tg.maps(), "\n") {
		fs := strings.Fields(l)
		if len(fs) >= 6 && fs[5] == path && fs[2] == "00000000" {
			var start uint64
			for _, c := range strings.Split(fs[0], "-")[0] {
				start = start*16 + uint64(strings.IndexRune("0123456789abcdef", c))
			}
			return start + val
		}
	}
	t.Fatalf("%s not mapped in pid %d", path, tg.pid)
	return 0
}

func hexAddr(a uint64) string {
	return strings.TrimLeft(hexString([]byte{byte(a >> 40), byte(a >> 32), byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)}), "0") + "-"
}

func hexString(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}
