package patchrepo

import (
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/livefix/livefix/kernelpatch"
	"github.com/livefix/livefix/ulp"
)

// patchFile is one file of a patch level.
type patchFile struct {
	name string // file name inside the level's directory
	data []byte
}

// patch is a validated patch level, ready to publish.
type patch struct {
	kind, buildID, name, release string
	level                        int
	cves                         []string
	summary                      string
	files                        []patchFile
}

// readPatch reads and checks the patch at p: a .ko with its .json next to
// it (or the .json with its .ko), or a .lfp.
func readPatch(p string) (*patch, error) {
	switch filepath.Ext(p) {
	case ".ko":
		return readKernelPatch(p, kernelpatch.MetadataPath(p))
	case ".json":
		return readKernelPatch(strings.TrimSuffix(p, ".json")+".ko", p)
	case ".lfp":
		return readUserPatch(p)
	}
	return nil, fmt.Errorf("%w: %s: want NAME.ko (with NAME.json beside it) or NAME.lfp", ErrMalformed, p)
}

func readKernelPatch(ko, js string) (*patch, error) {
	mi, err := kernelpatch.ReadModuleInfo(ko)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if !mi.Livepatch {
		return nil, fmt.Errorf("%w: %s is not a livepatch module (no livepatch=Y in .modinfo)", ErrMalformed, ko)
	}
	modID, err := moduleBuildID(ko)
	if err != nil {
		return nil, err
	}
	jsData, err := os.ReadFile(js)
	if err != nil {
		return nil, fmt.Errorf("%w: %s needs its metadata: %w", ErrMalformed, ko, err)
	}
	md, err := kernelpatch.ReadMetadata(ko)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if md == nil || md.BuildID == "" {
		return nil, fmt.Errorf("%w: %s names no vmlinux build-id", ErrMalformed, js)
	}
	if md.BuildID != modID {
		return nil, fmt.Errorf("%w: %s says vmlinux build-id %s but %s checks for %s; rebuild the patch",
			ErrBuildIDDiffers, js, md.BuildID, ko, modID)
	}
	// The level is NAME.json's; a module that records one must agree.
	if md.Level < 1 {
		return nil, fmt.Errorf("%w: %s has no level (want 1 or more); build the patch with livefix-build kernel --level N", ErrMalformed, js)
	}
	if mi.Level != 0 && md.Level != mi.Level {
		return nil, fmt.Errorf("%w: %s says level %d but the module's .modinfo says level %d", ErrMalformed, js, md.Level, mi.Level)
	}
	if md.Name != "" && md.Name != mi.Name {
		return nil, fmt.Errorf("%w: %s names patch %q but the module is %q", ErrMalformed, js, md.Name, mi.Name)
	}
	koData, err := os.ReadFile(ko)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", ko, err)
	}
	cves, summary := descriptive(jsData)
	return &patch{
		kind: KindKernel, buildID: modID, name: mi.Name, release: md.Release, level: md.Level,
		cves: cves, summary: summary,
		files: []patchFile{{mi.Name + ".json", jsData}, {mi.Name + ".ko", koData}},
	}, nil
}

// descriptive reads the CVE ids and summary a NAME.json may carry.
func descriptive(b []byte) (cves []string, summary string) {
	var f struct {
		CVEs    []string `json:"cves"`
		CVE     []string `json:"cve"`
		Summary string   `json:"summary"`
	}
	_ = json.Unmarshal(b, &f)
	return append(f.CVEs, f.CVE...), f.Summary
}

// moduleBuildID reads the vmlinux build-id a livefix module checks for
// before it patches anything (the livefix_build_id array klp generates).
func moduleBuildID(ko string) (string, error) {
	f, err := elf.Open(ko)
	if err != nil {
		return "", fmt.Errorf("%w: %s: %w", ErrMalformed, ko, err)
	}
	defer f.Close()
	syms, err := f.Symbols()
	if err != nil {
		return "", fmt.Errorf("%w: %s: symbols: %w", ErrMalformed, ko, err)
	}
	for _, s := range syms {
		if s.Name != "livefix_build_id" {
			continue
		}
		if int(s.Section) <= 0 || int(s.Section) >= len(f.Sections) || s.Size == 0 || s.Size > 64 {
			break
		}
		data, err := f.Sections[s.Section].Data()
		if err != nil || s.Value+s.Size > uint64(len(data)) {
			break
		}
		return hex.EncodeToString(data[s.Value : s.Value+s.Size]), nil
	}
	return "", fmt.Errorf("%w: %s has no livefix_build_id; it was not built by livefix-build kernel", ErrMalformed, ko)
}

func readUserPatch(p string) (*patch, error) {
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	up, err := ulp.Decode(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrMalformed, p, err)
	}
	id, err := up.BuildID()
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrMalformed, p, err)
	}
	if up.Level < 1 {
		return nil, fmt.Errorf("%w: %s: level %d", ErrMalformed, p, up.Level)
	}
	if !nameRE().MatchString(up.Name) {
		return nil, fmt.Errorf("%w: %s: patch name %q", ErrMalformed, p, up.Name)
	}
	return &patch{
		kind: KindUser, buildID: hex.EncodeToString(id), name: up.Name, level: up.Level,
		files: []patchFile{{up.Name + ".lfp", data}},
	}, nil
}
