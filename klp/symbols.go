package klp

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/livefix/livefix/buildid"
	"github.com/livefix/livefix/elfobj"
	"github.com/livefix/livefix/internal/kbuild"
	"github.com/livefix/livefix/internal/kernelvm"
)

// Symbols is a patched object's symbol table in the order the kernel's
// livepatch core counts positions (sympos) in: kallsyms order for vmlinux,
// the module's symbol table order for a module.
type Symbols struct {
	Object string // "vmlinux" or a module name
	Names  []string
	Global []bool   // the symbol has global binding (an upper-case nm type)
	File   []string // for modules: the STT_FILE symbol the entry follows ("" if unknown)
	byName map[string][]int
}

func newSymbols(object string) *Symbols { return &Symbols{Object: object, byName: map[string][]int{}} }

func (s *Symbols) add(name string, global bool, file string) {
	s.byName[name] = append(s.byName[name], len(s.Names))
	s.Names = append(s.Names, name)
	s.Global = append(s.Global, global)
	s.File = append(s.File, file)
}

// ParseKallsyms reads a System.map or /proc/kallsyms listing ("ADDR TYPE
// NAME [MODULE]") in file order. Symbols of loaded modules ([mod]) are
// skipped.
func ParseKallsyms(r io.Reader) (*Symbols, error) {
	s := newSymbols("vmlinux")
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	line := 0
	for sc.Scan() {
		line++
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if len(f) < 3 || len(f[1]) != 1 {
			return nil, fmt.Errorf("symbol map line %d: expected \"ADDRESS TYPE NAME\", got %q", line, sc.Text())
		}
		if len(f) > 3 {
			continue // module symbol
		}
		t := f[1][0]
		s.add(f[2], t >= 'A' && t <= 'Z', "")
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read symbol map: %w", err)
	}
	return s, nil
}

// ModuleSymbols reads a module's symbol table from its .ko (plain or .xz,
// .zst, .gz compressed), keeping the symbols the kernel's module kallsyms
// keeps once the module has loaded (defined in an allocated, non-init
// section; exit code stays, as Debian's kernels set CONFIG_MODULE_UNLOAD),
// in table order.
func ModuleSymbols(ctx context.Context, object, path string) (*Symbols, error) {
	data, err := kbuild.ReadModule(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("module %s symbols: %w", object, err)
	}
	f, err := elfobj.Read(data)
	if err != nil {
		return nil, fmt.Errorf("module %s symbols: %s: %w", object, path, err)
	}
	s := newSymbols(object)
	file := ""
	for _, sym := range f.Symbols[1:] {
		if sym.Type == elf.STT_FILE {
			file = sym.Name
			continue
		}
		if sym.Name == "" || sym.Section == nil || sym.Section.Flags&elf.SHF_ALLOC == 0 || strings.HasPrefix(sym.Section.Name, ".init") {
			continue
		}
		s.add(sym.Name, sym.Bind != elf.STB_LOCAL, file)
	}
	return s, nil
}

// SymposError reports a symbol whose position cannot be decided.
type SymposError struct {
	Object, Name, Reason string
}

func (e *SymposError) Error() string {
	return fmt.Sprintf("cannot resolve %s in %s: %s", e.Name, e.Object, e.Reason)
}

