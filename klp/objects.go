package klp

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/livefix/livefix/internal/kbuild"
)

// ObjectOf decides which kernel object a C file of the source tree is
// built into: "vmlinux", or the name of the loadable module. The rule:
//
//  1. The kbuild Makefile (or Kbuild file) of the file's directory names
//     its object DIR/FILE.o either directly in an obj-$(CONFIG_...) list,
//     or as a part of a composite object: "NAME-y", "NAME-objs" or
//     "NAME-$(CONFIG_...)" += FILE.o makes NAME the candidate module;
//     otherwise the candidate is FILE itself.
//  2. If the kernel's modules.order (in modulesDir, /lib/modules/RELEASE)
//     lists kernel/DIR/CANDIDATE.ko, the file is part of that module, and
//     the object is its name with dashes as underscores.
//  3. Otherwise the file is built into vmlinux: the Debian config either
//     builds it in (=y) or not at all, and in the latter case the build of
//     the object fails earlier with its own message.
//
// override maps a source file to a module name and wins over the rule.
func ObjectOf(treeDir, modulesDir, source string, override map[string]string) (string, error) {
	if m, ok := override[source]; ok {
		if m == "" {
			return "", fmt.Errorf("empty module name for %s in the module override", source)
		}
		return moduleName(m), nil
	}
	order, err := os.ReadFile(filepath.Join(modulesDir, "modules.order"))
	if err != nil {
		return "", fmt.Errorf("decide object of %s: %w (is the kernel's modules directory installed?)", source, err)
	}
	dir, file := path.Split(source)
	dir = strings.TrimSuffix(dir, "/")
	obj := strings.TrimSuffix(file, ".c") + ".o"
	cand := strings.TrimSuffix(obj, ".o")
	for _, mk := range []string{"Kbuild", "Makefile"} {
		data, err := os.ReadFile(filepath.Join(treeDir, dir, mk))
		if err != nil {
			continue
		}
		if c := compositeOf(data, obj); c != "" {
			cand = c
		}
		break
	}
	want := "kernel/" + path.Join(dir, cand) + ".ko"
	sc := bufio.NewScanner(bytes.NewReader(order))
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == want {
			return moduleName(cand), nil
		}
	}
	return "vmlinux", nil
}

var assignRE = regexp.MustCompile(`^\s*([A-Za-z0-9_-]+)-(y|objs|\$\([A-Z0-9_]+\))\s*[:+]?=\s*(.*)$`)

// compositeOf returns NAME when a Makefile lists obj as part of the
// composite object NAME.o, or "".
func compositeOf(mk []byte, obj string) string {
	// Join continuation lines first.
	text := strings.ReplaceAll(string(mk), "\\\n", " ")
	for _, line := range strings.Split(text, "\n") {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		m := assignRE.FindStringSubmatch(line)
		if m == nil || m[1] == "obj" || m[1] == "lib" || m[1] == "subdir" || m[1] == "ccflags" || m[1] == "asflags" {
			continue
		}
		for _, w := range strings.Fields(m[3]) {
			if w == obj {
				return m[1]
			}
		}
	}
	return ""
}

// objectOfPair decides a compiled unit's kernel object: the override
// first, then what kbuild recorded when it compiled the unit (-DMODULE
// and KBUILD_MODNAME in its .cmd file, which covers composite objects,
// files listed by a parent directory's Makefile and .c files included by
// another), and ObjectOf's Makefile rule when there is no record. A
// recorded module the kernel does not ship is an error: the tree's config
// is not the kernel's.
func objectOfPair(treeDir, modulesDir string, p kbuild.ObjectPair, override map[string]string) (string, error) {
	if _, ok := override[p.Source]; ok || p.Object == "" {
		return ObjectOf(treeDir, modulesDir, p.Source, override)
	}
	for _, inc := range p.Includes {
		if _, ok := override[inc]; ok {
			return ObjectOf(treeDir, modulesDir, inc, override)
		}
	}
	if p.Object == "vmlinux" {
		return "vmlinux", nil
	}
	if _, err := modulePath(modulesDir, p.Object); err != nil {
		return "", fmt.Errorf("%s was compiled for module %s, which the kernel does not ship: %w", p.Source, p.Object, err)
	}
	return p.Object, nil
}
