package kbuild

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"
)

// ErrPatch is wrapped by errors about malformed patches.
var ErrPatch = errors.New("malformed patch")

// TouchedFiles returns the files a unified diff changes, relative to the
// tree root as `patch -p1` sees them ("b/fs/proc/cmdline.c" gives
// "fs/proc/cmdline.c"), in order of first appearance and without
// duplicates. A deleted file is named by its "--- a/..." line. Hunk bodies
// are skipped by their line counts, so a removed line that happens to start
// with "-- " is not mistaken for a file header.
func TouchedFiles(patch []byte) ([]string, error) {
	var (
		files    []string
		seen     = map[string]bool{}
		oldName  string
		haveOld  bool
		oldLeft  int // lines of the current hunk still expected
		newLeft  int
		lineNo   int
		sc       = bufio.NewScanner(bytes.NewReader(patch))
		sawHunks bool
	)
	sc.Buffer(make([]byte, 0, 64*1024), 16*1024*1024)
	for sc.Scan() {
		lineNo++
		line := strings.TrimSuffix(sc.Text(), "\r")
		if oldLeft > 0 || newLeft > 0 {
			switch {
			case strings.HasPrefix(line, "\\"):
				// "\ No newline at end of file"
			case strings.HasPrefix(line, "-"):
				oldLeft--
			case strings.HasPrefix(line, "+"):
				newLeft--
			case strings.HasPrefix(line, " "), line == "":
				oldLeft--
				newLeft--
			default:
				return nil, fmt.Errorf("line %d: hunk ends early: %w", lineNo, ErrPatch)
			}
			if oldLeft < 0 || newLeft < 0 {
				return nil, fmt.Errorf("line %d: hunk longer than its header says: %w", lineNo, ErrPatch)
			}
			continue
		}
		switch {
		case strings.HasPrefix(line, "--- "):
			name, err := headerName(line[4:])
			if err != nil {
				return nil, fmt.Errorf("line %d: %w", lineNo, err)
			}
			oldName, haveOld = name, true
		case strings.HasPrefix(line, "+++ "):
			if !haveOld {
				return nil, fmt.Errorf("line %d: +++ line without a --- line before it: %w", lineNo, ErrPatch)
			}
			name, err := headerName(line[4:])
			if err != nil {
				return nil, fmt.Errorf("line %d: %w", lineNo, err)
			}
			if name == "/dev/null" {
				name = oldName
			}
			haveOld = false
			rel, err := stripComponent(name)
			if err != nil {
				return nil, fmt.Errorf("line %d: %w", lineNo, err)
			}
			if !seen[rel] {
				seen[rel] = true
				files = append(files, rel)
			}
		case strings.HasPrefix(line, "@@ "):
			o, n, err := hunkCounts(line)
			if err != nil {
				return nil, fmt.Errorf("line %d: %w", lineNo, err)
			}
			oldLeft, newLeft, sawHunks = o, n, true
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read patch: %w", err)
	}
	if oldLeft > 0 || newLeft > 0 {
		return nil, fmt.Errorf("patch ends inside a hunk: %w", ErrPatch)
	}
	if len(files) == 0 || !sawHunks {
		return nil, fmt.Errorf("no file changes found (expected unified diff with ---/+++ headers and @@ hunks): %w", ErrPatch)
	}
	return files, nil
}

// headerName extracts the file name of a ---/+++ header: up to a tab (a
// timestamp follows it in diff -u output), C-quoted names unquoted as git
// writes them.
func headerName(s string) (string, error) {
	if strings.HasPrefix(s, `"`) {
		end := closingQuote(s)
		if end < 0 {
			return "", fmt.Errorf("unterminated quoted file name %s: %w", s, ErrPatch)
		}
		name, err := strconv.Unquote(s[:end+1])
		if err != nil {
			return "", fmt.Errorf("quoted file name %s: %w", s[:end+1], ErrPatch)
		}
		return name, nil
	}
	if i := strings.IndexByte(s, '\t'); i >= 0 {
		s = s[:i]
	}
	s = strings.TrimRight(s, " ")
	if s == "" {
		return "", fmt.Errorf("empty file name: %w", ErrPatch)
	}
	return s, nil
}

func closingQuote(s string) int {
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '"':
			return i
		}
	}
	return -1
}

// stripComponent applies -p1 and refuses names that escape the tree.
func stripComponent(name string) (string, error) {
	i := strings.IndexByte(name, '/')
	if i < 0 || i == len(name)-1 {
		return "", fmt.Errorf("file name %q has no leading directory to strip (patches must apply with -p1): %w", name, ErrPatch)
	}
	rel := path.Clean(name[i+1:])
	if path.IsAbs(rel) || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") {
		return "", fmt.Errorf("file name %q points outside the tree: %w", name, ErrPatch)
	}
	return rel, nil
}

// hunkCounts parses "@@ -l[,s] +l[,s] @@".
func hunkCounts(line string) (int, int, error) {
	f := strings.Fields(line)
	if len(f) < 4 || f[3] != "@@" || !strings.HasPrefix(f[1], "-") || !strings.HasPrefix(f[2], "+") {
		return 0, 0, fmt.Errorf("bad hunk header %q: %w", line, ErrPatch)
	}
	o, err := rangeCount(f[1][1:])
	if err != nil {
		return 0, 0, fmt.Errorf("bad hunk header %q: %w", line, err)
	}
	n, err := rangeCount(f[2][1:])
	if err != nil {
		return 0, 0, fmt.Errorf("bad hunk header %q: %w", line, err)
	}
	return o, n, nil
}

func rangeCount(s string) (int, error) {
	start, count, ok := strings.Cut(s, ",")
	if _, err := strconv.ParseUint(start, 10, 32); err != nil {
		return 0, ErrPatch
	}
	if !ok {
		return 1, nil
	}
	c, err := strconv.ParseUint(count, 10, 32)
	if err != nil {
		return 0, ErrPatch
	}
	return int(c), nil
}
