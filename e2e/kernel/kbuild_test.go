package kernel_test

import (
	"context"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/livefix/livefix/elfobj"
	"github.com/livefix/livefix/internal/e2etest"
	"github.com/livefix/livefix/internal/kerneltest"
	"github.com/livefix/livefix/internal/kernelvm"
)

// kbuildCase is one of issue 11's build-side cases: a patch under
// testdata/kbuild built with livefix-build kernel, then exercised in the
// guest by kbuildScript.
type kbuildCase struct {
	name  string
	patch string
	// check inspects the built module on the host.
	check func(t *testing.T, ko *elfobj.File)
	// funcs, when set, are exactly the functions the manifest replaces.
	funcs []string
}

var kbuildCases = []kbuildCase{
	// A patch to algif_hash whose patched hash_sendmsg calls af_alg's
	// exports: livepatch relocations of object algif_hash against
	// .klp.sym.af_alg symbols, no dependency of the patch on af_alg.
	{name: "kb_algif", patch: "algif-late-module.patch", check: func(t *testing.T, ko *elfobj.File) {
		requireKlpSym(t, ko, ".klp.rela.algif_hash.", ".klp.sym.af_alg.af_alg_make_sg,0")
		requireKlpSym(t, ko, ".klp.rela.algif_hash.", ".klp.sym.af_alg.af_alg_free_sg,0")
		if d := modinfo(ko, "depends"); d != "" {
			t.Errorf("kb_algif depends on %q, want no module dependencies", d)
		}
	}},
	// cmac imports CRYPTO_INTERNAL for crypto_cipher_encrypt_one; so must
	// the patch, or modpost stops the build.
	{name: "kb_cmac", patch: "cmac-namespace.patch", check: func(t *testing.T, ko *elfobj.File) {
		if ns := modinfo(ko, "import_ns"); ns != "CRYPTO_INTERNAL" {
			t.Errorf("kb_cmac imports namespaces %q, want CRYPTO_INTERNAL", ns)
		}
	}},
	// The patched bm_status_read takes the address of the module's exit
	// function, which the object also names cleanup_module.
	{name: "kb_alias", patch: "binfmt-exit-alias.patch", check: func(t *testing.T, ko *elfobj.File) {
		requireKlpSym(t, ko, ".klp.rela.binfmt_misc.", ".klp.sym.binfmt_misc.exit_misc_binfmt,0")
	}},
	// A patch written for kpatch-build: #include "kpatch-macros.h", the
	// four callbacks, KPATCH_IGNORE_FUNCTION(c_stop) for a changed
	// function the author keeps out.
	{name: "kb_kpatch", patch: "kpatch-callbacks.patch", check: func(t *testing.T, ko *elfobj.File) {
		for _, s := range ko.Sections {
			if strings.HasPrefix(s.Name, ".livefix.") {
				t.Errorf("kb_kpatch still has the marker section %s", s.Name)
			}
		}
		for _, cb := range []string{"kb_pre_patch", "kb_post_patch", "kb_pre_unpatch", "kb_post_unpatch"} {
			if s := ko.SymbolByName("livefix_u0_" + cb); s == nil || s.Section == nil {
				t.Errorf("kb_kpatch lacks the callback %s", cb)
			}
		}
	}, funcs: []string{"show_console_dev"}},
	// The patched tipc_sk_create has tipc's own tracepoint: its jump
	// entry and static-call site must not reach .klp.rela sections.
	{name: "kb_tipc", patch: "tipc-tracepoint.patch", check: func(t *testing.T, ko *elfobj.File) {
		requireKlpSym(t, ko, ".klp.rela.tipc.", ".klp.sym.tipc.__SCT__tp_func_tipc_sk_create,0")
		for _, s := range ko.Sections {
			if s.Name == ".klp.rela.tipc.__jump_table" || s.Name == ".klp.rela.tipc..static_call_sites" {
				t.Errorf("kb_tipc has %s, which the kernel would process before tipc's symbols are resolved", s.Name)
			}
			if s.IsRela() && s.Target != nil && (s.Target.Name == "__jump_table" || s.Target.Name == ".static_call_sites") {
				for _, r := range s.Relocs {
					if r.Sym != nil && strings.HasPrefix(r.Sym.Name, ".klp.sym.") {
						t.Errorf("kb_tipc: %s refers to %s", s.Target.Name, r.Sym.Name)
					}
				}
			}
		}
	}},
}

