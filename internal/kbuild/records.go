package kbuild

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// This file holds what kbuild itself says about the tree, cached per tree:
// which objects each directory's Makefile builds with this .config, and
// which headers each compiled unit read (the deps_ list fixdep writes into
// the unit's .o.cmd file).

const (
	objectListsName = "object-lists.json" // in Tree.root: dir -> dirObjects
	unitDepsName    = "unit-deps.json"    // in Tree.root: unit -> headers it read
	recordsVersion  = "3"
)

// dirObjects is what kbuild builds in one directory with the tree's
// .config: the real objects (composite objects expanded into their parts)
// for vmlinux and for modules, and the subdirectories it descends into.
type dirObjects struct {
	Objects []string `json:"objects"` // tree-relative .o paths
	Subdirs []string `json:"subdirs"` // tree-relative directories
}

// records is the per-tree cache of kbuild's answers.
type records struct {
	Version string                `json:"version"`
	Stamp   string                `json:"stamp"`
	Dirs    map[string]dirObjects `json:"dirs,omitempty"`
	Deps    map[string][]string   `json:"deps,omitempty"`
}

func (tr *Tree) loadRecords(name string) *records {
	r := &records{}
	data, err := os.ReadFile(filepath.Join(tr.root, name))
	if err != nil || json.Unmarshal(data, r) != nil || r.Version != recordsVersion || r.Stamp != tr.stamp {
		r = &records{}
	}
	r.Version, r.Stamp = recordsVersion, tr.stamp
	if r.Dirs == nil {
		r.Dirs = map[string]dirObjects{}
	}
	if r.Deps == nil {
		r.Deps = map[string][]string{}
	}
	return r
}

func (tr *Tree) saveRecords(name string, r *records) error {
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(tr.root, name), data)
}

// listMakefile asks Makefile.build for a directory's object lists; it is
// written to a temporary file and run with -f, never into the tree.
// Makefile.lib has already prefixed lib-y with the directory.
const listMakefile = `include scripts/Makefile.build
livefix-list:
	@echo 'objects: $(real-obj-y) $(real-obj-m) $(lib-y)'
	@echo 'subdirs: $(subdir-ym)'
`

// dirObjectsOf returns kbuild's object lists for dir, from the cache or
// by running Makefile.build for that directory alone (a fraction of a
// second: nothing is built).
func (tr *Tree) dirObjectsOf(ctx context.Context, rec *records, mk, dir string) (dirObjects, error) {
	if d, ok := rec.Dirs[dir]; ok {
		return d, nil
	}
	// A directory without a kbuild file of its own (drivers/gpu/drm/amd)
	// builds nothing itself; a parent's Makefile may still list its files.
	if !fileExists(filepath.Join(tr.Dir, dir, "Makefile")) && !fileExists(filepath.Join(tr.Dir, dir, "Kbuild")) {
		d := dirObjects{Objects: []string{}}
		rec.Dirs[dir] = d
		return d, nil
	}
	// Makefile.build alone lacks what the top-level and arch Makefiles
	// export; of that, object lists use only BITS (arch/x86's
	// entry_$(BITS).o) and the architecture's name.
	out, err := run(ctx, tr.Dir, "make", "-s", "-f", mk, "obj="+dir, "srctree=.", "objtree=.",
		"SRCARCH=x86", "ARCH=x86", "BITS="+tr.bits(), "KBUILD_BUILTIN=1", "KBUILD_MODULES=1", "livefix-list")
	if err != nil {
		// A Makefile that cannot be read alone is one a parent's
		// Makefile includes with its own variables
		// (drivers/gpu/drm/amd/display/dc needs amdgpu's AMDDALPATH):
		// its directory lists nothing of its own.
		if ctx.Err() != nil {
			return dirObjects{}, fmt.Errorf("list the objects kbuild builds in %s: %w", dir, ctx.Err())
		}
		d := dirObjects{Objects: []string{}}
		rec.Dirs[dir] = d
		return d, nil
	}
	var d dirObjects
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ": ")
		if !ok {
			continue
		}
		switch key {
		case "objects":
			d.Objects = strings.Fields(val)
		case "subdirs":
			d.Subdirs = strings.Fields(val)
		}
	}
	if d.Objects == nil {
		d.Objects = []string{}
	}
	rec.Dirs[dir] = d
	return d, nil
}