// Sympos returns the position argument for name: 0 when the name is
// unique in the object (the kernel then checks uniqueness itself), else
// the 1-based position among the same-named symbols. A global reference
// (local == false) picks the one global definition. A static one picks
// the occurrence belonging to the translation unit: for modules the one
// after the unit's STT_FILE symbol (file, the base name of its source),
// else the one with the most of the unit's other symbols (near) around
// it in table order, where translation units lie contiguously.
func (s *Symbols) Sympos(name string, local bool, file string, near map[string]bool) (int, error) {
	idx := s.byName[name]
	switch {
	case len(idx) == 0:
		return 0, &SymposError{s.Object, name, "no such symbol in its symbol table (was the target built from a different source or config?)"}
	case len(idx) == 1:
		return 0, nil
	}
	if !local {
		var globals []int
		for k, i := range idx {
			if s.Global[i] {
				globals = append(globals, k)
			}
		}
		if len(globals) == 1 {
			return globals[0] + 1, nil
		}
	}
	if file != "" { // a module, or a vmlinux with its full symbol table
		var hits []int
		for k, i := range idx {
			if s.File[i] == file {
				hits = append(hits, k)
			}
		}
		if len(hits) == 1 {
			return hits[0] + 1, nil
		}
	}
	// Score each occurrence by the unit's other symbols around it, the
	// closer the better; only names unique in the table count, since an
	// ambiguous neighbour (every seq_file has a c_start) says nothing.
	const window = 40
	best, bestScore, tie := -1, 0.0, false
	for k, i := range idx {
		score := 0.0
		for j := max(0, i-window); j < min(len(s.Names), i+window+1); j++ {
			if j != i && near[s.Names[j]] && len(s.byName[s.Names[j]]) == 1 {
				d := float64(j - i)
				score += 1 / (d * d)
			}
		}
		switch {
		case score > bestScore:
			best, bestScore, tie = k, score, false
		case score == bestScore:
			tie = true
		}
	}
	if best < 0 || tie {
		return 0, &SymposError{s.Object, name, fmt.Sprintf("%d symbols have this name and none is clearly the patched file's (no neighbouring symbols of that file tell them apart)", len(idx))}
	}
	return best + 1, nil
}

