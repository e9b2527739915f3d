package kbuild

import (
	"context"
	"errors"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
)

// unitsOf returns the translation units to compile for a touched .c file:
// the file itself when a kbuild Makefile of its directory or a parent
// directory names its object (fs/xfs/Makefile lists libxfs/xfs_alloc.o),
// else the .c files of its directory that #include it (kernel/sched's
// build_policy.c includes rt.c), else the file itself (whose build then
// fails with make's own message).
func (tr *Tree) unitsOf(rel string) []string {
	dir, base := path.Split(rel)
	dir = strings.TrimSuffix(dir, "/")
	obj := strings.TrimSuffix(base, ".c") + ".o"
	for d, sub := dir, obj; ; {
		for _, mk := range []string{"Kbuild", "Makefile"} {
			data, err := os.ReadFile(filepath.Join(tr.Dir, d, mk))
			if err == nil && mentionsWord(data, sub) {
				return []string{rel}
			}
		}
		if d == "" || d == "." {
			break
		}
		parent, last := path.Split(d)
		sub = last + "/" + sub
		d = strings.TrimSuffix(parent, "/")
	}
	entries, err := os.ReadDir(filepath.Join(tr.Dir, dir))
	if err != nil {
		return []string{rel}
	}
	inc := regexp.MustCompile(`(?m)^\s*#\s*include\s+"` + regexp.QuoteMeta(base) + `"`)
	var units []string
	for _, e := range entries {
		n := e.Name()
		if e.IsDir() || !strings.HasSuffix(n, ".c") || n == base {
			continue
		}
		data, err := os.ReadFile(filepath.Join(tr.Dir, dir, n))
		if err == nil && inc.Match(data) {
			units = append(units, path.Join(dir, n))
		}
	}
	if len(units) == 0 {
		return []string{rel}
	}
	return units
}

// mentionsWord reports whether a Makefile names word (an object path) as
// a whole word, continuation lines and $(addprefix ...) aside.
func mentionsWord(mk []byte, word string) bool {
	text := string(mk)
	for i := 0; ; {
		j := strings.Index(text[i:], word)
		if j < 0 {
			return false
		}
		j += i
		before := j == 0 || strings.ContainsRune(" \t=+:\\\n(,", rune(text[j-1]))
		end := j + len(word)
		after := end == len(text) || strings.ContainsRune(" \t\\\n),", rune(text[end]))
		if before && after {
			return true
		}
		i = j + 1
	}
}

var modnameRE = regexp.MustCompile(`-DKBUILD_MODNAME='"([A-Za-z0-9_-]+)"'`)

// recordedObject reads the command kbuild recorded for a unit's object
// (DIR/.FILE.o.cmd below the build's output directory out) and returns
// "vmlinux" for a built-in object, the module name for one compiled with
// -DMODULE, or "" without a record.
func recordedObject(out, rel string) string {
	dir, base := filepath.Split(rel)
	data, err := os.ReadFile(filepath.Join(out, dir, "."+strings.TrimSuffix(base, ".c")+".o.cmd"))
	if err != nil {
		return ""
	}
	line, _, _ := strings.Cut(string(data), "\n")
	if !strings.HasPrefix(line, "cmd_") {
		return ""
	}
	if !strings.Contains(line, " -DMODULE ") {
		return "vmlinux"
	}
	m := modnameRE.FindStringSubmatch(line)
	if m == nil {
		return ""
	}
	return strings.ReplaceAll(m[1], "-", "_")
}

// CompiledUnits returns the translation units this tree's configuration
// compiles for the .c file rel (tree-relative): the file itself, or the
// .c files that #include it, kept when kbuild's own object lists build
// them (for vmlinux or a module). Empty means the configuration does not
// compile rel.
func (tr *Tree) CompiledUnits(ctx context.Context, rel string) ([]string, error) {
	if tr == nil || tr.root == "" {
		return nil, errors.New("compiled units: tree was not made by Prepare")
	}
	return tr.builtUnits(ctx, tr.unitsOf(rel))
}