// requireKlpSym checks that some .klp.rela section whose name starts with
// prefix has a relocation against the livepatch symbol sym.
func requireKlpSym(t *testing.T, ko *elfobj.File, prefix, sym string) {
	t.Helper()
	for _, s := range ko.Sections {
		if !strings.HasPrefix(s.Name, prefix) || s.Flags&elfobj.SHFRelaLivepatch == 0 {
			continue
		}
		for _, r := range s.Relocs {
			if r.Sym != nil && r.Sym.Name == sym && r.Sym.Shndx == elfobj.SHNLivepatch {
				return
			}
		}
	}
	t.Errorf("no %s* section relocates against %s", prefix, sym)
}

// modinfo returns the values of key in the module's .modinfo, joined by
// commas.
func modinfo(ko *elfobj.File, key string) string {
	var vals []string
	for _, s := range ko.Sections {
		if s.Name != ".modinfo" || s.Type == elf.SHT_NOBITS {
			continue
		}
		for _, kv := range strings.Split(string(s.Data), "\x00") {
			if v, ok := strings.CutPrefix(kv, key+"="); ok && v != "" {
				vals = append(vals, v)
			}
		}
	}
	return strings.Join(vals, ",")
}

// TestKbuildCases is issue 11's build side, proven on the packaged kernel:
// every case is built with livefix-build kernel from a patch to the
// Debian tree, checked on the host, and all run in one boot: loaded,
// patched behaviour checked, disabled, original behaviour back, unloaded.
// The algif_hash and tipc patches load before their modules (late module
// patching).
func TestKbuildCases(t *testing.T) {
	tgt := kerneltest.RequireVM(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	tmp := t.TempDir()
	livefix, livefixBuild := e2etest.Tools(t)
	outDir := filepath.Join(tmp, "patches")

	helper := filepath.Join(tmp, "lfkb")
	if b, err := exec.CommandContext(ctx, "gcc", "-static", "-O2", "-Wall", "-o", helper, filepath.Join("testdata", "kbuild", "lfkb.c")).CombinedOutput(); err != nil {
		t.Fatalf("build the guest helper: %v\n%s", err, b)
	}

	files := map[string]string{"/bin/livefix": livefix, "/bin/lfkb": helper}
	var names []string
	var args [][]string
	for _, c := range kbuildCases {
		names = append(names, c.name)
		args = append(args, []string{"--name", c.name, "-o", outDir, "--patch", filepath.Join("testdata", "kbuild", c.patch)})
	}
	buildPatches(ctx, t, livefixBuild, names, args)
	for _, c := range kbuildCases {
		ko, err := elfobj.Open(filepath.Join(outDir, c.name+".ko"))
		if err != nil {
			t.Fatal(err)
		}
		c.check(t, ko)
		if c.funcs != nil {
			checkManifest(t, acceptanceCase{name: c.name, changed: c.funcs}, filepath.Join(outDir, c.name+".json"), tgt.Release)
		}
		for _, ext := range []string{".ko", ".json"} {
			files["/root/p/"+c.name+ext] = filepath.Join(outDir, c.name+ext)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	res, err := kernelvm.Run(ctx, kernelvm.Config{
		Target:  tgt,
		Script:  kbuildScript,
		Files:   files,
		Modules: []string{"af_alg", "algif_hash", "cmac", "binfmt_misc", "tipc"},
		Timeout: 10 * time.Minute,
		Log:     e2etest.GuestLog(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	checkGuestResults(t, res.Output, res.ExitCode, kbuildChecks)
	t.Logf("guest ran in %s", res.Duration.Round(time.Second))
	if testing.Verbose() {
		_ = os.WriteFile(filepath.Join(tmp, "guest.log"), []byte(res.Console), 0o644)
	}
}

// kbuildScript runs the cases in the guest; see checkGuestResults.
const kbuildScript = e2etest.GuestShell + `
P=/root/p
M=/lib/modules
load() { livefix kernel load --timeout 120s $P/$1.ko; }
disable() { livefix kernel disable --timeout 120s $1; }
unload() { livefix kernel unload --timeout 120s $1; }
ins() { insmod $M/$1.ko; }
state() { livefix kernel list --json | tr -d ' \n'; }

echo "== kb_algif: the patch first, af_alg and algif_hash loaded later"
C=kb_algif
A100=$(printf '%0100d' 0 | tr 0 a)
SHA100=$(printf '%s' "$A100" | sha256sum | cut -d' ' -f1)
t algif/no-modules eval '[ ! -e /sys/module/algif_hash ] && [ ! -e /sys/module/af_alg ]'
t algif/load load $C
t algif/pending has "$(state)" '"name":"algif_hash","patched":false'
t algif/no-dependency eval '[ ! -e /sys/module/af_alg ]'
t algif/insmod-af_alg ins af_alg
t algif/insmod-algif_hash ins algif_hash
t algif/patched has "$(state)" '"name":"algif_hash","patched":true'
t algif/after-small eq "$(lfkb hash sha256 - abc)" ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
t algif/after-large eq "$(lfkb hash sha256 - $A100)" "error: write: Message too long"
t algif/disable disable $C
t algif/rollback eq "$(lfkb hash sha256 - $A100)" "$SHA100"
t algif/unload unload $C
t algif/gone gone $C

echo "== kb_cmac: a patch importing cmac's namespace CRYPTO_INTERNAL"
C=kb_cmac
K=2b7e151628aed2a6abf7158809cf4f3c
B=hex:6bc1bee22e409f96e93d7e117393172a
t cmac/insmod ins cmac
t cmac/before eq "$(lfkb hash 'cmac(aes)' $K -)" bb1d6929e95937287fa37d129b756746
t cmac/load load $C
t cmac/after-empty eq "$(lfkb hash 'cmac(aes)' $K -)" 441d6929e95937287fa37d129b756746
t cmac/after-block eq "$(lfkb hash 'cmac(aes)' $K $B)" f80a16b46b4d4144f79bdd9dd04a287c
t cmac/disable disable $C
t cmac/rollback eq "$(lfkb hash 'cmac(aes)' $K $B)" 070a16b46b4d4144f79bdd9dd04a287c
t cmac/unload unload $C
t cmac/gone gone $C

echo "== kb_alias: the module's exit function, aliased cleanup_module"
C=kb_alias
mkdir -p /tmp/bm
t alias/insmod ins binfmt_misc
t alias/mount mount -t binfmt_misc none /tmp/bm
t alias/before eq "$(cat /tmp/bm/status)" enabled
t alias/load load $C
EXIT=$(grep ' exit_misc_binfmt' /proc/kallsyms | cut -d' ' -f1)
echo "exit_misc_binfmt at $EXIT"
t alias/after eq "$(cat /tmp/bm/status)" "enabled exit=$EXIT"
t alias/disable disable $C
t alias/rollback eq "$(cat /tmp/bm/status)" enabled
t alias/unload unload $C
t alias/gone gone $C
umount /tmp/bm
t alias/rmmod rmmod binfmt_misc

echo "== kb_kpatch: a kpatch-style patch: callbacks in order, an ignored function"
C=kb_kpatch
cb() { dmesg | grep -o 'kb_kpatch: [a-z_]* vmlinux[ a-z=0-9]*' | tr '\n' ';'; }
t kpatch/before eval '! grep -q kb_kpatch /proc/consoles'
t kpatch/load load $C
t kpatch/patch-callbacks eq "$(cb)" "kb_kpatch: pre_patch vmlinux;kb_kpatch: post_patch vmlinux state=2;"
t kpatch/after has "$(cat /proc/consoles)" "kb_kpatch state=2"
t kpatch/c_stop-not-patched eq "$(ls /sys/kernel/livepatch/$C/vmlinux | grep -E '^(c_stop|show_console_dev),')" "show_console_dev,1"
t kpatch/disable disable $C
t kpatch/unpatch-callbacks eq "$(cb)" "kb_kpatch: pre_patch vmlinux;kb_kpatch: post_patch vmlinux state=2;kb_kpatch: pre_unpatch vmlinux;kb_kpatch: post_unpatch vmlinux;"
t kpatch/rollback eval '! grep -q kb_kpatch /proc/consoles'
t kpatch/unload unload $C
t kpatch/gone gone $C

echo "== kb_tipc: a module tracepoint in the patched function, tipc loaded later"
C=kb_tipc
TR=/sys/kernel/debug/tracing
events() { grep -c 'tipc_sk_create:' $TR/trace; }
t tipc/load load $C
t tipc/pending has "$(state)" '"name":"tipc","patched":false'
t tipc/insmod eval 'ins udp_tunnel && ins ip6_udp_tunnel && ins tipc'
t tipc/patched has "$(state)" '"name":"tipc","patched":true'
t tipc/after-dgram eq "$(lfkb tipc dgram)" "error: socket: Protocol wrong type for socket"
t tipc/after-rdm eq "$(lfkb tipc rdm)" ok
t tipc/trace-on eval "echo 1 > $TR/events/tipc/tipc_sk_create/enable"
t tipc/traced-stream eq "$(lfkb tipc stream)" ok
# The patched copy carries no jump entry for the tracepoint: it stays off.
t tipc/no-event-patched eq "$(events)" 0
t tipc/disable disable $C
t tipc/rollback eq "$(lfkb tipc dgram)" ok
t tipc/event-original [ "$(events)" -ge 1 ]
echo 0 > $TR/events/tipc/tipc_sk_create/enable
t tipc/unload unload $C
t tipc/gone gone $C
t end/none-left eq "$(ls /sys/kernel/livepatch)" ""
`

// kbuildChecks are the names the guest must report as passed.
var kbuildChecks = []string{
	"algif/no-modules", "algif/load", "algif/pending", "algif/no-dependency", "algif/insmod-af_alg", "algif/insmod-algif_hash",
	"algif/patched", "algif/after-small", "algif/after-large", "algif/disable", "algif/rollback", "algif/unload", "algif/gone",
	"cmac/insmod", "cmac/before", "cmac/load", "cmac/after-empty", "cmac/after-block", "cmac/disable", "cmac/rollback", "cmac/unload", "cmac/gone",
	"alias/insmod", "alias/mount", "alias/before", "alias/load", "alias/after", "alias/disable", "alias/rollback", "alias/unload", "alias/gone", "alias/rmmod",
	"kpatch/before", "kpatch/load", "kpatch/patch-callbacks", "kpatch/after", "kpatch/c_stop-not-patched", "kpatch/disable",
	"kpatch/unpatch-callbacks", "kpatch/rollback", "kpatch/unload", "kpatch/gone",
	"tipc/load", "tipc/pending", "tipc/insmod", "tipc/patched", "tipc/after-dgram", "tipc/after-rdm", "tipc/trace-on", "tipc/traced-stream",
	"tipc/no-event-patched", "tipc/disable", "tipc/rollback", "tipc/event-original", "tipc/unload", "tipc/gone",
	"end/none-left",
}
