package kernelvm

import (
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"strings"
)

// File modes as the newc format stores them (the st_mode of Linux).
const (
	modeDir     = 0o040000
	modeRegular = 0o100000
	modeSymlink = 0o120000
	modeCharDev = 0o020000
)

// cpioEntry is one member of the archive.
type cpioEntry struct {
	name         string // path without leading slash
	mode         uint32 // type and permission bits
	data         []byte // file contents or symlink target
	major, minor uint32 // device numbers of a device node
}

// archive collects entries and writes them as a newc cpio archive, the
// format the kernel unpacks into its initial rootfs. Parent directories are
// added automatically; later entries replace earlier ones of the same name.
type archive struct {
	entries map[string]cpioEntry
}

func newArchive() *archive { return &archive{entries: map[string]cpioEntry{}} }

func (a *archive) add(e cpioEntry) error {
	name := strings.TrimPrefix(path.Clean("/"+e.name), "/")
	if name == "" {
		return fmt.Errorf("initramfs: empty path")
	}
	e.name = name
	for dir := path.Dir(name); dir != "."; dir = path.Dir(dir) {
		if old, ok := a.entries[dir]; ok {
			if old.mode&0o170000 != modeDir {
				return fmt.Errorf("initramfs: %s is a file and a directory", dir)
			}
			continue
		}
		a.entries[dir] = cpioEntry{name: dir, mode: modeDir | 0o755}
	}
	if old, ok := a.entries[name]; ok && old.mode&0o170000 == modeDir && e.mode&0o170000 != modeDir {
		return fmt.Errorf("initramfs: %s is a directory and a file", name)
	}
	a.entries[name] = e
	return nil
}

func (a *archive) dir(name string, perm fs.FileMode) error {
	return a.add(cpioEntry{name: name, mode: modeDir | uint32(perm.Perm())})
}

func (a *archive) file(name string, perm fs.FileMode, data []byte) error {
	return a.add(cpioEntry{name: name, mode: modeRegular | uint32(perm.Perm()), data: data})
}

func (a *archive) symlink(name, target string) error {
	return a.add(cpioEntry{name: name, mode: modeSymlink | 0o777, data: []byte(target)})
}

func (a *archive) charDev(name string, perm fs.FileMode, major, minor uint32) error {
	return a.add(cpioEntry{name: name, mode: modeCharDev | uint32(perm.Perm()), major: major, minor: minor})
}

// writeTo writes the archive in newc format: for each member a 110-byte
// ASCII header of hex fields, the NUL-terminated name padded to 4 bytes,
// then the data padded to 4 bytes; a "TRAILER!!!" member ends it. Members
// are written sorted, so every directory precedes its contents.
func (a *archive) writeTo(w io.Writer) error {
	names := make([]string, 0, len(a.entries))
	for n := range a.entries {
		names = append(names, n)
	}
	sort.Strings(names)
	cw := &countWriter{w: w}
	ino := uint32(1)
	for _, n := range names {
		e := a.entries[n]
		if err := writeMember(cw, ino, e); err != nil {
			return err
		}
		ino++
	}
	if err := writeMember(cw, 0, cpioEntry{name: "TRAILER!!!"}); err != nil {
		return err
	}
	return cw.err
}

func writeMember(cw *countWriter, ino uint32, e cpioEntry) error {
	nlink := uint32(1)
	if e.mode&0o170000 == modeDir {
		nlink = 2
	}
	fields := []uint32{
		ino, e.mode, 0 /* uid */, 0 /* gid */, nlink, 0, /* mtime */
		uint32(len(e.data)), 0, 0 /* dev major, minor */, e.major, e.minor,
		uint32(len(e.name) + 1), 0, /* check */
	}
	if uint64(len(e.data)) > 0xffffffff {
		return fmt.Errorf("initramfs: %s is too large for cpio", e.name)
	}
	fmt.Fprintf(cw, "070701")
	for _, f := range fields {
		fmt.Fprintf(cw, "%08X", f)
	}
	io.WriteString(cw, e.name)
	cw.Write([]byte{0})
	cw.pad()
	cw.Write(e.data)
	cw.pad()
	return cw.err
}

// countWriter tracks the offset for padding and keeps the first error.
type countWriter struct {
	w   io.Writer
	n   int64
	err error
}

func (c *countWriter) Write(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.w.Write(p)
	c.n += int64(n)
	c.err = err
	return n, err
}

func (c *countWriter) pad() {
	if r := c.n % 4; r != 0 {
		c.Write(make([]byte, 4-r))
	}
}
