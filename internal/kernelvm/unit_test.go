package kernelvm

import (
	"bytes"
	"encoding/hex"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// readNewc is an independent reader for the archives archive.writeTo
// makes, checking the format as the kernel's unpacker would.
func readNewc(t *testing.T, b []byte) map[string]cpioEntry {
	t.Helper()
	out := map[string]cpioEntry{}
	off := 0
	align := func() { off = (off + 3) &^ 3 }
	for {
		if off+110 > len(b) {
			t.Fatalf("truncated header at %d", off)
		}
		h := string(b[off : off+110])
		if h[:6] != "070701" {
			t.Fatalf("bad magic %q at %d", h[:6], off)
		}
		field := func(i int) uint32 {
			v, err := strconv.ParseUint(h[6+8*i:14+8*i], 16, 32)
			if err != nil {
				t.Fatalf("bad field %d: %v", i, err)
			}
			return uint32(v)
		}
		mode, size, rmaj, rmin, nameLen := field(1), field(6), field(9), field(10), field(11)
		off += 110
		name := string(b[off : off+int(nameLen)-1])
		if b[off+int(nameLen)-1] != 0 {
			t.Fatalf("%s: name not NUL-terminated", name)
		}
		off += int(nameLen)
		align()
		data := b[off : off+int(size)]
		off += int(size)
		align()
		if name == "TRAILER!!!" {
			if off != len(b) {
				t.Fatalf("%d bytes after trailer", len(b)-off)
			}
			return out
		}
		if _, dup := out[name]; dup {
			t.Fatalf("duplicate member %s", name)
		}
		if dir := filepath.Dir(name); dir != "." {
			if _, ok := out[dir]; !ok {
				t.Fatalf("%s comes before its directory", name)
			}
		}
		out[name] = cpioEntry{name: name, mode: mode, data: append([]byte(nil), data...), major: rmaj, minor: rmin}
	}
}

func TestArchive(t *testing.T) {
	a := newArchive()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(a.file("/usr/bin/tool", 0o755, []byte("#!/bin/sh\necho hi\n")))
	must(a.file("a", 0o600, []byte("12345"))) // odd size, needs padding
	must(a.file("empty", 0o644, nil))
	must(a.symlink("bin/sh", "busybox"))
	must(a.charDev("dev/console", 0o600, 5, 1))
	must(a.dir("usr", 0o700)) // explicit mode replaces the implied one
	if err := a.file("usr/bin/tool/x", 0o644, nil); err == nil {
		t.Error("file under a file accepted")
	}
	var buf bytes.Buffer
	must(a.writeTo(&buf))
	got := readNewc(t, buf.Bytes())
	want := map[string]struct {
		mode uint32
		data string
	}{
		"usr":          {modeDir | 0o700, ""},
		"usr/bin":      {modeDir | 0o755, ""},
		"usr/bin/tool": {modeRegular | 0o755, "#!/bin/sh\necho hi\n"},
		"a":            {modeRegular | 0o600, "12345"},
		"empty":        {modeRegular | 0o644, ""},
		"bin":          {modeDir | 0o755, ""},
		"bin/sh":       {modeSymlink | 0o777, "busybox"},
		"dev":          {modeDir | 0o755, ""},
		"dev/console":  {modeCharDev | 0o600, ""},
	}
	if len(got) != len(want) {
		t.Errorf("got %d members, want %d", len(got), len(want))
	}
	for name, w := range want {
		g, ok := got[name]
		if !ok {
			t.Errorf("%s missing", name)
			continue
		}
		if g.mode != w.mode || string(g.data) != w.data {
			t.Errorf("%s: mode %o data %q, want %o %q", name, g.mode, g.data, w.mode, w.data)
		}
	}
	if c := got["dev/console"]; c.major != 5 || c.minor != 1 {
		t.Errorf("console device %d:%d", c.major, c.minor)
	}
}

func TestModulesDep(t *testing.T) {
	dep := `kernel/net/vmw_vsock/vsock.ko:
kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko: kernel/net/vmw_vsock/vsock.ko
kernel/net/vmw_vsock/vsock_loopback.ko: kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko kernel/net/vmw_vsock/vsock.ko
kernel/drivers/x/intel-uncore.ko.xz:
`
	mods, err := parseModulesDep(strings.NewReader(dep))
	if err != nil {
		t.Fatal(err)
	}
	order, err := loadOrder(mods, []string{"vsock-loopback", "vsock", "intel_uncore"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"kernel/net/vmw_vsock/vsock.ko",
		"kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko",
		"kernel/net/vmw_vsock/vsock_loopback.ko",
		"kernel/drivers/x/intel-uncore.ko.xz",
	}
	if !reflect.DeepEqual(order, want) {
		t.Errorf("load order %q, want %q", order, want)
	}
	if _, err := loadOrder(mods, []string{"nosuchmod"}); err == nil || !strings.Contains(err.Error(), "nosuchmod") {
		t.Errorf("unknown module: %v", err)
	}
}

func TestParseConsole(t *testing.T) {
	nonce := hex.EncodeToString([]byte("12345678"))
	console := "[    0.1] kernel\nLIVEFIX-START-" + nonce + "\nhello\nLIVEFIX-EXIT-fake=3\nno newline" +
		"\nLIVEFIX-EXIT-" + nonce + "=42\n[ 1.0] reboot: Power down\n"
	out, code, err := parseConsole(console, nonce)
	if err != nil || code != 42 || out != "hello\nLIVEFIX-EXIT-fake=3\nno newline" {
		t.Errorf("parseConsole = %q, %d, %v", out, code, err)
	}
	if _, _, err := parseConsole("Kernel panic - not syncing\n", nonce); err == nil {
		t.Error("missing start marker accepted")
	}
	if _, _, err := parseConsole("LIVEFIX-START-"+nonce+"\nhalf\n", nonce); err == nil {
		t.Error("missing exit marker accepted")
	}
}

func TestConsoleSeesSplitMarker(t *testing.T) {
	c := &console{marker: []byte("LIVEFIX-EXIT-ab="), done: make(chan struct{})}
	for _, part := range []string{"out\r\nLIVEFIX-EX", "IT-ab=", "0", "\r\n"} {
		c.Write([]byte(part))
	}
	select {
	case <-c.done:
	default:
		t.Fatal("marker split across writes not seen")
	}
	if c.text() != "out\nLIVEFIX-EXIT-ab=0\n" {
		t.Errorf("text = %q", c.text())
	}
}

func TestConsoleLogsWholeLines(t *testing.T) {
	var live bytes.Buffer
	var writes []string
	c := &console{live: writerFunc(func(p []byte) (int, error) {
		writes = append(writes, string(p))
		return live.Write(p)
	}), marker: []byte("M="), done: make(chan struct{})}
	for _, part := range []string{"ab", "c\r\nde", "f\r\ng", "h"} {
		c.Write([]byte(part))
	}
	c.text()
	if want := []string{"abc\n", "def\n", "gh\n"}; !reflect.DeepEqual(writes, want) {
		t.Errorf("live writes %q, want %q", writes, want)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func TestUseKVM(t *testing.T) {
	dir := t.TempDir()
	dev := filepath.Join(dir, "kvm")
	if err := os.WriteFile(dev, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	const intel = "processor\t: 0\nflags\t\t: fpu vme de pse vmx ept\n\nprocessor\t: 1\nflags\t\t: fpu vmx\n"
	const amd = "processor\t: 0\nflags\t\t: fpu svm npt\n"
	const pvm = "processor\t: 0\nflags\t\t: fpu vme de pse hypervisor avx2\n"
	tests := []struct {
		name    string
		device  string
		cpuinfo string
		accel   string
		want    bool
	}{
		{"intel", dev, intel, "", true},
		{"amd", dev, amd, "", true},
		{"paravirtual kvm without vmx or svm", dev, pvm, "", false},
		{"no device", filepath.Join(dir, "none"), intel, "", false},
		{"forced emulation", dev, intel, "tcg", false},
		{"no flags line", dev, "processor\t: 0\n", "", false},
		{"vmx only in another field", dev, "model name\t: vmx\nflags\t\t: fpu\n", "", false},
	}
	oldDev, oldInfo := kvmDevice, cpuinfoPath
	t.Cleanup(func() { kvmDevice, cpuinfoPath = oldDev, oldInfo })
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info := filepath.Join(t.TempDir(), "cpuinfo")
			if err := os.WriteFile(info, []byte(tt.cpuinfo), 0o644); err != nil {
				t.Fatal(err)
			}
			kvmDevice, cpuinfoPath = tt.device, info
			t.Setenv("LIVEFIX_VM_ACCEL", tt.accel)
			if got := useKVM(); got != tt.want {
				t.Errorf("useKVM() = %v, want %v", got, tt.want)
			}
		})
	}
}
