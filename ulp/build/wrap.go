package build

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
)

// The compiler wrapper records every compiler invocation of the build
// (working directory and arguments) and runs the real compiler with the
// same arguments plus only -ffile-prefix-map (which changes no code), so
// the build is the project's ordinary build. The objects livefix diffs
// are compiled afterwards by replay: for every source file an invocation
// named, one compile of that file alone with the invocation's own
// compile options plus -c, -ffunction-sections and -fdata-sections. That
// works whatever shape the build has (compile and link in one command,
// libtool, CMake, parallel make): it only has to call the compiler
// through cc, gcc, c++, g++, $CC or $CXX.
const wrapperScript = `#!/bin/sh
# livefix-build compiler wrapper: records the invocation, then runs the
# real compiler with the same arguments.
rec=$(mktemp "$LIVEFIX_CCLOG/cc.XXXXXXXX") || exit 1
printf '%s\0' "$LIVEFIX_LANG" "$PWD" "$@" >"$rec" || exit 1
if [ "$LIVEFIX_LANG" = c++ ]; then real=$LIVEFIX_REAL_CXX; else real=$LIVEFIX_REAL_CC; fi
if [ -n "$LIVEFIX_REUSE" ]; then
	# A compile of one source (no link): compile it once, as the replay
	# would, and keep a copy of the object for it.
	c=0 n=0 out= prev= src=
	for a in "$@"; do
		[ "$prev" = -o ] && out=$a
		case $a in
		-c) [ $c = 0 ] && c=1 ;;
		-E|-S|-M|-MM) c=2 ;;
		-o?*) out=${a#-o} ;;
		esac
		case $prev in
		-o|-I|-D|-U|-include|-imacros|-isystem|-iquote|-idirafter|-MF|-MT|-MQ|-x) ;;
		*) case $a in
			-*) ;;
			*.c|*.i|*.cc|*.cp|*.cxx|*.cpp|*.c++|*.C|*.ii|*.s|*.S|*.sx) n=$((n+1)) src=$a ;;
			esac ;;
		esac
		prev=$a
	done
	if [ $c = 1 ] && [ $n = 1 ]; then
		if [ -z "$out" ]; then b=${src##*/}; out=${b%.*}.o; fi
		"$real" "$@" -ffunction-sections -fdata-sections -fno-lto ${LIVEFIX_PREFIX_MAP:+"-ffile-prefix-map=$LIVEFIX_PREFIX_MAP"} || exit $?
		cp "$out" "$rec.o" 2>/dev/null
		exit 0
	fi
fi
exec "$real" "$@" ${LIVEFIX_PREFIX_MAP:+"-ffile-prefix-map=$LIVEFIX_PREFIX_MAP"}
`

// writeWrapper writes the wrapper as cc, gcc (C) and c++, g++ (C++).
func writeWrapper(dir string) (string, error) {
	for _, lang := range []string{"c", "c++"} {
		d := filepath.Join(dir, lang)
		if err := os.MkdirAll(d, 0o755); err != nil {
			return "", fmt.Errorf("compiler wrapper: %w", err)
		}
		script := strings.Replace(wrapperScript, "\nrec=", "\nLIVEFIX_LANG="+lang+"\nrec=", 1)
		names := []string{"c++", "g++", "x86_64-linux-gnu-g++", "g++-12", "x86_64-linux-gnu-g++-12"}
		if lang == "c" {
			// Debian's packaging calls the triplet-prefixed and the
			// versioned names too.
			names = []string{"cc", "gcc", "x86_64-linux-gnu-gcc", "gcc-12", "x86_64-linux-gnu-gcc-12"}
		}
		for _, n := range names {
			if err := os.WriteFile(filepath.Join(d, n), []byte(script), 0o755); err != nil {
				return "", fmt.Errorf("compiler wrapper: %w", err)
			}
		}
	}
	return dir, nil
}

// invocation is one recorded compiler call.
type invocation struct {
	lang string // c or c++ (the driver's name)
	dir  string
	args []string
	// reuse is the object the wrapper kept from the build's own compile
	// (LIVEFIX_REUSE), "" if none.
	reuse string
}