// builtUnits keeps the units (tree-relative .c or .S files) that kbuild
// compiles with this tree's .config: the unit's object is in the object
// list of its directory or of a parent directory (fs/xfs/Makefile lists
// libxfs/xfs_alloc.o), and kbuild descends into that directory from the
// top. Answers are cached in the tree.
func (tr *Tree) builtUnits(ctx context.Context, units []string) ([]string, error) {
	rec := tr.loadRecords(objectListsName)
	tmp, err := os.CreateTemp("", "livefix-list-*.mk")
	if err != nil {
		return nil, fmt.Errorf("list objects: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(listMakefile); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("list objects: %w", err)
	}
	tmp.Close()
	var archRoots map[string]bool
	var reachable func(dir string) (bool, error)
	reach := map[string]bool{}
	reachable = func(dir string) (bool, error) {
		if v, ok := reach[dir]; ok {
			return v, nil
		}
		top, _, _ := strings.Cut(dir, "/")
		if !strings.Contains(dir, "/") || dir == "arch/x86" {
			v := !skipTopDirs[top] && top != "arch" && top != "samples"
			if dir == "arch/x86" {
				v = true
			}
			reach[dir] = v
			return v, nil
		}
		if archRoots[dir] {
			reach[dir] = true
			return true, nil
		}
		reach[dir] = false
		for a := path.Dir(dir); a != "." && a != "/"; a = path.Dir(a) {
			d, err := tr.dirObjectsOf(ctx, rec, tmp.Name(), a)
			if err != nil {
				return false, err
			}
			if slices.Contains(d.Subdirs, dir) {
				ok, err := reachable(a)
				if err != nil {
					return false, err
				}
				if ok {
					reach[dir] = true
					return true, nil
				}
			}
		}
		return false, nil
	}
	archRoots = tr.archRoots()
	var built []string
	for _, u := range units {
		obj := strings.TrimSuffix(strings.TrimSuffix(u, ".c"), ".S") + ".o"
		found := false
		for d := path.Dir(u); d != "." && d != "/"; d = path.Dir(d) {
			if top, _, _ := strings.Cut(d, "/"); skipTopDirs[top] || (top == "arch" && d != "arch/x86" && !strings.HasPrefix(d, "arch/x86/")) {
				break
			}
			l, err := tr.dirObjectsOf(ctx, rec, tmp.Name(), d)
			if err != nil {
				return nil, err
			}
			if !slices.Contains(l.Objects, obj) {
				continue
			}
			ok, err := reachable(d)
			if err != nil {
				return nil, err
			}
			found = ok
			break
		}
		if found {
			built = append(built, u)
		}
	}
	if err := tr.saveRecords(objectListsName, rec); err != nil {
		return nil, fmt.Errorf("list objects: %w", err)
	}
	return built, nil
}

// readDeps returns the headers a compiled unit read, from the deps_ list
// kbuild's fixdep wrote into the unit's .o.cmd file below the build's
// output directory out ($(wildcard ...) entries for config options left
// out); false without a record.
func readDeps(out, unit string) ([]string, bool) {
	dir, base := path.Split(unit)
	obj := strings.TrimSuffix(strings.TrimSuffix(base, ".c"), ".S") + ".o"
	data, err := os.ReadFile(filepath.Join(out, dir, "."+obj+".cmd"))
	if err != nil {
		return nil, false
	}
	return parseDeps(data)
}

// parseDeps reads the deps_TARGET := \ list of a kbuild .cmd file.
func parseDeps(data []byte) ([]string, bool) {
	var deps []string
	in := false
	found := false
	for _, line := range strings.Split(string(data), "\n") {
		if !in {
			if strings.HasPrefix(line, "deps_") && strings.Contains(line, ":=") {
				in, found = true, true
			}
			continue
		}
		f := strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(line), "\\"))
		if f == "" {
			if !strings.HasSuffix(strings.TrimSpace(line), "\\") {
				break
			}
			continue
		}
		if strings.HasPrefix(f, "$(") {
			continue
		}
		if strings.HasSuffix(f, ".h") {
			deps = append(deps, path.Clean(f))
		}
		if !strings.HasSuffix(strings.TrimSpace(line), "\\") {
			break
		}
	}
	return deps, found
}

// bits is arch/x86/Makefile's BITS for the tree's .config.
func (tr *Tree) bits() string {
	data, err := os.ReadFile(filepath.Join(tr.Dir, ".config"))
	if err == nil && !bytes.Contains(data, []byte("\nCONFIG_X86_64=y\n")) && bytes.Contains(data, []byte("\nCONFIG_X86_32=y\n")) {
		return "32"
	}
	return "64"
}

// archRootRE matches arch/x86/Makefile's lines that make kbuild descend
// into a directory directly (libs-y += arch/x86/lib/).
var archRootRE = regexp.MustCompile(`(?m)^\s*(?:core|drivers|libs|head)-(y|\$\((CONFIG_[A-Z0-9_]+)\))\s*\+?=\s*(arch/x86/[A-Za-z0-9_/-]+?)/?\s*$`)

// archRoots returns the directories arch/x86/Makefile adds to the build
// outside arch/x86/Kbuild's lists, with their conditions evaluated
// against the tree's .config.
func (tr *Tree) archRoots() map[string]bool {
	roots := map[string]bool{}
	mk, err := os.ReadFile(filepath.Join(tr.Dir, "arch/x86/Makefile"))
	if err != nil {
		return roots
	}
	config, _ := os.ReadFile(filepath.Join(tr.Dir, ".config"))
	for _, m := range archRootRE.FindAllStringSubmatch(string(mk), -1) {
		if m[1] == "y" || bytes.Contains(config, []byte("\n"+m[2]+"=y\n")) {
			roots[m[3]] = true
		}
	}
	return roots
}
