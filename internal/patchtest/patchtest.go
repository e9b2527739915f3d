// Package patchtest makes small but well-formed live patch files for the
// tests of the repository and the agent: a livepatch module with the
// .modinfo and livefix_build_id a livefix-build module has, its NAME.json,
// and userspace .lfp files. They are not loadable code; kernel tests in
// the VM use modules built by livefix-build.
package patchtest

import (
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"

	"github.com/livefix/livefix/elfobj"
	"github.com/livefix/livefix/ulp"
)

// Release is the kernel release the fake patches name.
const Release = "6.1.0-test-amd64"

// KernelPatch describes a fake kernel patch.
type KernelPatch struct {
	Name    string
	Level   int
	BuildID string // hex vmlinux build-id the module checks for
	// JSONBuildID, when set, is written to NAME.json instead of BuildID.
	JSONBuildID string
	CVEs        []string
	Summary     string
	// Tag changes the module's bytes without changing its meaning.
	Tag string
}

// Write writes DIR/NAME.ko and DIR/NAME.json and returns the .ko path.
func (k KernelPatch) Write(dir string) (string, error) {
	id, err := hex.DecodeString(k.BuildID)
	if err != nil {
		return "", err
	}
	info := "name=" + k.Name + "\x00vermagic=" + Release + " SMP\x00livepatch=Y\x00livefix_level=" +
		strconv.Itoa(k.Level) + "\x00livefix_tag=" + k.Tag + "\x00"
	modinfo := &elfobj.Section{Name: ".modinfo", Type: elf.SHT_PROGBITS, Flags: elf.SHF_ALLOC, Align: 1, Data: []byte(info)}
	rodata := &elfobj.Section{Name: ".rodata", Type: elf.SHT_PROGBITS, Flags: elf.SHF_ALLOC, Align: 1, Data: append([]byte{0, 0, 0, 0}, id...)}
	f := &elfobj.File{
		Sections: []*elfobj.Section{modinfo, rodata},
		Symbols:  []*elfobj.Symbol{{Name: "livefix_build_id", Bind: elf.STB_LOCAL, Type: elf.STT_OBJECT, Section: rodata, Value: 4, Size: uint64(len(id))}},
	}
	ko := filepath.Join(dir, k.Name+".ko")
	if err := f.WriteFile(ko); err != nil {
		return "", err
	}
	jid := k.BuildID
	if k.JSONBuildID != "" {
		jid = k.JSONBuildID
	}
	m := map[string]any{"name": k.Name, "module": k.Name + ".ko", "kernel_release": Release,
		"vmlinux_build_id": jid, "level": k.Level, "replace": true}
	if len(k.CVEs) > 0 {
		m["cves"] = k.CVEs
	}
	if k.Summary != "" {
		m["summary"] = k.Summary
	}
	b, _ := json.MarshalIndent(m, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, k.Name+".json"), b, 0o644); err != nil {
		return "", err
	}
	return ko, nil
}

// UserPatch writes DIR/NAME.lfp, a patch of the object with build-id
// buildID redirecting one function, and returns its path.
func UserPatch(dir, name string, level int, buildID string) (string, error) {
	text := &elfobj.Section{Name: ".text.fixed", Type: elf.SHT_PROGBITS, Flags: elf.SHF_ALLOC | elf.SHF_EXECINSTR, Align: 16, Data: []byte{0x31, 0xc0, 0xc3}}
	obj := &elfobj.File{
		Sections: []*elfobj.Section{text},
		Symbols:  []*elfobj.Symbol{{Name: "fixed", Bind: elf.STB_GLOBAL, Type: elf.STT_FUNC, Section: text, Size: 3}},
	}
	raw, err := obj.Write()
	if err != nil {
		return "", err
	}
	p := &ulp.Patch{Name: name, Level: level, Target: ulp.Target{BuildID: buildID, Path: "/usr/lib/libtest.so"},
		Units: []ulp.Unit{{Object: "fixed.o", File: "fixed.c", ELF: raw, Funcs: []ulp.Func{{Name: "fixed", OrigName: "broken"}}}}}
	out := filepath.Join(dir, name+".lfp")
	return out, ulp.WriteFile(out, p)
}
