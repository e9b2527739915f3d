package kernelpatch

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/livefix/livefix/elfobj"
)

const (
	fakeRelease = "6.1.0-99-amd64"
	fakeBuildID = "00112233445566778899aabbccddeeff00112233"
)

// fakeKernel simulates the livepatch core behind a sysfs-like directory
// tree: finit_module registers a patch and starts its transition, writes
// to enabled (through System.WriteAttr) start or reverse transitions, a finished unpatching
// transition frees the patch, and delete_module refuses while the patch
// holds the module.
type fakeKernel struct {
	t       *testing.T
	root    string
	sys     *System
	mu      sync.Mutex
	patches map[string]*fakePatch
	// stuck makes transitions in the given direction (true: patching)
	// never finish, like a task sleeping in a patched function.
	stuck map[bool]bool
	// loadErr makes finit_module fail.
	loadErr error
	// funcs are the functions a loaded patch reports.
	funcs []string
	stop  chan struct{}
	done  chan struct{}
}

type fakePatch struct {
	enabled    bool // the state the transition goes to
	transition bool
	finishAt   time.Time
	replace    bool
}

func newFakeKernel(t *testing.T) *fakeKernel {
	root := t.TempDir()
	k := &fakeKernel{t: t, root: root, patches: map[string]*fakePatch{}, stuck: map[bool]bool{},
		funcs: []string{"cmdline_proc_show,1"}, stop: make(chan struct{}), done: make(chan struct{})}
	for _, d := range []string{"livepatch", "proc/1/task/1", "proc/42/task/43", "module", "state"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	k.write("proc/1/task/1/comm", "init\n")
	k.write("proc/1/task/1/patch_state", "-1\n")
	k.write("proc/42/task/43/comm", "sleeper\n")
	k.write("proc/42/task/43/patch_state", "-1\n")
	k.write("proc/42/task/43/stack", "[<0>] do_nanosleep+0x6d/0x150\n[<0>] hrtimer_nanosleep+0x96/0x150\n")
	k.write("notes", string(buildIDNote(t, fakeBuildID)))
	k.sys = &System{
		Livepatch: filepath.Join(root, "livepatch"),
		Proc:      filepath.Join(root, "proc"),
		Notes:     filepath.Join(root, "notes"),
		Module:    filepath.Join(root, "module"),
		StateDir:  filepath.Join(root, "state"),
		LoadModule: func(f *os.File, params string) error {
			return k.load(f.Name())
		},
		DeleteModule: k.deleteModule,
		Release:      func() (string, error) { return fakeRelease, nil },
		WriteAttr:    k.writeAttr,
	}
	go k.run()
	t.Cleanup(func() { close(k.stop); <-k.done })
	return k
}

// write replaces a file atomically, as sysfs attributes read.
func (k *fakeKernel) write(rel, content string) {
	k.t.Helper()
	path := filepath.Join(k.root, rel)
	if err := os.WriteFile(path+".tmp", []byte(content), 0o644); err != nil {
		k.t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		k.t.Fatal(err)
	}
}

// writeAttr is the enabled attribute's store handler: it reverses a
// running transition or starts an unpatching one, synchronously.
func (k *fakeKernel) writeAttr(path, value string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	name := filepath.Base(filepath.Dir(path))
	p, ok := k.patches[name]
	if !ok || filepath.Base(path) != "enabled" {
		return syscall.ENOENT
	}
	want := value == "1"
	if want == p.enabled {
		return syscall.EINVAL
	}
	if !p.transition && want {
		return syscall.EINVAL // a disabled patch cannot be enabled again
	}
	p.enabled = want
	p.transition = true
	p.finishAt = time.Now().Add(20 * time.Millisecond)
	k.write(filepath.Join("livepatch", name, "enabled"), value+"\n")
	k.write(filepath.Join("livepatch", name, "transition"), "1\n")
	return nil
}

func (k *fakeKernel) load(path string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.loadErr != nil {
		return k.loadErr
	}
	mi, err := ReadModuleInfo(path)
	if err != nil {
		return syscall.ENOEXEC
	}
	if _, err := os.Stat(filepath.Join(k.root, "module", mi.Name)); err == nil {
		return syscall.EEXIST
	}
	if err := os.MkdirAll(filepath.Join(k.root, "module", mi.Name), 0o755); err != nil {
		return err
	}
	if !mi.Livepatch {
		return nil
	}
	dir := filepath.Join("livepatch", mi.Name)
	for _, f := range k.funcs {
		if err := os.MkdirAll(filepath.Join(k.root, dir, "vmlinux", f), 0o755); err != nil {
			return err
		}
	}
	k.write(dir+"/vmlinux/patched", "1\n")
	k.write(dir+"/enabled", "1\n")
	k.write(dir+"/transition", "1\n")
	k.write("proc/42/task/43/patch_state", "0\n") // the sleeper still runs the old code
	k.patches[mi.Name] = &fakePatch{enabled: true, transition: true, finishAt: time.Now().Add(20 * time.Millisecond),
		replace: strings.Contains(mi.Name, "replace")}
	return nil
}

func (k *fakeKernel) deleteModule(name string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, ok := k.patches[name]; ok {
		return syscall.EBUSY
	}
	dir := filepath.Join(k.root, "module", name)
	if _, err := os.Stat(dir); err != nil {
		return syscall.ENOENT
	}
	return os.RemoveAll(dir)
}

// run is the fake's "kernel thread": it reacts to writes to enabled and
// finishes transitions.
func (k *fakeKernel) run() {
	defer close(k.done)
	for {
		select {
		case <-k.stop:
			return
		case <-time.After(time.Millisecond):
		}
		k.mu.Lock()
		for name, p := range k.patches {
			dir := filepath.Join("livepatch", name)
			if p.transition && !k.stuck[p.enabled] && time.Now().After(p.finishAt) {
				if p.enabled && p.replace {
					// As klp_complete_transition: replaced patches are
					// disabled before the transition flag drops.
					for other := range k.patches {
						if other != name {
							k.write(filepath.Join("livepatch", other, "enabled"), "0\n")
							os.RemoveAll(filepath.Join(k.root, "livepatch", other))
							delete(k.patches, other)
						}
					}
				}
				p.transition = false
				k.write(dir+"/transition", "0\n")
				k.write("proc/42/task/43/patch_state", "-1\n")
				if !p.enabled {
					os.RemoveAll(filepath.Join(k.root, dir))
					delete(k.patches, name)
				}
			}
		}
		k.mu.Unlock()
	}
}

func (k *fakeKernel) loaded(name string) bool {
	_, err := os.Stat(filepath.Join(k.root, "module", name))
	return err == nil
}

// buildIDNote returns an ELF note section holding a GNU build-id.
func buildIDNote(t *testing.T, id string) []byte {
	var b bytes.Buffer
	le := func(v uint32) { b.Write([]byte{byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24)}) }
	// An unrelated note first, as the kernel has (Xen, Linux).
	le(6)
	le(4)
	le(1)
	b.WriteString("Linux\x00\x00\x00")
	b.WriteString("abcd")
	raw := make([]byte, len(id)/2)
	for i := range raw {
		var v byte
		for _, c := range id[2*i : 2*i+2] {
			v <<= 4
			if c >= 'a' {
				v |= byte(c-'a') + 10
			} else {
				v |= byte(c - '0')
			}
		}
		raw[i] = v
	}
	le(4)
	le(uint32(len(raw)))
	le(3)
	b.WriteString("GNU\x00")
	b.Write(raw)
	return b.Bytes()
}

