package klp

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"debug/elf"

	"github.com/livefix/livefix/internal/kbuild"
	"github.com/livefix/livefix/internal/kerneltest"
)

// dbgVmlinux is where scripts/setup.sh extracts the vmlinux of Debian's
// linux-image-RELEASE-dbg.
func dbgVmlinux(release string) string {
	return filepath.Join(kbuild.CacheDir(), "dbg", "vmlinux-"+release)
}

// TestDebianDbgVmlinux checks --vmlinux on the real thing: the vmlinux of
// linux-image-RELEASE-dbg for the packaged kernel. Every duplicate static
// of the running kernel (from its /proc/kallsyms, read in the VM once and
// cached) is resolved by file from the -dbg symbol table, and each position
// must name exactly the kallsyms entry at the same offset from _text: the
// running kernel's own count. And the symbols come from the file alone:
// with no kallsyms cache and an image that could not boot, VmlinuxSymbols
// still answers, so no VM is needed when --vmlinux is given.
func TestDebianDbgVmlinux(t *testing.T) {
	tgt := kerneltest.RequireVM(t)
	dbg := dbgVmlinux(tgt.Release)
	if _, err := os.Stat(dbg); err != nil {
		if kerneltest.Required() {
			t.Fatalf("%v: run scripts/setup.sh (it extracts the -dbg vmlinux)", err)
		}
		t.Skipf("%v: run scripts/setup.sh", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	id, err := VmlinuzBuildID(ctx, tgt.Vmlinuz)
	if err != nil {
		t.Fatal(err)
	}

	// The VM is not needed: no cache, no System.map, an image that
	// cannot boot.
	start := time.Now()
	t.Setenv("LIVEFIX_CACHE", t.TempDir())
	noVM := tgt
	noVM.Vmlinux, noVM.SystemMap, noVM.Vmlinuz = dbg, "", "/nonexistent/vmlinuz"
	var log bytes.Buffer
	syms, err := VmlinuxSymbols(ctx, noVM, id, &log)
	if err != nil {
		t.Fatalf("VmlinuxSymbols with --vmlinux %s: %v", dbg, err)
	}
	t.Logf("read %d symbols from %s in %s", len(syms.Names), dbg, time.Since(start).Round(time.Millisecond))
	if !strings.Contains(log.String(), "from "+dbg) || strings.Contains(log.String(), "qemu") {
		t.Errorf("log = %q, want the symbols from %s and no boot", log.String(), dbg)
	}
	if _, err := VmlinuxFileSymbols(dbg, append([]byte{0}, id[1:]...)); err == nil || !strings.Contains(err.Error(), "another build") {
		t.Errorf("a build-id that does not match: err = %v", err)
	}
	os.Unsetenv("LIVEFIX_CACHE")

	// The running kernel's table, with addresses.
	cache := filepath.Join(kbuild.CacheDir(), "klp", "kallsyms", hex.EncodeToString(id))
	data, err := os.ReadFile(cache)
	if err != nil {
		data, err = bootKallsyms(ctx, tgt)
		if err != nil {
			t.Fatalf("read the running kernel's kallsyms: %v", err)
		}
	}
	kall := parseAddrs(t, bytes.NewReader(data))
	dbgAddr := dbgAddrs(t, dbg)

	kText, dText := kall.addr["_text"], dbgAddr["_text"]
	if len(kText) != 1 || len(dText) != 1 {
		t.Fatalf("_text: %d in kallsyms, %d in the -dbg vmlinux", len(kText), len(dText))
	}
	base := dText[0].addr
	checked, skipped := 0, 0
	for name, addrs := range kall.local {
		if len(syms.byName[name]) < 2 {
			continue
		}
		for k, a := range addrs {
			file, ok := dbgAddr.fileAt(name, a-kText[0]+base)
			if !ok {
				t.Errorf("%s #%d (at _text%+#x in kallsyms) has no static of that name at that offset in the -dbg vmlinux", name, k+1, a-kText[0])
				continue
			}
			pos, err := syms.Sympos(name, true, file, nil)
			if err != nil {
				// Two statics of one name in one file (macro-made):
				// the file does not tell them apart, the verifier
				// does.
				skipped++
				continue
			}
			// kallsyms order: the k-th occurrence of the name.
			if want := kall.order(name, a); pos != want {
				t.Errorf("%s in %s: sympos %d from the -dbg vmlinux, but the running kernel counts it as %d", name, file, pos, want)
			}
			checked++
		}
	}
	t.Logf("%d duplicate statics resolved exactly by file (%d not unique within their file)", checked, skipped)
	if checked < 1000 {
		t.Errorf("only %d duplicate statics checked, want the kernel's thousands", checked)
	}
	if pos, err := syms.Sympos("c_next", true, "consoles.c", nil); err != nil || pos != 2 {
		t.Errorf("c_next of fs/proc/consoles.c: sympos %d, %v; want 2", pos, err)
	}
}

type kallsymsAddrs struct {
	addr  map[string][]uint64 // every symbol
	local map[string][]uint64 // local text and data symbols, in table order
}

// order returns the 1-based position of the symbol at a among those named
// name, in table order.
func (k kallsymsAddrs) order(name string, a uint64) int {
	for i, x := range k.addr[name] {
		if x == a {
			return i + 1
		}
	}
	return 0
}

func parseAddrs(t *testing.T, r io.Reader) kallsymsAddrs {
	t.Helper()
	k := kallsymsAddrs{addr: map[string][]uint64{}, local: map[string][]uint64{}}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 {
			continue // module symbols carry a fourth field
		}
		a, err := strconv.ParseUint(f[0], 16, 64)
		if err != nil {
			continue
		}
		k.addr[f[2]] = append(k.addr[f[2]], a)
		if strings.ContainsAny(f[1], "tdbr") {
			k.local[f[2]] = append(k.local[f[2]], a)
		}
	}
	if len(k.addr) < 1000 {
		t.Fatalf("kallsyms: only %d names", len(k.addr))
	}
	return k
}

type dbgSym struct {
	addr uint64
	file string
}

// dbgAddrs reads the -dbg vmlinux's symbols: each name's addresses, with
// the file of the statics.
func dbgAddrs(t *testing.T, path string) dbgIndex {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	raw, err := f.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	idx := dbgIndex{}
	file := ""
	for _, s := range raw {
		if elf.ST_TYPE(s.Info) == elf.STT_FILE {
			file = s.Name
			continue
		}
		if s.Name == "" {
			continue
		}
		fl := ""
		if elf.ST_BIND(s.Info) == elf.STB_LOCAL {
			fl = file
		}
		idx[s.Name] = append(idx[s.Name], dbgSym{s.Value, fl})
	}
	return idx
}

type dbgIndex map[string][]dbgSym

func (d dbgIndex) fileAt(name string, a uint64) (string, bool) {
	for _, s := range d[name] {
		if s.addr == a && s.file != "" {
			return s.file, true
		}
	}
	return "", false
}