func readInvocations(logdir string) ([]invocation, error) {
	ents, err := os.ReadDir(logdir)
	if err != nil {
		return nil, fmt.Errorf("compiler log: %w", err)
	}
	var out []invocation
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".o") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(logdir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("compiler log: %w", err)
		}
		f := strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
		if len(f) < 2 {
			continue // an invocation killed while writing its record
		}
		inv := invocation{lang: f[0], dir: f[1], args: f[2:]}
		if _, err := os.Stat(filepath.Join(logdir, e.Name()+".o")); err == nil {
			inv.reuse = filepath.Join(logdir, e.Name()+".o")
		}
		out = append(out, inv)
	}
	return out, nil
}

// Options of gcc that take the next argument as their value.
var separateValue = map[string]bool{
	"-o": true, "-I": true, "-D": true, "-U": true, "-include": true, "-imacros": true,
	"-isystem": true, "-iquote": true, "-idirafter": true, "-iprefix": true, "-iwithprefix": true,
	"-iwithprefixbefore": true, "-isysroot": true, "-MF": true, "-MT": true, "-MQ": true, "-x": true,
	"-L": true, "-l": true, "-Xlinker": true, "-Xassembler": true, "-Xpreprocessor": true,
	"-T": true, "-u": true, "-z": true, "-e": true, "--param": true, "-aux-info": true, "-B": true,
	"-A": true, "-G": true,
}

// Options that only matter for linking or for dependency files; the
// replay compile drops them (and their values).
func linkOnly(a string) bool {
	switch a {
	case "-c", "-S", "-shared", "-static", "-static-pie", "-pie", "-no-pie", "-rdynamic", "-s",
		"-MD", "-MMD", "-MP", "-nostdlib", "-nodefaultlibs", "-nostartfiles", "-static-libgcc",
		"-shared-libgcc", "-symbolic", "-r":
		return true
	}
	for _, p := range []string{"-Wl,", "-l", "-L", "-o"} {
		if strings.HasPrefix(a, p) {
			return true
		}
	}
	return false
}

func dropsValue(opt string) bool {
	switch opt {
	case "-o", "-MF", "-MT", "-MQ", "-L", "-l", "-Xlinker", "-T", "-u", "-z", "-e":
		return true
	}
	return false
}

// srcLang classifies an input file by its name: "c", "c++", "asm" or "".
func srcLang(name string) string {
	switch filepath.Ext(name) {
	case ".c", ".i":
		return "c"
	case ".cc", ".cp", ".cxx", ".cpp", ".CPP", ".c++", ".C", ".ii":
		return "c++"
	case ".s", ".S", ".sx":
		return "asm"
	}
	return ""
}

// compileJob is one replay compile: src compiled alone into obj.
type compileJob struct {
	key  string // tree-relative source path + hash of its options: pairs the two trees
	src  string // tree-relative
	lang string
	dir  string
	cc   string
	args []string
	obj  string // tree-relative object path (under .livefix-objects/)
	// reuse: the build's own compile already made this object (copy it).
	reuse string
}

// replayDir holds the replayed objects inside each tree.
const replayDir = ".livefix-objects"

