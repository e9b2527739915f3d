package kbuild

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"
)

// includeIndexVersion changes whenever the index file's format or the
// scan changes, so that indexes written by an older livefix are redone.
const includeIndexVersion = "2"

const includeIndexName = "include-index" // in Tree.root

// includeIndex is the tree's #include graph as its sources spell it: for
// every C, assembly and header file of the tree, the names it #includes.
// It over-approximates what the compiler reads (an #include inside an
// #if that is false still counts), which is what it is for: choosing the
// candidates whose dependency records kbuild then gives exactly.
//
// An #include of a macro (drbd's #include GENL_MAGIC_INCLUDE_FILE) is
// followed through the tree's #define lines that give such a macro a
// header name: the file with the #define counts as including that header
// (it defines the macro and then includes the file that expands it). A
// function-like macro (#include TRACE_INCLUDE(TRACE_INCLUDE_FILE) of the
// trace headers) is not followed: the header it names includes
// <trace/define_trace.h> itself and is included by name by its users.
type includeIndex struct {
	// files maps a file to its entries: `"name` or `<name` for the
	// names it #includes, `=MACRO` for an #include of a macro, and
	// `+MACRO"name` or `+MACRO<name` for a #define of a macro to a
	// header name.
	files map[string][]string
}

// skipTopDirs are top-level directories that hold no x86 kernel unit.
var skipTopDirs = map[string]bool{"Documentation": true, "tools": true, "scripts": true, "LICENSES": true, ".git": true}

// loadIncludeIndex returns the tree's include index, scanning the tree on
// first use and caching the result in the tree's cache directory. The
// caller holds the tree lock, so the tree is pristine.
func (tr *Tree) loadIncludeIndex(ctx context.Context, log io.Writer) (*includeIndex, error) {
	file := filepath.Join(tr.root, includeIndexName)
	header := "livefix-include-index " + includeIndexVersion + "\n" + tr.stamp + "\n"
	if data, err := os.ReadFile(file); err == nil && bytes.HasPrefix(data, []byte(header)) {
		return parseIncludeIndex(data[len(header):]), nil
	}
	start := time.Now()
	fmt.Fprintf(log, "kbuild: indexing the #include lines of %s (once per tree)\n", tr.Dir)
	ix, err := scanIncludes(ctx, tr.Dir)
	if err != nil {
		return nil, fmt.Errorf("index includes: %w", err)
	}
	var buf bytes.Buffer
	buf.WriteString(header)
	names := make([]string, 0, len(ix.files))
	for f := range ix.files {
		names = append(names, f)
	}
	slices.Sort(names)
	for _, f := range names {
		buf.WriteString(f)
		for _, inc := range ix.files[f] {
			buf.WriteByte('\t')
			buf.WriteString(inc)
		}
		buf.WriteByte('\n')
	}
	if err := writeFileAtomic(file, buf.Bytes()); err != nil {
		return nil, fmt.Errorf("index includes: %w", err)
	}
	fmt.Fprintf(log, "kbuild: indexed %d files in %.1fs\n", len(ix.files), time.Since(start).Seconds())
	return ix, nil
}

func parseIncludeIndex(data []byte) *includeIndex {
	ix := &includeIndex{files: map[string][]string{}}
	for len(data) > 0 {
		line, rest, _ := bytes.Cut(data, []byte("\n"))
		data = rest
		f := strings.Split(string(line), "\t")
		if f[0] != "" {
			ix.files[f[0]] = f[1:]
		}
	}
	return ix
}

