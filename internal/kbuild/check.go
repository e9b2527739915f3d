package kbuild

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// ErrTreeMismatch is wrapped by the errors of the tree checks: the prepared
// tree would not compile code the way the target kernel was compiled.
var ErrTreeMismatch = errors.New("kernel tree does not match the target kernel")

// MismatchError says which property of the tree differs from the target
// kernel, both values, and what to do.
type MismatchError struct {
	What   string // "source version", "compiler", "config"
	Tree   string // the tree's value
	Target string // the running (target) kernel's value
	Fix    string
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("%s: the tree has %s, the target kernel %s; %s", e.What, e.Tree, e.Target, e.Fix)
}

func (e *MismatchError) Unwrap() error { return ErrTreeMismatch }

// Check verifies, before anything is compiled, that the tree builds the
// target kernel: the Debian version of the source package equals the one
// the kernel image names (SourceVersion, ImageVersion), and olddefconfig
// kept the kernel's config (CheckConfig). Errors are *MismatchError.
func (tr *Tree) Check(ctx context.Context, log io.Writer) error {
	if log == nil {
		log = io.Discard
	}
	img, err := ImageVersion(tr.Target.Vmlinuz)
	if err != nil {
		return fmt.Errorf("check kernel tree: %w", err)
	}
	src, err := SourceVersion(ctx, tr.Target.Source)
	if err != nil {
		return fmt.Errorf("check kernel tree: %w", err)
	}
	if src != img {
		return &MismatchError{What: "source version", Tree: "linux-source " + src, Target: img + " (" + tr.Target.Vmlinuz + ")",
			Fix: "install the linux-source package of version " + img + " (apt-get install linux-source-" + majorMinor(tr.Target.Release) + "=" + img + "), or build for the kernel that source belongs to"}
	}
	want, err := os.ReadFile(tr.Target.Config)
	if err != nil {
		return fmt.Errorf("check kernel tree: %w", err)
	}
	got, err := os.ReadFile(filepath.Join(tr.Dir, ".config"))
	if err != nil {
		return fmt.Errorf("check kernel tree: %w", err)
	}
	if err := CheckConfig(want, got); err != nil {
		return err
	}
	fmt.Fprintf(log, "kbuild: tree matches the target: source %s, config unchanged by olddefconfig\n", src)
	return nil
}

var debianVersionRE = regexp.MustCompile(`\bDebian (\S+)`)

// ImageVersion returns the Debian package version a bzImage's version
// string names ("... #1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3 (...)"): the
// setup header's kernel_version field (offset 0x20e) points at the
// string, relative to 0x200.
func ImageVersion(vmlinuz string) (string, error) {
	f, err := os.Open(vmlinuz)
	if err != nil {
		return "", fmt.Errorf("kernel version: %w", err)
	}
	defer f.Close()
	head := make([]byte, 64*1024)
	n, err := io.ReadFull(f, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return "", fmt.Errorf("kernel version: read %s: %w", vmlinuz, err)
	}
	return imageVersion(head[:n], vmlinuz)
}

func imageVersion(head []byte, name string) (string, error) {
	if len(head) < 0x210 || string(head[0x202:0x206]) != "HdrS" {
		return "", fmt.Errorf("kernel version: %s is not a bzImage (no HdrS setup header)", name)
	}
	off := 0x200 + int(binary.LittleEndian.Uint16(head[0x20e:]))
	if off >= len(head) {
		return "", fmt.Errorf("kernel version: %s: version string outside the setup code", name)
	}
	s, _, _ := bytes.Cut(head[off:], []byte{0})
	m := debianVersionRE.FindSubmatch(s)
	if m == nil {
		return "", fmt.Errorf("kernel version: %s (%q) names no Debian package version; livefix checks trees against Debian kernels", name, s)
	}
	return string(m[1]), nil
}

// dpkgInfo is dpkg's database of installed files (a variable for tests).
var dpkgInfo = "/var/lib/dpkg/info"

// SourceVersion returns the version of the Debian package that installed
// the kernel source tarball, from dpkg's database. The package of
// /usr/src/linux-source-X.Y.tar.xz is linux-source-X.Y when its file list
// names the tarball (one small file to read); any other file is looked up
// with dpkg-query -S, which reads every list.
func SourceVersion(ctx context.Context, source string) (string, error) {
	pkg := ""
	if base := filepath.Base(source); strings.HasPrefix(base, "linux-source-") && strings.HasSuffix(base, ".tar.xz") {
		cand := strings.TrimSuffix(base, ".tar.xz")
		if list, err := os.ReadFile(filepath.Join(dpkgInfo, cand+".list")); err == nil && bytes.Contains(list, []byte(source+"\n")) {
			pkg = cand
		}
	}
	if pkg == "" {
		out, err := exec.CommandContext(ctx, "dpkg-query", "-S", source).Output()
		if err != nil {
			return "", fmt.Errorf("source version: no Debian package owns %s (dpkg-query -S: %v); build from the linux-source package of the target kernel", source, err)
		}
		p, _, ok := strings.Cut(strings.TrimSpace(string(out)), ":")
		if !ok || strings.ContainsAny(p, " ,") {
			return "", fmt.Errorf("source version: dpkg-query -S %s: unexpected answer %q", source, out)
		}
		pkg = p
	}
	v, err := exec.CommandContext(ctx, "dpkg-query", "-W", "-f=${Version}", pkg).Output()
	if err != nil || len(v) == 0 {
		return "", fmt.Errorf("source version: dpkg-query -W %s: %v", pkg, err)
	}
	return strings.TrimSpace(string(v)), nil
}