// planReplay turns the recorded invocations into one compile per
// (source, options). Invocations that only preprocess or that name no
// source file (links) compile nothing.
func planReplay(invs []invocation, tree, src, realCC, realCXX string) []compileJob {
	var jobs []compileJob
	seen := map[string]int{}
	for _, inv := range invs {
		var opts, srcs []string
		skip := false
		for i := 0; i < len(inv.args); i++ {
			a := inv.args[i]
			switch a {
			case "-E", "-M", "-MM", "-fsyntax-only", "--version", "-v", "-dumpversion", "-dumpmachine", "-print-prog-name", "-###":
				skip = true
			}
			if separateValue[a] && i+1 < len(inv.args) {
				if !dropsValue(a) {
					opts = append(opts, a, inv.args[i+1])
				}
				i++
				continue
			}
			if strings.HasPrefix(a, "-") {
				if !linkOnly(a) {
					opts = append(opts, a)
				}
				continue
			}
			if srcLang(a) != "" {
				srcs = append(srcs, a)
			}
		}
		if skip {
			continue
		}
		for _, s := range srcs {
			abs := s
			if !filepath.IsAbs(abs) {
				abs = filepath.Join(inv.dir, s)
			}
			rel, err := filepath.Rel(tree, filepath.Clean(abs))
			if err != nil || strings.HasPrefix(rel, "..") {
				continue // a source outside the tree (a system test program)
			}
			lang := srcLang(s)
			if inv.lang == "c++" && lang == "c" {
				lang = "c++" // g++ compiles .c files as C++
			}
			h := sha256.New()
			fmt.Fprintf(h, "%s\x00%s\x00", lang, strings.ReplaceAll(inv.dir, tree, "@"))
			for _, o := range opts {
				fmt.Fprintf(h, "%s\x00", strings.ReplaceAll(o, tree, "@"))
			}
			key := rel + "@" + hex.EncodeToString(h.Sum(nil))[:16]
			if seen[key] > 0 {
				continue // the same compile again (e.g. make run twice)
			}
			seen[key]++
			cc := realCC
			if lang == "c++" || inv.lang == "c++" {
				cc = realCXX
			}
			args := append([]string{}, opts...)
			// The source as the build named it (relative to inv.dir, where
			// the replay runs): its STT_FILE symbol must be the one the
			// production binary has, to find its statics.
			args = append(args, "-ffunction-sections", "-fdata-sections", "-fno-lto", "-ffile-prefix-map="+tree+"="+src, "-c", s)
			j := compileJob{key: key, src: rel, lang: lang, dir: inv.dir, cc: cc, args: args}
			if len(srcs) == 1 {
				j.reuse = inv.reuse
			}
			jobs = append(jobs, j)
		}
	}
	sort.Slice(jobs, func(i, j int) bool { return jobs[i].key < jobs[j].key })
	for i := range jobs {
		_, h, _ := strings.Cut(jobs[i].key, "@")
		jobs[i].obj = filepath.Join(replayDir, strings.ReplaceAll(jobs[i].src, "/", "_")+"-"+h+".o")
	}
	return jobs
}

