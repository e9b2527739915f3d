package packaging

import (
	"bytes"
	"context"
	"debug/buildinfo"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// changelog is the package's Debian changelog (deb-changelog(5)): one
// entry for this build, naming the commit it was built from.
func changelog(name, version string, head Commit) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s (%s) unstable; urgency=medium\n\n", name, version)
	fmt.Fprintf(&b, "  * Built from git commit %s: %s\n", head.Hash, wrapItem(head.Subject))
	if head.Dirty {
		b.WriteString("  * The work tree had uncommitted changes.\n")
	}
	fmt.Fprintf(&b, "\n -- %s  %s\n", Maintainer, head.Time.Format("Mon, 02 Jan 2006 15:04:05 -0700"))
	return b.Bytes()
}

// wrapItem keeps changelog lines under 80 columns.
func wrapItem(s string) string {
	var lines []string
	line := ""
	width := 40 // the first line already holds "  * Built from git commit HASH: "
	for _, w := range strings.Fields(s) {
		if line != "" && len(line)+1+len(w) > width {
			lines = append(lines, line)
			line, width = "", 74
		}
		if line != "" {
			line += " "
		}
		line += w
	}
	lines = append(lines, line)
	return strings.Join(lines, "\n    ")
}

const projectLicense = `License: GPL-2
 This program is free software; you can redistribute it and/or modify it
 under the terms of the GNU General Public License version 2 as published
 by the Free Software Foundation.
 .
 This program is distributed in the hope that it will be useful, but
 WITHOUT ANY WARRANTY; without even the implied warranty of
 MERCHANTABILITY or FITNESS FOR A PARTICULAR PURPOSE. See the GNU General
 Public License for more details.
 .
 On Debian systems, the complete text of the GNU General Public License
 version 2 can be found in "/usr/share/common-licenses/GPL-2".
`

// copyright writes the machine-readable copyright file (DEP-5) for a
// static Go program: livefix's own license, then the Go standard library
// and each module linked into the binary, with the license text found in
// its source (GOROOT, the module cache).
func copyright(ctx context.Context, binary string, helpers ...string) ([]byte, error) {
	bi, err := buildinfo.ReadFile(binary)
	if err != nil {
		return nil, fmt.Errorf("read the build information of %s: %w", binary, err)
	}
	// The helper programs the package ships link modules of their own.
	seen := map[string]bool{}
	for _, m := range bi.Deps {
		seen[m.Path] = true
	}
	for _, h := range helpers {
		hi, err := buildinfo.ReadFile(h)
		if err != nil {
			return nil, fmt.Errorf("read the build information of %s: %w", h, err)
		}
		for _, m := range hi.Deps {
			if !seen[m.Path] {
				seen[m.Path] = true
				bi.Deps = append(bi.Deps, m)
			}
		}
	}
	sort.Slice(bi.Deps, func(i, j int) bool { return bi.Deps[i].Path < bi.Deps[j].Path })
	env, err := goEnv(ctx, "GOROOT", "GOMODCACHE")
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.WriteString("Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n")
	b.WriteString("Upstream-Name: livefix\n")
	fmt.Fprintf(&b, "Upstream-Contact: %s\n", Maintainer)
	fmt.Fprintf(&b, "Source: %s\n", Homepage)
	b.WriteString("Comment: The programs are statically linked Go binaries. The stanzas after\n")
	b.WriteString(" the first name the Go standard library (goroot/) and each Go module\n")
	b.WriteString(" (vendor/PATH/) linked into them, with the license text each ships.\n\n")
	b.WriteString("Files: *\nCopyright: The livefix developers\n")
	b.WriteString(projectLicense)

	// The patterns name the source trees the binaries were built from,
	// as Debian's Go packages name vendored modules (vendor/PATH).
	type dep struct{ path, version, dir, files string }
	deps := []dep{{"the Go standard library", bi.GoVersion, env["GOROOT"], "goroot/*"}}
	for _, m := range bi.Deps {
		if m.Replace != nil {
			m = m.Replace
		}
		esc, err := escapeModulePath(m.Path)
		if err != nil {
			return nil, err
		}
		deps = append(deps, dep{m.Path, m.Version, filepath.Join(env["GOMODCACHE"], esc+"@"+m.Version), "vendor/" + m.Path + "/*"})
	}
	for _, d := range deps {
		text, err := licenseText(d.dir)
		if err != nil {
			return nil, fmt.Errorf("license of %s %s: %w", d.path, d.version, err)
		}
		id := strings.NewReplacer(" ", "-", "/", "-").Replace(strings.TrimPrefix(d.path, "the "))
		if short, ok := commonLicense(text); ok {
			// Debian policy 12.5: a license in /usr/share/common-licenses
			// is referred to, not copied (lintian refuses the full text).
			id, text = short.id, short.text
		}
		fmt.Fprintf(&b, "\nFiles: %s\nCopyright: the authors of %s (see the license text)\n", d.files, d.path)
		fmt.Fprintf(&b, "Comment: %s %s, statically linked\n", d.path, d.version)
		fmt.Fprintf(&b, "License: %s\n", id)
		for _, l := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
			l = strings.TrimRight(l, " \t\r")
			if l == "" {
				l = "."
			}
			b.WriteString(" " + l + "\n")
		}
	}
	return b.Bytes(), nil
}

// commonLicenseRef is a license Debian ships in /usr/share/common-licenses:
// its short name and the paragraph that refers to it.
type commonLicenseRef struct{ id, text string }

// commonLicense recognises a module's license text that Debian ships in
// /usr/share/common-licenses, so that the copyright file refers to it
// instead of repeating it (only the Apache License 2.0 is linked today).
func commonLicense(text string) (commonLicenseRef, bool) {
	if strings.Contains(text, "Apache License") && strings.Contains(text, "Version 2.0, January 2004") &&
		strings.Contains(text, "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION") {
		return commonLicenseRef{"Apache-2.0", "Licensed under the Apache License, Version 2.0.\n\n" +
			"On Debian systems, the complete text of the Apache License, Version 2.0\n" +
			"can be found in \"/usr/share/common-licenses/Apache-2.0\".\n"}, true
	}
	return commonLicenseRef{}, false
}

// licenseText reads the license file at the top of a module's source.
func licenseText(dir string) (string, error) {
	for _, name := range []string{"LICENSE", "LICENSE.md", "LICENSE.txt", "COPYING", "LICENCE"} {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err == nil {
			return string(data), nil
		}
	}
	return "", fmt.Errorf("no LICENSE file in %s (is the module downloaded? run go mod download)", dir)
}

// escapeModulePath applies the module cache's case encoding: each upper
// case letter becomes '!' and its lower case.
func escapeModulePath(p string) (string, error) {
	var b strings.Builder
	for _, r := range p {
		switch {
		case r == '!':
			return "", fmt.Errorf("module path %q holds '!'", p)
		case 'A' <= r && r <= 'Z':
			b.WriteByte('!')
			b.WriteRune(r + ('a' - 'A'))
		default:
			b.WriteRune(r)
		}
	}
	return b.String(), nil
}

func goEnv(ctx context.Context, names ...string) (map[string]string, error) {
	out, err := exec.CommandContext(ctx, "go", append([]string{"env"}, names...)...).Output()
	if err != nil {
		return nil, fmt.Errorf("go env: %w", err)
	}
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	if len(lines) != len(names) {
		return nil, fmt.Errorf("go env %s: unexpected output %q", strings.Join(names, " "), out)
	}
	m := map[string]string{}
	for i, n := range names {
		m[n] = lines[i]
	}
	return m, nil
}