// VmlinuxSymbols returns the running order of vmlinux's symbols for the
// target whose build-id is buildID. A vmlinux with its full symbol table
// (t.Vmlinux, --vmlinux) is used when given: it also names each static's
// file (VmlinuxFileSymbols). Debian ships a placeholder
// System.map (the real one is in the -dbg package), so the sources tried
// are, in order: t.SystemMap when it is a real map; a cached listing for
// this build-id under kbuild.CacheDir(); the host's /proc/kallsyms when
// the host runs this very kernel; and last, booting the target kernel in
// qemu (internal/kernelvm) once to read its /proc/kallsyms, which is then
// cached. Only names, types and order are used, never addresses.
func VmlinuxSymbols(ctx context.Context, t kbuild.Target, buildID []byte, log io.Writer) (*Symbols, error) {
	if log == nil {
		log = io.Discard
	}
	if t.Vmlinux != "" {
		syms, err := VmlinuxFileSymbols(t.Vmlinux, buildID)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(log, "klp: vmlinux symbols and their files from %s\n", t.Vmlinux)
		return syms, nil
	}
	if t.SystemMap != "" {
		if data, err := os.ReadFile(t.SystemMap); err == nil && bytes.Count(data, []byte("\n")) > 1000 {
			return ParseKallsyms(bytes.NewReader(data))
		}
	}
	cache := filepath.Join(kbuild.CacheDir(), "klp", "kallsyms", hex.EncodeToString(buildID))
	if data, err := os.ReadFile(cache); err == nil {
		return ParseKallsyms(bytes.NewReader(data))
	}
	var data []byte
	if notes, err := os.ReadFile("/sys/kernel/notes"); err == nil && bytes.Equal(noteID(notes), buildID) {
		if d, err := os.ReadFile("/proc/kallsyms"); err == nil {
			data = d
			fmt.Fprintf(log, "klp: vmlinux symbols from the host's /proc/kallsyms\n")
		}
	}
	if data == nil {
		// One boot per machine: builds started together (a fresh
		// machine, a test suite) wait for the first one's listing.
		unlock, err := lockFile(ctx, cache+".lock")
		if err != nil {
			return nil, fmt.Errorf("vmlinux symbols: %w", err)
		}
		defer unlock()
		if d, err := os.ReadFile(cache); err == nil {
			return ParseKallsyms(bytes.NewReader(d))
		}
		fmt.Fprintf(log, "klp: %s has no symbols; booting kernel %s in qemu once to read /proc/kallsyms (cached afterwards)\n", t.SystemMap, t.Release)
		d, err := bootKallsyms(ctx, t)
		if err != nil {
			return nil, fmt.Errorf("vmlinux symbols: %w (install linux-image-%s-dbg and pass its System.map, or install qemu)", err, t.Release)
		}
		data = d
	}
	syms, err := ParseKallsyms(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	if len(syms.Names) < 1000 {
		return nil, fmt.Errorf("vmlinux symbols: only %d symbols read; is kptr_restrict hiding them?", len(syms.Names))
	}
	if err := os.MkdirAll(filepath.Dir(cache), 0o755); err == nil {
		tmp := cache + ".tmp"
		if os.WriteFile(tmp, data, 0o644) == nil {
			_ = os.Rename(tmp, cache)
		}
	}
	return syms, nil
}

// lockFile takes an exclusive flock on path (created, with its
// directory, if missing), waiting until ctx ends; the returned function
// releases it.
func lockFile(ctx context.Context, path string) (func(), error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { _ = f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			_ = f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			_ = f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

const kallsymsMarker = "LIVEFIX-KALLSYMS:"

func bootKallsyms(ctx context.Context, t kbuild.Target) ([]byte, error) {
	res, err := kernelvm.Run(ctx, kernelvm.Config{
		Target:  t,
		Timeout: 5 * time.Minute,
		Script:  "printf '" + kallsymsMarker + "'; gzip -1 </proc/kallsyms | base64 -w 0; echo\n",
	})
	if err != nil {
		return nil, fmt.Errorf("read /proc/kallsyms in qemu: %w", err)
	}
	_, b64, ok := strings.Cut(res.Output, kallsymsMarker)
	if !ok || res.ExitCode != 0 {
		return nil, fmt.Errorf("read /proc/kallsyms in qemu: script failed (status %d): %.300s", res.ExitCode, res.Output)
	}
	b64, _, _ = strings.Cut(b64, "\n")
	gz, err := base64.StdEncoding.DecodeString(strings.TrimSpace(b64))
	if err != nil {
		return nil, fmt.Errorf("read /proc/kallsyms in qemu: %w", err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		return nil, fmt.Errorf("read /proc/kallsyms in qemu: %w", err)
	}
	data, err := io.ReadAll(zr)
	if err != nil {
		return nil, fmt.Errorf("read /proc/kallsyms in qemu: %w", err)
	}
	return data, nil
}

// Exports maps each exported symbol to the object exporting it
// ("vmlinux" or a module name), read from Module.symvers.
type Exports map[string]string

// ReadExports reads a Module.symvers ("CRC\tNAME\tOBJECT\tEXPORT\tNS").
func ReadExports(path string) (Exports, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read exports: %w; the kernel headers must include Module.symvers", err)
	}
	ex := Exports{}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Split(line, "\t")
		if len(f) < 3 {
			continue
		}
		obj := f[2]
		if obj != "vmlinux" {
			obj = moduleName(obj)
		}
		ex[f[1]] = obj
	}
	if len(ex) == 0 {
		return nil, errors.New("read exports: " + path + " lists no symbols")
	}
	return ex, nil
}

// ReadExportNamespaces reads the namespace column of a Module.symvers:
// exported symbol -> namespace, for the symbols exported into one.
func ReadExportNamespaces(path string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read exports: %w; the kernel headers must include Module.symvers", err)
	}
	ns := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Split(line, "\t")
		if len(f) >= 5 && f[4] != "" {
			ns[f[1]] = f[4]
		}
	}
	return ns, nil
}

// moduleName is the kernel's name for a module path: base name without
// .ko and compression suffixes, dashes as underscores.
func moduleName(p string) string {
	p = filepath.Base(p)
	for _, ext := range []string{".xz", ".zst", ".gz", ".ko", ".o"} {
		p = strings.TrimSuffix(p, ext)
	}
	return strings.ReplaceAll(p, "-", "_")
}

// noteID is the build-id in notes, or nil.
func noteID(notes []byte) []byte {
	id, _ := buildid.FromNotes(notes)
	return id
}