// replay compiles every job of tree (in parallel, one per CPU). A source
// that no longer exists (a configure test program) is dropped; a compile
// that fails is an error naming the source.
func replay(ctx context.Context, log io.Writer, tree string, jobs []compileJob) ([]compileJob, error) {
	if err := os.MkdirAll(filepath.Join(tree, replayDir), 0o755); err != nil {
		return nil, fmt.Errorf("replay objects: %w", err)
	}
	ok := make([]bool, len(jobs))
	errs := make([]error, len(jobs))
	var wg sync.WaitGroup
	sem := make(chan struct{}, max(runtime.NumCPU(), 1))
	var logMu sync.Mutex
	for i := range jobs {
		j := &jobs[i]
		if _, err := os.Stat(filepath.Join(tree, j.src)); err != nil {
			continue
		}
		if isScratch(j.src) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			if j.reuse != "" {
				b, err := os.ReadFile(j.reuse)
				if err == nil {
					err = os.WriteFile(filepath.Join(tree, j.obj), b, 0o644)
				}
				if err != nil {
					errs[i] = fmt.Errorf("object of %s: %w", j.src, err)
					return
				}
				ok[i] = true
				return
			}
			args := append(append([]string{}, j.args...), "-o", filepath.Join(tree, j.obj))
			cmd := exec.CommandContext(ctx, j.cc, args...)
			cmd.Dir = j.dir
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			err := cmd.Run()
			logMu.Lock()
			fmt.Fprintf(log, "livefix-build: replay %s %s\n%s", j.cc, strings.Join(args, " "), out.String())
			logMu.Unlock()
			if err != nil {
				errs[i] = fmt.Errorf("compile %s on its own (%s %s): %w: %s", j.src, j.cc, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
				return
			}
			ok[i] = true
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	var out []compileJob
	for i := range jobs {
		if ok[i] {
			out = append(out, jobs[i])
		}
	}
	return out, nil
}

// isScratch: compiler checks of CMake and autoconf, not the project's code.
func isScratch(rel string) bool {
	return strings.Contains(rel, "CMakeFiles/") || strings.HasPrefix(filepath.Base(rel), "conftest")
}

// removeBuilt deletes what an earlier build left in a copied tree (ELF
// objects, archives, libtool's .lo/.la files), so that the build command
// compiles every source again through the wrapper.
func removeBuilt(tree string) error {
	return filepath.WalkDir(tree, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		switch filepath.Ext(p) {
		case ".lo", ".la":
			return os.Remove(p)
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		var m [8]byte
		n, _ := io.ReadFull(f, m[:])
		f.Close()
		if (n >= 4 && string(m[:4]) == "\x7fELF") || (n == 8 && string(m[:]) == "!<arch>\n") {
			return os.Remove(p)
		}
		return nil
	})
}

// buildTree runs the build command in tree through the wrapper, then
// compiles every C or C++ source the build compiled on its own, and
// returns those compiles (objects relative to tree).
//
// With reuse (a production binary is given: the build's own output is
// not used), a compile of a single source gets the replay's flags at
// once and its object is kept, so that source is compiled only once.
func buildTree(ctx context.Context, log io.Writer, wrap, tree, src, command string, reuse bool) ([]compileJob, error) {
	realCC, err := realCompiler("CC", "gcc")
	if err != nil {
		return nil, err
	}
	realCXX, err := realCompiler("CXX", "g++")
	if err != nil {
		realCXX = "g++" // only needed if the build compiles C++
	}
	cclog := filepath.Join(filepath.Dir(wrap), filepath.Base(tree)+".cclog")
	os.RemoveAll(cclog)
	if err := os.MkdirAll(cclog, 0o755); err != nil {
		return nil, fmt.Errorf("compiler log: %w", err)
	}
	cmd := exec.CommandContext(ctx, "sh", "-c", command)
	cmd.Dir = tree
	cmd.Stdout, cmd.Stderr = log, log
	cwrap, cxxwrap := filepath.Join(wrap, "c"), filepath.Join(wrap, "c++")
	cmd.Env = append(os.Environ(),
		"PATH="+cwrap+string(os.PathListSeparator)+cxxwrap+string(os.PathListSeparator)+os.Getenv("PATH"),
		"CC="+filepath.Join(cwrap, "cc"),
		"CXX="+filepath.Join(cxxwrap, "c++"),
		"LIVEFIX_REAL_CC="+realCC,
		"LIVEFIX_REAL_CXX="+realCXX,
		"LIVEFIX_CCLOG="+cclog,
		"LIVEFIX_PREFIX_MAP="+tree+"="+src,
	)
	if reuse {
		cmd.Env = append(cmd.Env, "LIVEFIX_REUSE=1")
	}
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%q failed in %s (see the build log): %w", command, tree, err)
	}
	invs, err := readInvocations(cclog)
	if err != nil {
		return nil, err
	}
	jobs := planReplay(invs, tree, src, realCC, realCXX)
	if len(jobs) == 0 {
		return nil, fmt.Errorf("%q compiled no source file of the tree through the wrapper (does it use $CC, or cc/gcc from PATH?)", command)
	}
	reused := 0
	for _, j := range jobs {
		if j.reuse != "" {
			reused++
		}
	}
	fmt.Fprintf(log, "livefix-build: %d compiler invocations, %d sources (%d objects kept from the build, the rest compiled on their own)\n", len(invs), len(jobs), reused)
	return replay(ctx, log, tree, jobs)
}

func realCompiler(env, def string) (string, error) {
	name := os.Getenv(env)
	if name == "" {
		name = def
	}
	if filepath.IsAbs(name) {
		return name, nil
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("compiler %s not found: %w", name, err)
	}
	return p, nil
}