// configIgnored are the settings that legitimately differ after
// olddefconfig: the signing keys livefix points at local paths; settings
// Debian's packaging leaves out of the shipped config and sets at build
// time (the build salt, which only seeds build-ids, and signing every
// module at install), neither of which changes compiled code; and the
// descriptions of the local tools (the compiler itself is compared through
// the objects' .comment, see CheckCompiler; pahole only affects BTF).
var configIgnored = map[string]bool{
	"CONFIG_SYSTEM_TRUSTED_KEYS":    true,
	"CONFIG_SYSTEM_REVOCATION_KEYS": true,
	"CONFIG_MODULE_SIG_KEY":         true,
	"CONFIG_BUILD_SALT":             true,
	"CONFIG_MODULE_SIG_ALL":         true,
	"CONFIG_CC_VERSION_TEXT":        true,
	"CONFIG_PAHOLE_VERSION":         true,
}

// CheckConfig compares the target kernel's config with the tree's
// .config after olddefconfig: every setting added, removed or changed
// (except configIgnored) means the tree would compile other code than the
// kernel runs. The error lists them.
func CheckConfig(target, tree []byte) error {
	a, b := parseConfig(target), parseConfig(tree)
	var diffs []string
	for k, v := range a {
		if configIgnored[k] {
			continue
		}
		if w, ok := b[k]; !ok {
			diffs = append(diffs, k+"="+v+" dropped")
		} else if w != v {
			diffs = append(diffs, k+"="+v+" became "+w)
		}
	}
	for k, w := range b {
		if _, ok := a[k]; !ok && !configIgnored[k] {
			diffs = append(diffs, k+"="+w+" added")
		}
	}
	if len(diffs) == 0 {
		return nil
	}
	sort.Strings(diffs)
	shown := diffs
	if len(shown) > 8 {
		shown = append(shown[:8:8], fmt.Sprintf("and %d more", len(diffs)-8))
	}
	return &MismatchError{What: "config", Tree: "a config olddefconfig adjusted (" + strings.Join(shown, ", ") + ")",
		Target: "its own config", Fix: "the source or the local toolchain is not the one the kernel was built with (a setting depends on the compiler, binutils or the source version); install the matching packages"}
}

// parseConfig reads "CONFIG_X=v" lines; "# CONFIG_X is not set" counts as
// absent, as kconfig treats it.
func parseConfig(data []byte) map[string]string {
	m := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		if k, v, ok := strings.Cut(line, "="); ok {
			m[k] = v
		}
	}
	return m
}

// CheckCompiler compares the compiler that made object (one the tree just
// built) with the one that built the target kernel, as each records it in
// .comment ("GCC: (Debian 12.2.0-14+deb12u1) 12.2.0"); the kernel's is read
// from one of its shipped modules, built with the same compiler (Debian's
// image carries no .comment). A different compiler can lay out code
// differently, which the diff would then take for changes.
func (tr *Tree) CheckCompiler(ctx context.Context, object string) error {
	got, err := objectCompiler(object)
	if err != nil {
		return fmt.Errorf("check compiler: %w", err)
	}
	mod, err := shippedModule(filepath.Dir(tr.Target.Headers))
	if err != nil {
		return fmt.Errorf("check compiler: %w", err)
	}
	data, err := ReadModule(ctx, mod)
	if err != nil {
		return fmt.Errorf("check compiler: %w", err)
	}
	want, err := commentCompiler(data, mod)
	if err != nil {
		return fmt.Errorf("check compiler: %w", err)
	}
	if got != want {
		return &MismatchError{What: "compiler", Tree: got, Target: want + " (" + mod + ")",
			Fix: "install the compiler the kernel was built with (Debian: the gcc package version named above)"}
	}
	return nil
}

func objectCompiler(p string) (string, error) {
	data, err := os.ReadFile(p)
	if err != nil {
		return "", err
	}
	return commentCompiler(data, p)
}

// commentCompiler returns the first "GCC: ..." string of an ELF file's
// .comment section.
func commentCompiler(data []byte, name string) (string, error) {
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	sec := f.Section(".comment")
	if sec == nil {
		return "", fmt.Errorf("%s has no .comment section naming its compiler", name)
	}
	b, err := sec.Data()
	if err != nil {
		return "", fmt.Errorf("%s: .comment: %w", name, err)
	}
	for _, s := range bytes.Split(b, []byte{0}) {
		if bytes.HasPrefix(s, []byte("GCC: ")) {
			return string(s), nil
		}
	}
	return "", fmt.Errorf("%s: .comment names no GCC version", name)
}

// shippedModule returns the first module modules.order lists that is
// installed.
func shippedModule(modulesDir string) (string, error) {
	order, err := os.ReadFile(filepath.Join(modulesDir, "modules.order"))
	if err != nil {
		return "", fmt.Errorf("find a shipped module: %w", err)
	}
	for _, line := range strings.Split(string(order), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		for _, ext := range []string{"", ".xz", ".zst", ".gz"} {
			p := filepath.Join(modulesDir, line+ext)
			if _, err := os.Stat(p); err == nil {
				return p, nil
			}
		}
	}
	return "", fmt.Errorf("find a shipped module: none of %s/modules.order is installed", modulesDir)
}
