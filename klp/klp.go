package klp

import (
	"context"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/livefix/livefix/elfobj"
	"github.com/livefix/livefix/internal/kbuild"
	"github.com/livefix/livefix/objdiff"
)

// ErrBadInput is wrapped by errors about unusable arguments: a bad patch
// name, missing or malformed patch files, an unknown module.
var ErrBadInput = errors.New("bad input")

// Spec describes one livepatch module to build from diff results.
type Spec struct {
	// Name is the module's name, and so the name of the patch under
	// /sys/kernel/livepatch: letters, digits and underscores.
	Name string
	// Level is the cumulative patch level (1 when zero). Each level must
	// contain all the fixes of the levels below it.
	Level int
	// NoReplace builds a patch that stacks on the loaded ones instead of
	// atomically replacing them (klp_patch.replace = false).
	NoReplace bool
	Target    kbuild.Target
	// Objects lists the patched kernel objects with their changed units.
	Objects []Object
	// Patches are the source patches, recorded in the manifest.
	Patches []PatchDigest
	// BuildID is the GNU build-id of the kernel the module may load into;
	// nil means the one of Target.Vmlinuz. (Tests forge it to check the
	// refusal.)
	BuildID []byte
	// WorkDir, when set, is where the module is generated and built (it
	// is kept); otherwise a temporary directory that is removed.
	WorkDir string
	// OnStep is called after each step with its duration.
	OnStep func(Step)
}

// Object is one kernel object a patch changes.
type Object struct {
	Name  string // "vmlinux" or the module's name (dashes as underscores)
	Units []Unit
}

// Unit is one changed translation unit.
type Unit struct {
	Source string          // path in the kernel tree, e.g. fs/proc/cmdline.c
	Orig   string          // the original object file, used to place the unit's statics; optional
	Result *objdiff.Result // the diff of its original and patched objects
}

// PatchDigest identifies a source patch.
type PatchDigest struct {
	File   string `json:"file"`
	SHA256 string `json:"sha256"`
}

// Step is one timed step of a build.
type Step struct {
	Name    string  `json:"name"`
	Seconds float64 `json:"seconds"`
	Detail  string  `json:"detail,omitempty"`
}

// Manifest describes a built live patch; it is written as NAME.json next
// to NAME.ko.
type Manifest struct {
	Name         string           `json:"name"`
	Module       string           `json:"module"`
	Kernel       string           `json:"kernel_release"`
	BuildID      string           `json:"vmlinux_build_id"`
	Level        int              `json:"level"`
	Replace      bool             `json:"replace"`
	Objects      []ManifestObject `json:"objects"`
	Patches      []PatchDigest    `json:"patches"`
	BuiltAt      time.Time        `json:"built_at"`
	BuildSeconds float64          `json:"build_seconds"`
	Steps        []Step           `json:"steps"`
	Tool         string           `json:"tool"`
	CVEs         []string         `json:"cves,omitempty"`    // vulnerabilities the patch fixes (livefix info)
	Summary      string           `json:"summary,omitempty"` // one line: what it fixes
	// States are the system states the level declares (livefix.h); the
	// kernel refuses a replacing level that lacks one of them.
	States []State `json:"states,omitempty"`
	// ForceUnsafe lists the refusals KPATCH_FORCE_UNSAFE overrode, as
	// "FILE: FUNCTION: REASON"; Warnings says what each means. The
	// functions' old copies may still run.
	ForceUnsafe []string `json:"force_unsafe,omitempty"`
	Warnings    []string `json:"warnings,omitempty"`
}

// ManifestObject is a patched kernel object and its replaced functions.
type ManifestObject struct {
	Name      string         `json:"name"`
	Functions []ManifestFunc `json:"functions"`
	Sources   []string       `json:"sources"`
}

// ManifestFunc is one replaced function.
type ManifestFunc struct {
	Name   string `json:"name"`   // in the running object
	Sympos int    `json:"sympos"` // 0 when the name is unique
	Symbol string `json:"symbol"` // the replacement in the module
	Source string `json:"source"`
}

var nameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,54}$`)

// Build generates, builds and post-processes the livepatch module for
// spec, writing outDir/NAME.ko and outDir/NAME.json. Units must hold
// patchable results (Result.Err() == nil); their outputs are not
// modified. Progress and kbuild output go to log, which may be nil.
func Build(ctx context.Context, spec Spec, outDir string, log io.Writer) (*Manifest, error) {
	if log == nil {
		log = io.Discard
	}
	start := time.Now()
	m, err := build(ctx, &spec, outDir, log)
	if err != nil {
		return nil, err
	}
	m.BuildSeconds = time.Since(start).Seconds()
	if err := writeManifest(filepath.Join(outDir, spec.Name+".json"), m); err != nil {
		return nil, err
	}
	return m, nil
}

func writeManifest(p string, m *Manifest) error {
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("write manifest: %w", err)
	}
	if err := os.WriteFile(p, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("write manifest: %w", err)
	}
	return nil
}

func validate(spec *Spec) error {
	if !nameRE.MatchString(spec.Name) {
		return fmt.Errorf("patch name %q: use 1 to 55 letters, digits and underscores, not starting with a digit (it becomes the module name): %w", spec.Name, ErrBadInput)
	}
	if spec.Level == 0 {
		spec.Level = 1
	}
	if spec.Level < 0 {
		return fmt.Errorf("patch level %d: must be 1 or more: %w", spec.Level, ErrBadInput)
	}
	if len(spec.Objects) == 0 {
		return fmt.Errorf("nothing to patch: no objects given: %w", ErrBadInput)
	}
	seen := map[string]bool{}
	for _, o := range spec.Objects {
		if o.Name != "vmlinux" && !nameRE.MatchString(o.Name) {
			return fmt.Errorf("object name %q is neither vmlinux nor a module name: %w", o.Name, ErrBadInput)
		}
		if seen[o.Name] {
			return fmt.Errorf("object %s listed twice: %w", o.Name, ErrBadInput)
		}
		seen[o.Name] = true
		if len(o.Units) == 0 {
			return fmt.Errorf("object %s has no changed units: %w", o.Name, ErrBadInput)
		}
		for _, u := range o.Units {
			if u.Result == nil {
				return fmt.Errorf("%s: no diff result: %w", u.Source, ErrBadInput)
			}
			if err := u.Result.Err(); err != nil {
				return fmt.Errorf("%s: %w", u.Source, err)
			}
			if u.Result.Output == nil {
				return fmt.Errorf("%s: diff result has no output: %w", u.Source, ErrBadInput)
			}
		}
	}
	return nil
}

func build(ctx context.Context, spec *Spec, outDir string, log io.Writer) (*Manifest, error) {
	if err := validate(spec); err != nil {
		return nil, err
	}
	t0 := time.Now()
	step := func(name, detail string, since time.Time) Step {
		s := Step{Name: name, Seconds: time.Since(since).Seconds(), Detail: detail}
		if spec.OnStep != nil {
			spec.OnStep(s)
		}
		return s
	}
	t := spec.Target
	// The symbols are those of the target's image; the id the module
	// checks for is normally the same, unless the caller forges it.
	realID, err := VmlinuzBuildID(ctx, t.Vmlinuz)
	if err != nil {
		return nil, err
	}
	buildID := spec.BuildID
	if buildID == nil {
		buildID = realID
	}
	exports, err := ReadExports(filepath.Join(t.Headers, "Module.symvers"))
	if err != nil {
		return nil, err
	}
	namespaces, err := ReadExportNamespaces(filepath.Join(t.Headers, "Module.symvers"))
	if err != nil {
		return nil, err
	}
	modulesDir := filepath.Dir(t.Headers)

	work := spec.WorkDir
	if work == "" {
		d, err := os.MkdirTemp("", "livefix-klp-")
		if err != nil {
			return nil, fmt.Errorf("work dir: %w", err)
		}
		defer os.RemoveAll(d)
		work = d
	} else if err := os.MkdirAll(work, 0o755); err != nil {
		return nil, fmt.Errorf("work dir: %w", err)
	}

	// Globals defined by any unit: other units link against them directly.
	defined := map[string]bool{}
	for _, o := range spec.Objects {
		for _, u := range o.Units {
			for _, s := range u.Result.Output.Symbols {
				if s != nil && s.Section != nil && s.Bind != elf.STB_LOCAL && s.Name != "" {
					defined[s.Name] = true
				}
			}
		}
	}

	// The hook defines livefix_klp_patch (livefix.h).
	defined["livefix_klp_patch"] = true
	env := newUnitEnv(ctx, exports, namespaces, defined, modulesDir)
	hook := hookData{Name: spec.Name, Level: spec.Level, Release: t.Release, Replace: !spec.NoReplace, BuildID: buildID}
	m := &Manifest{
		Name: spec.Name, Module: spec.Name + ".ko", Kernel: t.Release, BuildID: hex.EncodeToString(buildID),
		Level: spec.Level, Replace: !spec.NoReplace, Patches: spec.Patches, BuiltAt: time.Now().UTC().Round(time.Second),
		Tool: toolVersion(),
	}
	var members []string
	n := 0
	for _, o := range spec.Objects {
		var syms *Symbols
		if o.Name == "vmlinux" {
			syms, err = VmlinuxSymbols(ctx, t, realID, log)
		} else {
			var ko string
			ko, err = modulePath(modulesDir, o.Name)
			if err == nil {
				syms, err = ModuleSymbols(ctx, o.Name, ko)
			}
		}
		if err != nil {
			return nil, err
		}
		ho := hookObject{Name: o.Name}
		mo := ManifestObject{Name: o.Name}
		for _, u := range o.Units {
			env.syms = syms
			lu, err := rewriteUnit(n, o.Name, u, env)
			if err != nil {
				return nil, err
			}
			member := fmt.Sprintf("livefix-unit-%d.o", n)
			if err := lu.file.WriteFile(filepath.Join(work, member+"_shipped")); err != nil {
				return nil, fmt.Errorf("write unit %s: %w", u.Source, err)
			}
			// modpost reads each member's .cmd file (for the source
			// version); a prebuilt object has no sources to list.
			cmd := fmt.Sprintf("cmd_%s := cp %s_shipped %s\n", filepath.Join(work, member), member, member)
			if err := os.WriteFile(filepath.Join(work, "."+member+".cmd"), []byte(cmd), 0o644); err != nil {
				return nil, fmt.Errorf("write unit %s: %w", u.Source, err)
			}
			members = append(members, member)
			ho.Funcs = append(ho.Funcs, lu.funcs...)
			for kind, sym := range lu.callbacks {
				if prev := ho.callback(kind); prev != "" {
					return nil, fmt.Errorf("%s: a second %s callback for object %s (%s has one already): one per object", u.Source, kind, o.Name, prev)
				}
				ho.setCallback(kind, sym)
			}
			if hook.States, err = mergeStates(hook.States, lu.states, u.Source); err != nil {
				return nil, err
			}
			for _, st := range lu.states {
				if st.Shadow == "retire" && spec.NoReplace {
					return nil, fmt.Errorf("%s: LIVEFIX_SHADOW_RETIRE(%d, %d) frees the variables of the level this one replaces, but this level stacks (--no-replace) instead of replacing: %w", u.Source, st.ID, st.Version, ErrBadInput)
				}
				fmt.Fprintf(log, "klp: %s: state %d version %d (%s)\n", u.Source, st.ID, st.Version, st.kindName())
			}
			for _, r := range u.Result.Forced {
				m.ForceUnsafe = append(m.ForceUnsafe, fmt.Sprintf("%s: %s: %s", u.Source, r.Symbol, r.Reason))
				w := fmt.Sprintf("%s: %s is included although livefix would refuse it, because the patch marks it KPATCH_FORCE_UNSAFE (%s); its old copy may keep running", u.Source, r.Symbol, r.Reason)
				m.Warnings = append(m.Warnings, w)
				fmt.Fprintf(log, "klp: WARNING: %s\n", w)
			}
			for _, fn := range lu.ignored {
				fmt.Fprintf(log, "klp: %s: %s changed but is ignored (KPATCH_IGNORE_FUNCTION)\n", u.Source, fn)
			}
			for _, f := range lu.funcs {
				mo.Functions = append(mo.Functions, ManifestFunc{Name: f.OldName, Sympos: f.Sympos, Symbol: f.NewSym, Source: u.Source})
			}
			mo.Sources = append(mo.Sources, u.Source)
			n++
		}
		hook.Objects = append(hook.Objects, ho)
		m.Objects = append(m.Objects, mo)
	}
	hook.Namespaces = env.namespaceList()
	m.States = hook.States
	shadowCallbacks(&hook)
	src, err := GenerateHook(hook)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(work, "livefix-hook.c"), src, 0o644); err != nil {
		return nil, fmt.Errorf("write hook: %w", err)
	}
	kbuildFile := fmt.Sprintf("# Generated by livefix.\n# The .klp.sym symbols are resolved by the livepatch core, not modpost.\nKBUILD_MODPOST_WARN := 1\nobj-m := %s.o\n%s-y := livefix-hook.o %s\n",
		spec.Name, spec.Name, strings.Join(members, " "))
	if err := os.WriteFile(filepath.Join(work, "Kbuild"), []byte(kbuildFile), 0o644); err != nil {
		return nil, fmt.Errorf("write Kbuild: %w", err)
	}
	m.Steps = append(m.Steps, step("generate", fmt.Sprintf("%d function(s) in %d object(s)", countFuncs(hook), len(hook.Objects)), t0))

	t1 := time.Now()
	if err := t.BuildModule(ctx, work, log); err != nil {
		return nil, fmt.Errorf("link livepatch module: %w", err)
	}
	ko, err := elfobj.Open(filepath.Join(work, spec.Name+".ko"))
	if err != nil {
		return nil, fmt.Errorf("link livepatch module: %w", err)
	}
	moved, err := ConvertRelocations(ko, env.owners)
	if err != nil {
		return nil, fmt.Errorf("livepatch relocations: %w", err)
	}
	if err := checkUndefined(ko, exports); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return nil, fmt.Errorf("output dir: %w", err)
	}
	if err := ko.WriteFile(filepath.Join(outDir, spec.Name+".ko")); err != nil {
		return nil, fmt.Errorf("write module: %w", err)
	}
	m.Steps = append(m.Steps, step("link", fmt.Sprintf("%d livepatch relocation(s)", moved), t1))
	return m, nil
}

func countFuncs(h hookData) int {
	n := 0
	for _, o := range h.Objects {
		n += len(o.Funcs)
	}
	return n
}

// checkUndefined makes sure every undefined symbol left in the module is
// exported by the kernel or a module, so that modpost's warnings did not
// hide an unloadable module.
func checkUndefined(ko *elfobj.File, exports Exports) error {
	var bad []string
	for _, s := range ko.Symbols[1:] {
		if s.Section != nil || s.Shndx != elf.SHN_UNDEF || s.Name == "" {
			continue
		}
		if _, ok := exports[s.Name]; !ok {
			bad = append(bad, s.Name)
		}
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		return fmt.Errorf("livepatch module would not load: undefined symbols neither exported nor resolvable by the livepatch core: %s", strings.Join(bad, ", "))
	}
	return nil
}

// modulePath finds the .ko of a module of the installed kernel through
// modules.order.
func modulePath(modulesDir, name string) (string, error) {
	order, err := os.ReadFile(filepath.Join(modulesDir, "modules.order"))
	if err != nil {
		return "", fmt.Errorf("find module %s: %w", name, err)
	}
	for _, line := range strings.Split(string(order), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || moduleName(line) != name {
			continue
		}
		for _, ext := range []string{"", ".xz", ".zst", ".gz"} {
			p := filepath.Join(modulesDir, line+ext)
			if _, err := os.Stat(p); err == nil {
				return p, nil
			}
		}
		return "", fmt.Errorf("find module %s: %s is listed in modules.order but not installed", name, line)
	}
	return "", fmt.Errorf("find module %s: not in %s/modules.order: %w", name, modulesDir, ErrBadInput)
}

// linkedUnit is a unit's output ready to be linked into the module.
type linkedUnit struct {
	file      *elfobj.File
	funcs     []hookFunc
	callbacks map[string]string // callback kind -> its function's symbol
	ignored   []string          // changed functions KPATCH_IGNORE_FUNCTION keeps unpatched
	states    []State           // system states the unit declares
}

var identRE = regexp.MustCompile(`[^A-Za-z0-9_]`)

// rewriteUnit copies a unit's output and renames its symbols for linking:
// replaced functions become global livefix_uN_NAME symbols, and references
// the module cannot link normally become .klp.sym.OBJ.NAME,POS symbols
// (see resolveRef for the rules), after which the unit's jump-table and
// static-call entries that the kernel would process too early are dropped
// or refused (filterEarlySections).
func rewriteUnit(n int, object string, u Unit, env *unitEnv) (*linkedUnit, error) {
	data, err := u.Result.Output.Write()
	if err != nil {
		return nil, fmt.Errorf("%s: copy diff output: %w", u.Source, err)
	}
	f, err := elfobj.Read(data)
	if err != nil {
		return nil, fmt.Errorf("%s: copy diff output: %w", u.Source, err)
	}
	markers, err := takeMarkers(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", u.Source, err)
	}
	near := map[string]bool{}
	local := map[string]bool{}
	for _, e := range u.Result.Externals {
		if e.Local {
			near[e.Name] = true
			local[e.Name] = true
		}
	}
	for _, fn := range u.Result.Funcs {
		near[fn.OrigName] = true
	}
	var orig *elfobj.File
	if u.Orig != "" {
		if o, err := elfobj.Open(u.Orig); err == nil {
			orig = o
			for _, s := range orig.Symbols[1:] {
				if s.Section != nil && s.Name != "" && s.Type != elf.STT_SECTION && s.Type != elf.STT_FILE {
					near[s.Name] = true
				}
			}
		}
	}
	where := func(err error) error { return fmt.Errorf("%s: %w", u.Source, err) }
	syms := env.syms

	lu := &linkedUnit{file: f, callbacks: map[string]string{}, states: markers.states}
	for _, fn := range u.Result.Funcs {
		// By either name: the engine may rename the included copy
		// (NAME.livefix) when the marker takes the original's address.
		if markers.ignore[fn.Name] || markers.ignore[fn.OrigName] {
			lu.ignored = append(lu.ignored, fn.OrigName)
			continue
		}
		sym := f.SymbolByName(fn.Name)
		if sym == nil || sym.Section == nil {
			return nil, where(fmt.Errorf("replaced function %s is missing from the diff output", fn.Name))
		}
		pos, err := env.sympos(object, fn.OrigName, fn.Local, u.Source, near, orig)
		if err != nil {
			return nil, where(err)
		}
		sym.Name = fmt.Sprintf("livefix_u%d_%s", n, identRE.ReplaceAllString(fn.OrigName, "_"))
		sym.Bind = elf.STB_GLOBAL
		sym.Other = 0 // default visibility
		lu.funcs = append(lu.funcs, hookFunc{OldName: fn.OrigName, NewSym: sym.Name, Sympos: pos})
	}
	for kind, sym := range markers.callbacks {
		if !strings.HasPrefix(sym.Name, "livefix_u") {
			sym.Name = fmt.Sprintf("livefix_u%d_%s", n, identRE.ReplaceAllString(sym.Name, "_"))
		}
		sym.Bind = elf.STB_GLOBAL
		sym.Other = 0
		lu.callbacks[kind] = sym.Name
	}
	for _, s := range f.Symbols[1:] {
		if s.Section != nil || s.Shndx != elf.SHN_UNDEF || s.Name == "" {
			continue
		}
		name, isLocal := s.Name, local[s.Name]
		if !isLocal && object != "vmlinux" {
			// An alias (cleanup_module, init_module) names the module's
			// exit or init function under a second, global name; the
			// diff engine prefers global names, the module's symbol
			// table counts the real one.
			if real, ok := aliasTarget(orig, name, syms); ok {
				if syms.byName[real] == nil {
					return nil, where(fmt.Errorf("refers to %s (%s), which is not in module %s's symbol table once loaded (init code is freed after module init); a live patch cannot reach it", name, real, object))
				}
				name, isLocal = real, true
			}
		}
		if !isLocal {
			if env.defined[name] {
				continue
			}
			if exp, ok := env.exports[name]; ok {
				switch {
				case exp == "vmlinux":
					env.useExport(name)
					continue
				case exp != object && object == "vmlinux":
					env.useExport(name)
					continue
				case exp != object:
					// Another module's export, used by a patch to a
					// module: a livepatch relocation resolved when the
					// patched module loads (its dependencies are loaded
					// by then), never a hard dependency of the patch.
					kname, err := env.otherModuleRef(object, exp, name)
					if err != nil {
						return nil, where(err)
					}
					s.Name = kname
					continue
				}
			}
			if object != "vmlinux" && syms.byName[name] == nil {
				return nil, where(fmt.Errorf("refers to %s, which is neither exported nor part of module %s; a module-specific live patch can only reach exported kernel symbols", name, object))
			}
		}
		pos, err := env.sympos(object, name, isLocal, u.Source, near, orig)
		if err != nil {
			return nil, where(err)
		}
		s.Name = KlpSymName(object, name, pos)
	}
	if object != "vmlinux" {
		if err := filterEarlySections(f, object); err != nil {
			return nil, where(err)
		}
	}
	return lu, nil
}

// shadowCallbacks gives the vmlinux object the shadow variables to free
// (LIVEFIX_SHADOW_STATE, LIVEFIX_SHADOW_RETIRE), adding a vmlinux object
// without functions when the patch changes only modules: vmlinux's
// callbacks run exactly at the level's enable, disable and replace
// transitions, when klp_get_prev_state is valid, and never as a module
// comes or goes.
func shadowCallbacks(h *hookData) {
	var free, retire []uint64
	for _, st := range h.States {
		switch st.Shadow {
		case "free":
			free = appendUnique(free, st.ID)
		case "retire":
			retire = appendUnique(retire, st.ID)
		}
	}
	if len(free) == 0 && len(retire) == 0 {
		return
	}
	i := slices.IndexFunc(h.Objects, func(o hookObject) bool { return o.Name == "vmlinux" })
	if i < 0 {
		h.Objects = append(h.Objects, hookObject{Name: "vmlinux"})
		i = len(h.Objects) - 1
	}
	h.Objects[i].ShadowFree, h.Objects[i].ShadowRetire = free, retire
}

func appendUnique(ids []uint64, id uint64) []uint64 {
	for _, x := range ids {
		if x == id {
			return ids
		}
	}
	return append(ids, id)
}

// toolVersion names this livefix build: module version and VCS revision.
func toolVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "livefix (unknown version)"
	}
	v := "livefix " + bi.Main.Version
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			v += " " + s.Value[:12]
		}
		if s.Key == "vcs.modified" && s.Value == "true" {
			v += "+dirty"
		}
	}
	return v
}
