package elfobj

import (
	"bytes"
	"debug/elf"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/livefix/livefix/internal/kerneltest"
)

// compile builds testdata/NAME.c with gcc and the given flags and returns
// the object's path.
func compile(t testing.TB, name string, flags ...string) string {
	t.Helper()
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Fatalf("gcc is needed to build test objects: %v (run make setup)", err)
	}
	out := filepath.Join(t.TempDir(), name+".o")
	args := append([]string{"-c", "-o", out, filepath.Join("testdata", name+".c")}, flags...)
	if b, err := exec.Command("gcc", args...).CombinedOutput(); err != nil {
		t.Fatalf("gcc %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	return out
}

var flagSets = []struct {
	name  string
	flags []string
}{
	{"kernel-like", []string{"-O2", "-ffunction-sections", "-fdata-sections", "-fno-pic", "-pg", "-mfentry", "-fno-asynchronous-unwind-tables"}},
	{"debug-eh", []string{"-O2", "-g", "-ffunction-sections", "-fdata-sections"}},
	{"pic", []string{"-O1", "-fPIC", "-ffunction-sections", "-fcf-protection"}},
	{"plain-O0", []string{"-O0"}},
}

// offsetRE matches the file offsets readelf prints; a rewritten object
// may lay sections out at other offsets, which is not a difference.
var offsetRE = regexp.MustCompile(`at offset 0x[0-9a-f]+`)

func readelfSections(t *testing.T, path string) string {
	t.Helper()
	b, err := exec.Command("readelf", "-SW", path).CombinedOutput()
	if err != nil {
		t.Fatalf("readelf -S %s: %v\n%s", path, err, b)
	}
	// Keep name, type, address, size, entsize, flags, link, info, align;
	// drop the offset column and the header lines that mention offsets.
	var out []string
	re := regexp.MustCompile(`^\s*\[\s*(\d+)\]\s+(\S*)\s+(\S+)\s+([0-9a-f]+)\s+[0-9a-f]+\s+(.*)$`)
	for _, l := range strings.Split(string(b), "\n") {
		if m := re.FindStringSubmatch(l); m != nil {
			out = append(out, strings.Join(m[1:], " "))
		}
	}
	return strings.Join(out, "\n")
}

func tool(t *testing.T, path, name string, args ...string) string {
	t.Helper()
	b, err := exec.Command(name, append(args, path)...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v %s: %v\n%s", name, args, path, err, b)
	}
	s := strings.ReplaceAll(string(b), path, "OBJ")
	return offsetRE.ReplaceAllString(s, "at offset X")
}

func TestRoundTrip(t *testing.T) {
	for _, fs := range flagSets {
		t.Run(fs.name, func(t *testing.T) {
			checkRoundTrip(t, compile(t, "sample", fs.flags...))
		})
	}
}

// TestRoundTripKernelModules round-trips modules of the packaged Debian
// kernel: relocatable objects with every kernel special section.
func TestRoundTripKernelModules(t *testing.T) {
	tgt := kerneltest.RequireTarget(t)
	var mods []string
	filepath.WalkDir(filepath.Join("/lib/modules", tgt.Release, "kernel"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(p, ".ko") {
			mods = append(mods, p)
		}
		return nil
	})
	if len(mods) == 0 {
		t.Fatalf("no uncompressed modules under /lib/modules/%s/kernel", tgt.Release)
	}
	slices.Sort(mods)
	// A spread of about a dozen modules across the tree, and the largest
	// of them, whatever it is, for sections at scale.
	pick := []string{}
	for i := 0; i < len(mods); i += max(1, len(mods)/12) {
		pick = append(pick, mods[i])
	}
	largest, size := "", int64(0)
	for _, m := range mods {
		if st, err := os.Stat(m); err == nil && st.Size() > size {
			largest, size = m, st.Size()
		}
	}
	pick = append(pick, largest)
	for _, m := range pick {
		t.Run(filepath.Base(m), func(t *testing.T) { checkRoundTrip(t, m) })
	}
}

// checkRoundTrip reads and writes an object and compares what readelf and
// objdump show of both; a second round trip must be byte-identical.
func checkRoundTrip(t *testing.T, orig string) {
	t.Helper()
	f, err := Open(orig)
	if err != nil {
		t.Fatal(err)
	}
	data, err := f.Write()
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "out.o")
	if err := os.WriteFile(out, data, 0o644); err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		what string
		get  func(string) string
	}{
		{"readelf -S", func(p string) string { return readelfSections(t, p) }},
		{"readelf -s", func(p string) string { return tool(t, p, "readelf", "-sW") }},
		{"readelf -r", func(p string) string { return tool(t, p, "readelf", "-rW") }},
		{"readelf -g", func(p string) string { return tool(t, p, "readelf", "-gW") }},
		{"objdump -dr", func(p string) string { return tool(t, p, "objdump", "-drw") }},
		{"objdump -s", func(p string) string { return tool(t, p, "objdump", "-s") }},
	}
	for _, c := range checks {
		if a, b := c.get(orig), c.get(out); a != b {
			t.Errorf("%s differs after round trip:\n%s", c.what, firstDiff(a, b))
		}
	}
	g, err := Read(data)
	if err != nil {
		t.Fatalf("re-read: %v", err)
	}
	data2, err := g.Write()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(data, data2) {
		t.Errorf("second round trip changed the bytes")
	}
	ef, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("debug/elf rejects the output: %v", err)
	}
	if _, err := ef.Symbols(); err != nil {
		t.Errorf("debug/elf symbols: %v", err)
	}
}

func firstDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := 0; i < len(al) || i < len(bl); i++ {
		var x, y string
		if i < len(al) {
			x = al[i]
		}
		if i < len(bl) {
			y = bl[i]
		}
		if x != y {
			return "line " + strconv.Itoa(i+1) + ":\n- " + x + "\n+ " + y
		}
	}
	return "(lengths differ)"
}

func TestReadErrors(t *testing.T) {
	obj, err := os.ReadFile(compile(t, "sample", "-O2", "-ffunction-sections"))
	if err != nil {
		t.Fatal(err)
	}
	mutate := func(f func([]byte) []byte) []byte { return f(bytes.Clone(obj)) }
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "shorter than an ELF header"},
		{"short header", obj[:40], "shorter than an ELF header"},
		{"not elf", []byte(strings.Repeat("x", 100)), "no ELF magic"},
		{"truncated", obj[:len(obj)/2], "truncated"},
		{"32-bit", mutate(func(b []byte) []byte { b[elf.EI_CLASS] = byte(elf.ELFCLASS32); return b }), "ELFCLASS64"},
		{"executable", mutate(func(b []byte) []byte { le.PutUint16(b[16:], uint16(elf.ET_EXEC)); return b }), "want ET_REL"},
		{"arm64", mutate(func(b []byte) []byte { le.PutUint16(b[18:], uint16(elf.EM_AARCH64)); return b }), "EM_X86_64"},
		{"bad shstrndx", mutate(func(b []byte) []byte { le.PutUint16(b[62:], 9999); return b }), "out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Read(tt.data)
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, ErrFormat) {
				t.Errorf("error %v does not wrap ErrFormat", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not mention %q", err, tt.want)
			}
		})
	}
}
