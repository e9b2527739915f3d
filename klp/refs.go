package klp

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/livefix/livefix/elfobj"
)

// unitEnv is what rewriteUnit resolves a unit's references against, and
// what it learns while doing so.
type unitEnv struct {
	ctx        context.Context
	syms       *Symbols          // the patched object's symbols, in sympos order
	exports    Exports           // Module.symvers: symbol -> exporting object
	namespaces map[string]string // Module.symvers: symbol -> its export namespace
	defined    map[string]bool   // globals some unit of the patch defines
	modulesDir string            // /lib/modules/RELEASE

	deps    map[string]map[string]bool // modules.dep, read on first use
	modSyms map[string]*Symbols        // other modules' symbols, read on first use
	// usedNS are the export namespaces of the symbols the patch imports
	// normally: the hook imports them (MODULE_IMPORT_NS), or modpost fails.
	usedNS map[string]bool
	// owners maps a .klp.sym name of another module's symbol to the
	// patched object whose .klp.rela sections must carry its relocations.
	owners map[string]string
}

func newUnitEnv(ctx context.Context, exports Exports, namespaces map[string]string, defined map[string]bool, modulesDir string) *unitEnv {
	return &unitEnv{
		ctx: ctx, exports: exports, namespaces: namespaces, defined: defined, modulesDir: modulesDir,
		modSyms: map[string]*Symbols{}, usedNS: map[string]bool{}, owners: map[string]string{},
	}
}

// useExport records an ordinary import of an exported symbol.
func (e *unitEnv) useExport(name string) {
	if ns := e.namespaces[name]; ns != "" {
		e.usedNS[ns] = true
	}
}

// sympos resolves the position of name in object and, for a static whose
// name is not unique, verifies the choice (Symbols.VerifyStatic).
func (e *unitEnv) sympos(object, name string, local bool, source string, near map[string]bool, orig *elfobj.File) (int, error) {
	pos, err := e.syms.Sympos(name, local, path.Base(source), near)
	if err != nil {
		return 0, err
	}
	if pos > 0 && local {
		if err := e.syms.VerifyStatic(name, pos, path.Base(source), orig); err != nil {
			return 0, err
		}
	}
	return pos, nil
}

// namespaceList returns the namespaces to import, sorted.
func (e *unitEnv) namespaceList() []string {
	var ns []string
	for n := range e.usedNS {
		ns = append(ns, n)
	}
	sort.Strings(ns)
	return ns
}

// otherModuleRef turns a patch to module object's reference to name,
// exported by module other, into the livepatch symbol
// .klp.sym.OTHER.NAME,POS whose relocations belong to object: the
// livepatch core writes them when object loads, and other is loaded
// before it because object depends on it. A module object does not depend
// on would not be there: that is refused.
func (e *unitEnv) otherModuleRef(object, other, name string) (string, error) {
	deps, err := e.moduleDeps(object)
	if err != nil {
		return "", err
	}
	if !deps[other] {
		return "", fmt.Errorf("refers to %s, exported by module %s, which module %s does not depend on (modules.dep): nothing guarantees %s is loaded when %s is, so the live patch could not be completed; patch %s through its own exports instead",
			name, other, object, other, object, object)
	}
	syms := e.modSyms[other]
	if syms == nil {
		ko, err := modulePath(e.modulesDir, other)
		if err != nil {
			return "", err
		}
		if syms, err = ModuleSymbols(e.ctx, other, ko); err != nil {
			return "", err
		}
		e.modSyms[other] = syms
	}
	pos, err := syms.Sympos(name, false, "", nil)
	if err != nil {
		return "", err
	}
	kname := KlpSymName(other, name, pos)
	if o, ok := e.owners[kname]; ok && o != object {
		return "", fmt.Errorf("refers to %s of module %s, which the patch to module %s uses too; build one live patch per module for this", name, other, o)
	}
	e.owners[kname] = object
	return kname, nil
}

// moduleDeps returns the modules object depends on, from modules.dep
// (which lists every dependency, direct or not).
func (e *unitEnv) moduleDeps(object string) (map[string]bool, error) {
	if e.deps == nil {
		deps, err := readModulesDep(filepath.Join(e.modulesDir, "modules.dep"))
		if err != nil {
			return nil, err
		}
		e.deps = deps
	}
	return e.deps[object], nil
}

// readModulesDep reads modules.dep ("kernel/a/b.ko: kernel/c.ko ...")
// into module name -> names of its dependencies.
func readModulesDep(p string) (map[string]map[string]bool, error) {
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("module dependencies: %w (is the kernel's modules directory installed?)", err)
	}
	deps := map[string]map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		mod, list, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		set := map[string]bool{}
		for _, d := range strings.Fields(list) {
			set[moduleName(d)] = true
		}
		deps[moduleName(strings.TrimSpace(mod))] = set
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("module dependencies: %w", err)
	}
	return deps, nil
}

// moduleAliases are the global names module_init and module_exit give a
// module's init and exit functions.
var moduleAliases = map[string]bool{"init_module": true, "cleanup_module": true}

// aliasTarget reports the real (static) name of a global alias such as
// cleanup_module: the local function or object of the original object at
// the same place. It applies to the module_init/module_exit aliases and to
// any global the module's symbol table does not have.
func aliasTarget(orig *elfobj.File, name string, syms *Symbols) (string, bool) {
	if orig == nil || (!moduleAliases[name] && syms.byName[name] != nil) {
		return "", false
	}
	var alias *elfobj.Symbol
	for _, s := range orig.Symbols[1:] {
		if s.Name == name && s.Section != nil && s.Bind != elf.STB_LOCAL {
			alias = s
			break
		}
	}
	if alias == nil {
		return "", false
	}
	for _, s := range orig.Symbols[1:] {
		if s != alias && s.Section == alias.Section && s.Value == alias.Value && s.Bind == elf.STB_LOCAL &&
			s.Type == alias.Type && s.Name != "" && !moduleAliases[s.Name] {
			return s.Name, true
		}
	}
	return "", false
}