// scanIncludes reads every .c, .S and .h file under dir (but the
// directories of skipTopDirs and other architectures than x86).
func scanIncludes(ctx context.Context, dir string) (*includeIndex, error) {
	paths := make(chan string, 256)
	var walkErr error
	go func() {
		defer close(paths)
		walkErr = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			rel, _ := filepath.Rel(dir, p)
			if d.IsDir() {
				top, sub, _ := strings.Cut(rel, string(filepath.Separator))
				if skipTopDirs[top] && sub == "" {
					return filepath.SkipDir
				}
				if top == "arch" && sub != "" && !strings.Contains(sub, string(filepath.Separator)) && sub != "x86" {
					return filepath.SkipDir
				}
				return nil
			}
			if d.Type().IsRegular() && (strings.HasSuffix(rel, ".c") || strings.HasSuffix(rel, ".h") || strings.HasSuffix(rel, ".S")) {
				paths <- rel
			}
			return nil
		})
	}()
	ix := &includeIndex{files: map[string][]string{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	var readErr error
	for range runtime.NumCPU() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for rel := range paths {
				data, err := os.ReadFile(filepath.Join(dir, rel))
				if err != nil {
					mu.Lock()
					readErr = err
					mu.Unlock()
					continue
				}
				incs := includeDirectives(data)
				mu.Lock()
				ix.files[filepath.ToSlash(rel)] = incs
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if walkErr != nil {
		return nil, walkErr
	}
	if readErr != nil {
		return nil, readErr
	}
	return ix, nil
}

// includeDirectives returns the names a C file #includes: `"name` for
// #include "name", `<name` for #include <name>, `=MACRO` for #include
// MACRO; and `+MACRO"name` or `+MACRO<name` for #define MACRO "name" or
// <name> when name ends in .h.
func includeDirectives(data []byte) []string {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), 8*1024*1024)
	for sc.Scan() {
		l := bytes.TrimLeft(sc.Bytes(), " \t")
		if len(l) == 0 || l[0] != '#' {
			continue
		}
		l = bytes.TrimLeft(l[1:], " \t")
		prefix := ""
		switch {
		case bytes.HasPrefix(l, []byte("include")) && (len(l) == len("include") || !isIdentByte(l[len("include")])):
			l = bytes.TrimLeft(l[len("include"):], " \t")
			if name := macroName(l); name != "" {
				if len(name) == len(bytes.TrimRight(l, " \t\r")) || !isIdentByte(l[len(name)]) && l[len(name)] != '(' {
					out = append(out, "="+name)
				}
				continue
			}
		case bytes.HasPrefix(l, []byte("define")) && len(l) > len("define") && (l[len("define")] == ' ' || l[len("define")] == '\t'):
			l = bytes.TrimLeft(l[len("define"):], " \t")
			name := macroName(l)
			if name == "" || len(name) == len(l) || (l[len(name)] != ' ' && l[len(name)] != '\t') {
				continue // not an object-like macro with a value
			}
			prefix = "+" + name
			l = bytes.TrimLeft(l[len(name):], " \t")
		default:
			continue
		}
		if len(l) < 2 {
			continue
		}
		var end byte
		switch l[0] {
		case '"':
			end = '"'
		case '<':
			end = '>'
		default:
			continue
		}
		i := bytes.IndexByte(l[1:], end)
		if i <= 0 {
			continue
		}
		name := string(l[1 : 1+i])
		if prefix != "" && !strings.HasSuffix(name, ".h") {
			continue
		}
		out = append(out, prefix+string(l[0])+name)
	}
	return out
}

// macroName returns the identifier l starts with, or "".
func macroName(l []byte) string {
	i := 0
	for i < len(l) && isIdentByte(l[i]) && !(i == 0 && l[i] >= '0' && l[i] <= '9') {
		i++
	}
	return string(l[:i])
}

func isIdentByte(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// includeRoots are the -I directories of every x86 kernel unit, in
// kbuild's order (LINUXINCLUDE).
var includeRoots = []string{
	"arch/x86/include", "arch/x86/include/generated", "include",
	"arch/x86/include/uapi", "arch/x86/include/generated/uapi", "include/uapi", "include/generated/uapi",
}

// resolve returns the files of the index an #include in file may name:
// for "name" the including file's directory first, then the include
// roots; for a name found nowhere there (a directory added with -I by a
// Makefile), every indexed header whose path ends in /name.
func (ix *includeIndex) resolve(file, inc string, bySuffix map[string][]string) []string {
	name := inc[1:]
	var out []string
	if inc[0] == '"' {
		p := path.Join(path.Dir(file), name)
		if _, ok := ix.files[p]; ok {
			return []string{p}
		}
	}
	for _, r := range includeRoots {
		p := path.Join(r, name)
		if _, ok := ix.files[p]; ok {
			out = append(out, p)
		}
	}
	if len(out) == 0 && !strings.Contains(name, "..") {
		out = bySuffix[path.Base(name)]
		var keep []string
		for _, p := range out {
			if strings.HasSuffix(p, "/"+name) {
				keep = append(keep, p)
			}
		}
		out = keep
	}
	return out
}

// includers returns the .c and .S files that include any of headers,
// directly or through other headers and .c files, as the #include lines
// read (see includeIndex), sorted.
func (ix *includeIndex) includers(headers []string) []string {
	bySuffix := map[string][]string{}
	for f := range ix.files {
		if strings.HasSuffix(f, ".h") {
			b := path.Base(f)
			bySuffix[b] = append(bySuffix[b], f)
		}
	}
	included := map[string]bool{} // macros some file #includes
	for _, incs := range ix.files {
		for _, inc := range incs {
			if inc[0] == '=' {
				included[inc[1:]] = true
			}
		}
	}
	rev := map[string][]string{} // file -> files including it
	for f, incs := range ix.files {
		for _, inc := range incs {
			switch inc[0] {
			case '=':
				continue
			case '+':
				// #define MACRO "name": an include of name by f
				// when some file #includes MACRO.
				i := strings.IndexAny(inc, "\"<")
				if i < 0 || !included[inc[1:i]] {
					continue
				}
				inc = inc[i:]
			}
			for _, p := range ix.resolve(f, inc, bySuffix) {
				rev[p] = append(rev[p], f)
			}
		}
	}
	seen := map[string]bool{}
	queue := slices.Clone(headers)
	for _, h := range headers {
		seen[h] = true
	}
	var units []string
	for len(queue) > 0 {
		f := queue[0]
		queue = queue[1:]
		if strings.HasSuffix(f, ".c") || strings.HasSuffix(f, ".S") {
			units = append(units, f)
		}
		for _, g := range rev[f] {
			if !seen[g] {
				seen[g] = true
				queue = append(queue, g)
			}
		}
	}
	slices.Sort(units)
	return units
}
