package kernelpatch

import (
	"bytes"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// ModuleInfo is what Load needs to know about a .ko file before loading it.
type ModuleInfo struct {
	Path      string
	Name      string // module name (the live patch's sysfs name)
	Livepatch bool   // modinfo livepatch=Y
	Vermagic  string
	Level     int // modinfo livefix_level, 0 when absent
}

// ReadModuleInfo reads a module's name and flags from its .modinfo section.
func ReadModuleInfo(path string) (*ModuleInfo, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read module %s: %w (is it a kernel module?)", path, err)
	}
	defer f.Close()
	if f.Type != elf.ET_REL || f.Machine != elf.EM_X86_64 {
		return nil, fmt.Errorf("read module %s: not an x86-64 kernel module (ELF type %v, machine %v)", path, f.Type, f.Machine)
	}
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, fmt.Errorf("read module %s: no .modinfo section; not a kernel module", path)
	}
	data, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("read module %s: .modinfo: %w", path, err)
	}
	mi := &ModuleInfo{Path: path}
	for _, kv := range bytes.Split(data, []byte{0}) {
		k, v, ok := strings.Cut(string(kv), "=")
		if !ok {
			continue
		}
		switch k {
		case "name":
			mi.Name = v
		case "livepatch":
			mi.Livepatch = v == "Y"
		case "vermagic":
			mi.Vermagic = v
		case "livefix_level":
			mi.Level, _ = strconv.Atoi(v)
		}
	}
	if mi.Name == "" {
		// Older modpost does not record the name: kbuild names the module
		// after its file, with dashes turned into underscores.
		mi.Name = strings.ReplaceAll(strings.TrimSuffix(filepath.Base(path), ".ko"), "-", "_")
	}
	if err := checkName(mi.Name); err != nil {
		return nil, fmt.Errorf("read module %s: %w", path, err)
	}
	return mi, nil
}

// Metadata is the description livefix-build writes next to a live patch
// module (NAME.json). Load uses Release, BuildID and Level; the rest is
// kept as written.
type Metadata struct {
	Name    string `json:"name,omitempty"`
	Release string `json:"release,omitempty"`
	BuildID string `json:"build_id,omitempty"` // vmlinux GNU build-id, hex
	Level   int    `json:"level,omitempty"`
	// Raw is the whole file, recorded with the applied patch.
	Raw json.RawMessage `json:"raw,omitempty"`
}

// MetadataPath is where the metadata of module path is expected.
func MetadataPath(modulePath string) string {
	return strings.TrimSuffix(modulePath, ".ko") + ".json"
}

// ReadMetadata reads the metadata next to a module. It returns nil and no
// error when there is none.
func ReadMetadata(modulePath string) (*Metadata, error) {
	return readMetadataFile(MetadataPath(modulePath))
}

func readMetadataFile(path string) (*Metadata, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read patch metadata: %w", err)
	}
	return parseMetadata(path, b)
}

// parseMetadata accepts the field names livefix-build uses and a few
// obvious spellings of them, so that a renamed field does not silently
// turn off the compatibility check: a file without a release is refused.
func parseMetadata(path string, b []byte) (*Metadata, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(b, &fields); err != nil {
		return nil, fmt.Errorf("read patch metadata %s: %w", path, err)
	}
	str := func(keys ...string) string {
		for _, k := range keys {
			var s string
			if raw, ok := fields[k]; ok && json.Unmarshal(raw, &s) == nil && s != "" {
				return s
			}
		}
		return ""
	}
	m := &Metadata{
		Name:    str("name"),
		Release: str("release", "kernel_release", "kernel"),
		BuildID: strings.ToLower(str("build_id", "buildid", "vmlinux_build_id", "kernel_build_id")),
		Raw:     json.RawMessage(bytes.TrimSpace(b)),
	}
	if raw, ok := fields["level"]; ok {
		if err := json.Unmarshal(raw, &m.Level); err != nil {
			return nil, fmt.Errorf("read patch metadata %s: level: %w", path, err)
		}
	}
	if m.Release == "" {
		return nil, fmt.Errorf("read patch metadata %s: no kernel release in it; rebuild the patch with livefix-build kernel", path)
	}
	return m, nil
}

// MismatchError says why a live patch does not fit the running kernel.
type MismatchError struct {
	Module string
	What   string // "release" or "build-id"
	Patch  string // what the patch was built for
	Kernel string // what is running
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("%s was built for kernel %s %s but the running kernel has %s %s; "+
		"nothing was loaded; build the patch against the running kernel (livefix-build kernel --kernel %s)",
		e.Module, e.What, e.Patch, e.What, e.Kernel, e.kernelHint())
}

func (e *MismatchError) kernelHint() string {
	if e.What == "release" {
		return e.Kernel
	}
	return "$(uname -r)"
}

// CheckCompatible compares a patch's metadata with the running kernel.
func (s *System) CheckCompatible(module string, m *Metadata) error {
	release, err := s.Release()
	if err != nil {
		return fmt.Errorf("check %s: %w", module, err)
	}
	if m.Release != release {
		return &MismatchError{Module: module, What: "release", Patch: m.Release, Kernel: release}
	}
	if m.BuildID == "" {
		return nil
	}
	id, err := s.KernelBuildID()
	if err != nil {
		return fmt.Errorf("check %s: the patch names a vmlinux build-id but the running one cannot be read: %w", module, err)
	}
	if id != m.BuildID {
		return &MismatchError{Module: module, What: "build-id", Patch: m.BuildID, Kernel: id}
	}
	return nil
}