// writeModule writes a minimal relocatable object with a .modinfo
// section, and metadata next to it unless meta is nil.
func writeModule(t *testing.T, dir, name string, livepatch bool, meta map[string]any) string {
	t.Helper()
	info := "name=" + name + "\x00vermagic=" + fakeRelease + " SMP\x00"
	if livepatch {
		info += "livepatch=Y\x00"
	}
	f := &elfobj.File{Sections: []*elfobj.Section{{Name: ".modinfo", Type: elf.SHT_PROGBITS, Flags: elf.SHF_ALLOC, Align: 1, Data: []byte(info)}}}
	path := filepath.Join(dir, name+".ko")
	if err := f.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	if meta != nil {
		b, _ := json.Marshal(meta)
		if err := os.WriteFile(MetadataPath(path), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

func TestLoad(t *testing.T) {
	good := map[string]any{"release": fakeRelease, "build_id": fakeBuildID, "level": 3}
	tests := []struct {
		name      string
		livepatch bool
		meta      map[string]any
		stuck     map[bool]bool
		loadErr   error
		timeout   time.Duration
		// want
		outcome    Outcome
		errHas     []string
		mismatch   bool
		loadedLeft bool // module still loaded afterwards
	}{
		{name: "applies", livepatch: true, meta: good, outcome: Applied, loadedLeft: true},
		{name: "no metadata applies with a note", livepatch: true, outcome: Applied, loadedLeft: true},
		{name: "other release", livepatch: true, meta: map[string]any{"release": "5.10.0-1-amd64", "level": 1},
			outcome: Unchanged, mismatch: true, errHas: []string{"release 5.10.0-1-amd64", fakeRelease, "nothing was loaded"}},
		{name: "other build-id", livepatch: true, meta: map[string]any{"release": fakeRelease, "build_id": strings.Repeat("ab", 20)},
			outcome: Unchanged, mismatch: true, errHas: []string{"build-id", fakeBuildID}},
		{name: "metadata without release", livepatch: true, meta: map[string]any{"level": 1},
			outcome: Unchanged, errHas: []string{"no kernel release"}},
		{name: "not a live patch", livepatch: false, meta: good, outcome: Unchanged, errHas: []string{"not a live patch"}},
		{name: "kernel refuses", livepatch: true, meta: good, loadErr: syscall.ENOEXEC,
			outcome: Unchanged, errHas: []string{"finit_module", "nothing was loaded"}},
		{name: "stuck transition rolls back", livepatch: true, meta: good, stuck: map[bool]bool{true: true}, timeout: 200 * time.Millisecond,
			outcome: RolledBack, errHas: []string{"did not complete", "sleeper[43] in do_nanosleep", "rolled back", "as before"}},
		{name: "stuck both ways is reported", livepatch: true, meta: good, stuck: map[bool]bool{true: true, false: true}, timeout: 100 * time.Millisecond,
			outcome: Incomplete, errHas: []string{"reverse transition did not finish", "still loaded"}, loadedLeft: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := newFakeKernel(t)
			k.stuck = tt.stuck
			k.loadErr = tt.loadErr
			if k.stuck == nil {
				k.stuck = map[bool]bool{}
			}
			path := writeModule(t, t.TempDir(), "lf_test", tt.livepatch, tt.meta)
			var progress bytes.Buffer
			res, err := k.sys.Load(context.Background(), path, Options{Timeout: tt.timeout, Progress: &progress, SlowAfter: time.Millisecond})
			t.Logf("progress:\n%s", progress.String())
			if res == nil {
				t.Fatalf("nil result (err %v)", err)
			}
			if res.Outcome != tt.outcome {
				t.Errorf("outcome %q, want %q (err %v)", res.Outcome, tt.outcome, err)
			}
			if (tt.outcome == Applied) != (err == nil) {
				t.Errorf("err = %v", err)
			}
			for _, s := range tt.errHas {
				if err == nil || !strings.Contains(err.Error(), s) {
					t.Errorf("error %v does not mention %q", err, s)
				}
			}
			var mm *MismatchError
			if errors.As(err, &mm) != tt.mismatch {
				t.Errorf("MismatchError: %v, want %v", errors.As(err, &mm), tt.mismatch)
			}
			if got := k.loaded("lf_test"); got != tt.loadedLeft {
				t.Errorf("module loaded afterwards: %v, want %v", got, tt.loadedLeft)
			}
			if tt.outcome == Applied {
				p, err := k.sys.Get("lf_test")
				if err != nil {
					t.Fatal(err)
				}
				wantLevel := 0
				if tt.meta != nil {
					wantLevel = 3
				}
				if !p.Enabled || p.Transition || !p.Livefix || p.Level != wantLevel || len(p.Objects) != 1 ||
					p.Objects[0].Name != "vmlinux" || len(p.Objects[0].Functions) != 1 ||
					p.Objects[0].Functions[0] != (Function{Name: "cmdline_proc_show", Sympos: 1}) {
					t.Errorf("patch after load: %+v", p)
				}
				if tt.meta == nil && len(res.Notes) == 0 {
					t.Errorf("no note about the missing metadata")
				}
			}
		})
	}
}

func TestLoadTwiceAndReplace(t *testing.T) {
	k := newFakeKernel(t)
	dir := t.TempDir()
	meta := func(level int) map[string]any { return map[string]any{"release": fakeRelease, "level": level} }
	l1 := writeModule(t, dir, "lf_l1", true, meta(1))
	l2 := writeModule(t, dir, "lf_l2_replace", true, meta(2))
	ctx := context.Background()
	if _, err := k.sys.Load(ctx, l1, Options{}); err != nil {
		t.Fatal(err)
	}
	res, err := k.sys.Load(ctx, l1, Options{})
	if err == nil || res.Outcome != Unchanged || !strings.Contains(err.Error(), "already loaded") {
		t.Errorf("second load: %v %v", res.Outcome, err)
	}
	if rel, level, err := k.sys.Version(); err != nil || FormatVersion(rel, level) != fakeRelease+"+livefix1" {
		t.Errorf("version after level 1: %s %d %v", rel, level, err)
	}
	res, err = k.sys.Load(ctx, l2, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Replaced) != 1 || res.Replaced[0] != "lf_l1" || k.loaded("lf_l1") {
		t.Errorf("replace: replaced %v, lf_l1 loaded %v, notes %v", res.Replaced, k.loaded("lf_l1"), res.Notes)
	}
	if rel, level, _ := k.sys.Version(); FormatVersion(rel, level) != fakeRelease+"+livefix2" {
		t.Errorf("version after level 2: %s", FormatVersion(rel, level))
	}
	list, err := k.sys.List()
	if err != nil || len(list) != 1 || list[0].Name != "lf_l2_replace" {
		t.Errorf("list after replace: %+v %v", list, err)
	}
}

func TestDisableUnload(t *testing.T) {
	tests := []struct {
		name        string
		op          string // "disable" or "unload"
		stuckUnpach bool
		outcome     Outcome
		wantErr     bool
		patchLeft   bool
		moduleLeft  bool
	}{
		{name: "disable", op: "disable", outcome: Disabled, moduleLeft: true},
		{name: "unload", op: "unload", outcome: Unloaded},
		{name: "disable stuck reverts to enabled", op: "disable", stuckUnpach: true, outcome: RolledBack, wantErr: true, patchLeft: true, moduleLeft: true},
		{name: "unload stuck keeps everything", op: "unload", stuckUnpach: true, outcome: RolledBack, wantErr: true, patchLeft: true, moduleLeft: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := newFakeKernel(t)
			path := writeModule(t, t.TempDir(), "lf_d", true, map[string]any{"release": fakeRelease, "level": 1})
			ctx := context.Background()
			if _, err := k.sys.Load(ctx, path, Options{}); err != nil {
				t.Fatal(err)
			}
			k.mu.Lock()
			k.stuck[false] = tt.stuckUnpach
			k.mu.Unlock()
			o := Options{Timeout: 150 * time.Millisecond}
			var res *Result
			var err error
			if tt.op == "disable" {
				res, err = k.sys.Disable(ctx, "lf_d", o)
			} else {
				res, err = k.sys.Unload(ctx, "lf_d", o)
			}
			if (err != nil) != tt.wantErr || res.Outcome != tt.outcome {
				t.Errorf("%s: outcome %q err %v, want %q (error %v)", tt.op, res.Outcome, err, tt.outcome, tt.wantErr)
			}
			if k.sys.exists("lf_d") != tt.patchLeft || k.loaded("lf_d") != tt.moduleLeft {
				t.Errorf("afterwards: patch %v module %v, want %v %v", k.sys.exists("lf_d"), k.loaded("lf_d"), tt.patchLeft, tt.moduleLeft)
			}
			if tt.patchLeft {
				if enabled, _, _ := k.sys.state("lf_d"); !enabled {
					t.Errorf("patch left disabled after a rolled back %s", tt.op)
				}
			}
		})
	}
}

func TestErrorsOnUnknownPatches(t *testing.T) {
	k := newFakeKernel(t)
	ctx := context.Background()
	tests := []struct {
		name string
		run  func() (*Result, error)
		has  string
	}{
		{"disable unknown", func() (*Result, error) { return k.sys.Disable(ctx, "nope", Options{}) }, "no such live patch"},
		{"unload unknown", func() (*Result, error) { return k.sys.Unload(ctx, "nope", Options{}) }, "no module nope"},
		{"bad name", func() (*Result, error) { return k.sys.Unload(ctx, "../etc", Options{}) }, "invalid live patch name"},
		{"load missing file", func() (*Result, error) { return k.sys.Load(ctx, "/nonexistent/x.ko", Options{}) }, "nothing was loaded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := tt.run()
			if err == nil || !strings.Contains(err.Error(), tt.has) || res.Outcome != Unchanged {
				t.Errorf("got %v / %v, want an error with %q and outcome unchanged", res.Outcome, err, tt.has)
			}
		})
	}
}

// TestKmsgLinesDoesNotWait: at the end of the kernel log, reading it
// answers EAGAIN; explaining a refused load must not wait for a next
// message that may never come. A FIFO with a writer open and nothing
// written behaves the same way.
func TestKmsgLinesDoesNotWait(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "kmsg")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	w, err := os.OpenFile(fifo, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	s := &System{Kmsg: fifo}
	done := make(chan []string, 1)
	go func() { done <- s.kmsgLines(6, "livepatch") }()
	select {
	case lines := <-done:
		if len(lines) != 0 {
			t.Fatalf("lines %q from an empty log", lines)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("kmsgLines still reading an empty log after 10s")
	}
	// With a record in it, the record is found.
	if _, err := w.WriteString("4,123,456,-;livepatch: lf_x: oops\n"); err != nil {
		t.Fatal(err)
	}
	if lines := s.kmsgLines(6, "livepatch"); len(lines) != 1 || lines[0] != "livepatch: lf_x: oops" {
		t.Fatalf("lines %q", lines)
	}
}
