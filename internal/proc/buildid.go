package proc

import (
	"bytes"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"

	"github.com/livefix/livefix/buildid"
)

// ReadBuildID returns the GNU build-id (NT_GNU_BUILD_ID note) of the ELF file
// at path. It returns an error wrapping ErrNoBuildID if the file has none.
func ReadBuildID(path string) ([]byte, error) { return buildid.FromFile(path) }

// Object is an ELF file mapped into a process.
type Object struct {
	Path     string    // path as shown in maps; may end in " (deleted)"
	BuildID  []byte    // GNU build-id
	Mappings []Mapping // every mapping of the file, ascending
	// Bias is the load bias: runtime address = Bias + ELF virtual address.
	// Zero for non-PIE executables.
	Bias uint64
}

// Start returns the lowest mapped address of the object.
func (o *Object) Start() uint64 { return o.Mappings[0].Start }

// End returns the end of the highest mapping of the object.
func (o *Object) End() uint64 { return o.Mappings[len(o.Mappings)-1].End }

// Executable reports whether one of the object's mappings may execute: a
// process runs code of the object (as opposed to one that maps the file
// to read it, as a checksum or backup tool does). Only such an object is
// something to patch.
func (o *Object) Executable() bool {
	for _, m := range o.Mappings {
		if m.Executable() {
			return true
		}
	}
	return false
}

// Deleted reports whether the file was unlinked or replaced after mapping.
func (o *Object) Deleted() bool { return o.Mappings[0].Deleted() }

// openMapped opens the file behind m: map_files first (exact file even if
// deleted or replaced), then the path inside the process's root (containers),
// then the plain path.
func openMapped(pid int, m Mapping) (*os.File, error) {
	f, err := os.Open(m.MapFile(pid))
	if err == nil {
		return f, nil
	}
	if m.Deleted() {
		return nil, fmt.Errorf("open deleted %s: %w", m.Path, err)
	}
	if f, err2 := os.Open(fmt.Sprintf("/proc/%d/root%s", pid, m.Path)); err2 == nil {
		return f, nil
	}
	f, err = os.Open(m.Path)
	if err != nil {
		return nil, fmt.Errorf("open mapped file: %w", err)
	}
	return f, nil
}

// elfInfo is what Objects needs from an ELF file.
type elfInfo struct {
	buildID    []byte
	loadVaddr  uint64 // lowest PT_LOAD p_vaddr
	loadOffset uint64 // its p_offset
	err        error
}

func readELFInfo(r io.ReaderAt) elfInfo {
	f, err := elf.NewFile(r)
	if err != nil {
		return elfInfo{err: err}
	}
	var info elfInfo
	found := false
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD && (!found || p.Vaddr < info.loadVaddr) {
			info.loadVaddr, info.loadOffset, found = p.Vaddr, p.Off, true
		}
	}
	if !found {
		return elfInfo{err: errors.New("no PT_LOAD segment")}
	}
	info.buildID, info.err = buildid.FromELFFile(f)
	return info
}

type fileKey struct {
	dev   string
	inode uint64
	path  string
}

// infoCache memoises ELF information per mapped file across processes.
type infoCache map[fileKey]elfInfo

func (c infoCache) get(pid int, m Mapping) elfInfo {
	k := fileKey{m.Dev, m.Inode, m.Path}
	if info, ok := c[k]; ok {
		return info
	}
	var info elfInfo
	if f, err := openMapped(pid, m); err != nil {
		info.err = err
	} else {
		info = readELFInfo(f)
		f.Close()
	}
	// Errors from a file that vanished or a process that exited are not
	// properties of the file; do not cache them.
	if info.err == nil || !errors.Is(info.err, os.ErrNotExist) {
		c[k] = info
	}
	return info
}

// Objects returns every ELF file with a build-id mapped into pid, ordered by
// address. Files that are not ELF or have no build-id are skipped.
func Objects(pid int) ([]Object, error) {
	maps, err := ReadMaps(pid)
	if err != nil {
		return nil, err
	}
	return objects(pid, maps, infoCache{}), nil
}

