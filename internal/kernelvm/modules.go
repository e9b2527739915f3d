package kernelvm

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/livefix/livefix/internal/kbuild"
)

// moduleName turns a module file name or a user's spelling into the name
// the kernel uses: no directory, no .ko suffix, dashes as underscores.
func moduleName(s string) string {
	s = path.Base(s)
	for _, ext := range []string{".xz", ".zst", ".gz"} {
		s = strings.TrimSuffix(s, ext)
	}
	s = strings.TrimSuffix(s, ".ko")
	return strings.ReplaceAll(s, "-", "_")
}

// depEntry is one line of modules.dep.
type depEntry struct {
	file string   // relative to /lib/modules/RELEASE
	deps []string // as listed: dependencies of dependencies come later
}

// parseModulesDep reads modules.dep: "kernel/a/b.ko: kernel/c.ko kernel/d.ko".
func parseModulesDep(r io.Reader) (map[string]depEntry, error) {
	mods := map[string]depEntry{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		file, deps, ok := strings.Cut(text, ":")
		if !ok {
			return nil, fmt.Errorf("modules.dep line %d: no colon", line)
		}
		mods[moduleName(file)] = depEntry{file: strings.TrimSpace(file), deps: strings.Fields(deps)}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read modules.dep: %w", err)
	}
	return mods, nil
}

// loadOrder returns the module files to load for the requested names,
// dependencies before the modules that need them, each once.
func loadOrder(mods map[string]depEntry, names []string) ([]string, error) {
	var order []string
	seen := map[string]bool{}
	for _, n := range names {
		e, ok := mods[moduleName(n)]
		if !ok {
			return nil, fmt.Errorf("module %q not in modules.dep (built in, or not a module of this kernel?)", n)
		}
		// modules.dep lists every dependency, direct or not, and modprobe
		// loads them from the last to the first.
		files := append([]string{}, e.deps...)
		for i, j := 0, len(files)-1; i < j; i, j = i+1, j-1 {
			files[i], files[j] = files[j], files[i]
		}
		for _, f := range append(files, e.file) {
			if !seen[f] {
				seen[f] = true
				order = append(order, f)
			}
		}
	}
	return order, nil
}

// addModules puts the requested modules and their dependencies into the
// archive uncompressed, since busybox insmod loads only plain .ko files,
// and writes their guest paths in load order to LoadOrderPath.
func addModules(ctx context.Context, a *archive, release string, names []string) error {
	if len(names) == 0 {
		return nil
	}
	if release == "" {
		return fmt.Errorf("vm: modules requested but Config.Target.Release is empty")
	}
	dir := filepath.Join(modulesRoot, release)
	f, err := os.Open(filepath.Join(dir, "modules.dep"))
	if err != nil {
		return fmt.Errorf("vm: modules of %s: %w; run `make setup`", release, err)
	}
	mods, err := parseModulesDep(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("vm: %w", err)
	}
	order, err := loadOrder(mods, names)
	if err != nil {
		return fmt.Errorf("vm: %s: %w", release, err)
	}
	var list strings.Builder
	for _, rel := range order {
		data, err := kbuild.ReadModule(ctx, filepath.Join(dir, rel))
		if err != nil {
			return fmt.Errorf("vm: %w", err)
		}
		base := path.Base(rel)
		for _, ext := range []string{".xz", ".zst", ".gz"} {
			base = strings.TrimSuffix(base, ext)
		}
		guest := path.Join(ModuleDir, base)
		if err := a.file(guest, 0o644, data); err != nil {
			return fmt.Errorf("vm: %w", err)
		}
		list.WriteString(guest + "\n")
	}
	if err := a.file(LoadOrderPath, 0o644, []byte(list.String())); err != nil {
		return fmt.Errorf("vm: %w", err)
	}
	return nil
}