func objects(pid int, maps []Mapping, cache infoCache) []Object {
	byFile := map[fileKey][]Mapping{}
	var order []fileKey
	for _, m := range maps {
		if !m.FileBacked() {
			continue
		}
		k := fileKey{m.Dev, m.Inode, m.Path}
		if _, ok := byFile[k]; !ok {
			order = append(order, k)
		}
		byFile[k] = append(byFile[k], m)
	}
	var objs []Object
	for _, k := range order {
		ms := byFile[k]
		sort.Slice(ms, func(i, j int) bool { return ms[i].Start < ms[j].Start })
		info := cache.get(pid, ms[0])
		if info.err != nil {
			continue
		}
		first := ms[0]
		objs = append(objs, Object{
			Path:     first.Path,
			BuildID:  info.buildID,
			Mappings: ms,
			Bias:     first.Start - first.Offset - (info.loadVaddr - info.loadOffset),
		})
	}
	sort.Slice(objs, func(i, j int) bool { return objs[i].Start() < objs[j].Start() })
	return objs
}

// FindObject returns the object with the given build-id mapped into pid, or
// an error wrapping ErrNotMapped.
func FindObject(pid int, buildID []byte) (*Object, error) {
	if len(buildID) == 0 {
		return nil, errors.New("find object: empty build-id")
	}
	objs, err := Objects(pid)
	if err != nil {
		return nil, err
	}
	for i := range objs {
		if bytes.Equal(objs[i].BuildID, buildID) {
			return &objs[i], nil
		}
	}
	return nil, fmt.Errorf("pid %d: build-id %s: %w", pid, hex.EncodeToString(buildID), ErrNotMapped)
}

// MappingProcesses returns the pids of all processes that map an ELF object
// with the given build-id executable (for "patch --all"), never this one.
// Processes that exit during the scan or whose maps cannot be read are
// skipped.
func MappingProcesses(buildID []byte) ([]int, error) {
	if len(buildID) == 0 {
		return nil, errors.New("scan processes: empty build-id")
	}
	pids, err := Processes()
	if err != nil {
		return nil, err
	}
	var mt Matcher
	var out []int
	for _, pid := range pids {
		if pid == os.Getpid() {
			continue // never this process: it cannot trace itself
		}
		if ok, err := mt.Maps(pid, [][]byte{buildID}); err == nil && ok {
			out = append(out, pid)
		}
	}
	return out, nil
}

// Matcher tells quickly whether a process maps an object with one of a
// few build-ids. It remembers the build-id of every file it has read (by
// device, inode and path) across processes and calls, so a watcher
// checking every process that execs reads only the new process's maps
// for the files it has seen before (most execs on a host are of the same
// few programs). A file rewritten in place under the same inode keeps its
// old answer: use it as a filter before a check that reads the file
// itself (as ulp.Apply does), with an occasional full scan.
type Matcher struct {
	mu    sync.Mutex
	cache infoCache
}

// matcherMax bounds the files a Matcher remembers.
const matcherMax = 4096

// executableFiles returns the files of which maps has an executable
// mapping.
func executableFiles(maps []Mapping) map[fileKey]bool {
	exec := map[fileKey]bool{}
	for _, m := range maps {
		if m.FileBacked() && m.Executable() {
			exec[fileKey{m.Dev, m.Inode, m.Path}] = true
		}
	}
	return exec
}

// Maps reports whether pid maps an object with one of ids executable.
func (mt *Matcher) Maps(pid int, ids [][]byte) (bool, error) {
	maps, err := ReadMaps(pid)
	if err != nil {
		return false, err
	}
	mt.mu.Lock()
	defer mt.mu.Unlock()
	if mt.cache == nil || len(mt.cache) > matcherMax {
		mt.cache = infoCache{}
	}
	exec := executableFiles(maps)
	for i, m := range maps {
		if !m.FileBacked() || !exec[fileKey{m.Dev, m.Inode, m.Path}] ||
			i > 0 && maps[i-1].Inode == m.Inode && maps[i-1].Dev == m.Dev && maps[i-1].Path == m.Path {
			continue
		}
		info := mt.cache.get(pid, m)
		if info.err != nil {
			continue
		}
		for _, id := range ids {
			if bytes.Equal(info.buildID, id) {
				return true, nil
			}
		}
	}
	return false, nil
}
