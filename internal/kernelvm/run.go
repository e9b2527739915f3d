package kernelvm

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/livefix/livefix/internal/kbuild"
)

// ErrTimeout is wrapped by Run's error when the guest did not finish in time.
var ErrTimeout = errors.New("vm timed out")

// Config describes one guest run.
type Config struct {
	Target  kbuild.Target     // kernel to boot (Vmlinuz, Release)
	Script  string            // /bin/sh script run as root inside the guest after mounts; its exit status is returned
	Files   map[string]string // guest path -> host path (files, or directories copied recursively); modes preserved
	Modules []string          // modules of /lib/modules/RELEASE to include with their dependencies, at /lib/modules/NAME.ko
	Memory  int               // MiB, default 1024
	Timeout time.Duration     // default 3 minutes; then qemu is killed and Run fails with the output so far
	Log     io.Writer         // optional live copy of the console output
	Cmdline string            // extra kernel command-line arguments, after DefaultCmdline
	// BootTimeout bounds the boot up to the script's start (default 3
	// minutes, or Timeout if shorter). A guest that has not started the
	// script by then is killed and booted again, up to BootAttempts in
	// all: under emulation on a loaded machine the Debian kernel
	// occasionally hangs early in boot (a soft lockup in its crypto self
	// tests: e2e/host's kill trials hung so in one make test run of
	// four), and nothing of the test has run yet, so booting again is
	// safe. The deadline must be far longer than any boot: a guest
	// killed just as it printed the start marker may have begun the
	// script.
	BootTimeout time.Duration
	// Disks are raw image files attached as virtio-blk drives, in order
	// /dev/vda, /dev/vdb, ...; the guest needs Modules virtio_pci and
	// virtio_blk (and e.g. ext4) loaded by the script. Writes persist in
	// the file, also when qemu is killed (a power cut for the guest).
	Disks []string
}

// BootAttempts is how many times Run boots a guest that hangs before its
// script starts (Config.BootTimeout).
const BootAttempts = 3

// ErrBootHung is wrapped by Run's error when every boot hung before the
// script started.
var ErrBootHung = errors.New("vm: the guest hung before its script started")

// Result is what a guest run produced.
type Result struct {
	Output   string        // what the script wrote to stdout and stderr
	Console  string        // the whole serial console: kernel messages, init, the script
	ExitCode int           // the script's exit status
	Duration time.Duration // from starting qemu to its exit
}

// DefaultCmdline is the kernel command line of every guest; Config.Cmdline
// is appended to it. no_timer_check: under emulation on a loaded machine
// the kernel's IO-APIC timer check can fail ("IO-APIC + timer doesn't
// work", a panic before init) when the emulated timer ticks late.
const DefaultCmdline = "console=ttyS0 quiet panic=-1 no_timer_check"

// Guest paths of what Run puts into the initramfs besides Config.Files.
const (
	ScriptPath    = "/livefix/script.sh"      // the test's script
	ModuleDir     = "/lib/modules"            // modules from Config.Modules, uncompressed
	LoadOrderPath = "/lib/modules/load-order" // their guest paths, one per line, dependencies first
)

// Host paths, variables so that a test can point them elsewhere.
var (
	busyboxPath = "/bin/busybox"
	modulesRoot = "/lib/modules"
	kvmDevice   = "/dev/kvm"
	cpuinfoPath = "/proc/cpuinfo"
	onStart     = func(pid int) {} // tests watch the qemu process through this
)

const initScript = `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin HOME=/root TERM=dumb
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t debugfs debugfs /sys/kernel/debug
mount -t tmpfs tmpfs /tmp
ip link set lo up
cd /root
echo "LIVEFIX-START-@NONCE@"
/bin/sh ` + ScriptPath + ` </dev/null 2>&1
rc=$?
printf '\nLIVEFIX-EXIT-@NONCE@=%d\n' "$rc"
sync
poweroff -f
`

// Run boots c.Target's kernel in qemu with an initramfs holding busybox,
// c.Files and c.Modules, runs c.Script in it and returns its output and
// exit status. The guest has proc, sysfs, devtmpfs, debugfs and a tmpfs on
// /tmp mounted and loopback up. On error the Result, if not nil, holds the
// output so far.
func Run(ctx context.Context, c Config) (*Result, error) {
	if c.Memory == 0 {
		c.Memory = 1024
	}
	if c.Timeout == 0 {
		c.Timeout = 3 * time.Minute
	}
	if c.Target.Vmlinuz == "" {
		return nil, errors.New("vm: no kernel image in Config.Target (use kbuild.DefaultTarget)")
	}
	if _, err := os.Stat(c.Target.Vmlinuz); err != nil {
		return nil, fmt.Errorf("vm: kernel image: %w; run `make setup`", err)
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		return nil, errors.New("vm: qemu-system-x86_64 not found; run `make setup` to install qemu-system-x86")
	}
	var nonceBytes [8]byte
	if _, err := rand.Read(nonceBytes[:]); err != nil {
		return nil, fmt.Errorf("vm: %w", err)
	}
	nonce := hex.EncodeToString(nonceBytes[:])

	tmp, err := os.MkdirTemp("", "livefix-vm-")
	if err != nil {
		return nil, fmt.Errorf("vm: %w", err)
	}
	defer os.RemoveAll(tmp)
	initrd := filepath.Join(tmp, "initrd.gz")
	if err := writeInitramfs(ctx, initrd, c, nonce); err != nil {
		return nil, err
	}

	args := []string{
		"-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio",
		"-no-reboot", "-m", strconv.Itoa(c.Memory), "-smp", "2",
		"-kernel", c.Target.Vmlinuz, "-initrd", initrd,
		"-append", strings.TrimSpace(DefaultCmdline + " " + c.Cmdline),
	}
	for _, d := range c.Disks {
		if strings.ContainsAny(d, ",") {
			return nil, fmt.Errorf("vm: disk path %q must not contain a comma", d)
		}
		if _, err := os.Stat(d); err != nil {
			return nil, fmt.Errorf("vm: disk: %w", err)
		}
		args = append(args, "-drive", "file="+d+",format=raw,if=virtio")
	}
	if useKVM() {
		args = append(args, "-enable-kvm", "-cpu", "host")
	} else {
		args = append(args, "-accel", "tcg")
	}

	if c.BootTimeout == 0 {
		c.BootTimeout = min(3*time.Minute, c.Timeout)
	}
	var res *Result
	for attempt := 1; ; attempt++ {
		var hung bool
		res, hung, err = boot(ctx, c, qemu, args, nonce)
		if !hung {
			return res, err
		}
		if attempt == BootAttempts || ctx.Err() != nil {
			return res, fmt.Errorf("%w: %d boots, each killed after %v; console of the last:%s", ErrBootHung, attempt, c.BootTimeout, lastLines(res.Console, 60))
		}
		if c.Log != nil {
			fmt.Fprintf(c.Log, "vm: the guest did not start its script within %v (boot %d of %d); booting again\n", c.BootTimeout, attempt, BootAttempts)
		}
	}
}

// boot runs qemu once. hung reports a guest killed because it had not
// started the script within c.BootTimeout.
func boot(ctx context.Context, c Config, qemu string, args []string, nonce string) (res *Result, hung bool, err error) {
	runCtx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	cmd := exec.CommandContext(runCtx, qemu, args...)
	cmd.Stdin = nil
	// Pdeathsig: a test binary killed by -timeout must not leave an
	// emulated guest spinning.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	con := &console{live: c.Log, marker: []byte("LIVEFIX-EXIT-" + nonce + "="), done: make(chan struct{}),
		startMarker: []byte("LIVEFIX-START-" + nonce + "\n"), started: make(chan struct{})}
	cmd.Stdout = con
	cmd.Stderr = con

	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, false, fmt.Errorf("vm: start qemu: %w", err)
	}
	onStart(cmd.Process.Pid)
	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait() }()
	bootTimer := time.NewTimer(c.BootTimeout)
	defer bootTimer.Stop()
	var werr error
	exited := false
	select {
	case <-bootTimer.C:
		select {
		case <-con.started:
		default:
			hung = true
			cancel()
		}
	case <-con.started:
	case werr = <-waitErr:
		exited = true
	}
	if !exited && !hung {
		select {
		case werr = <-waitErr:
		case <-con.done:
			// The script finished; poweroff -f should end qemu at once.
			select {
			case werr = <-waitErr:
			case <-time.After(15 * time.Second):
				cancel()
				werr = <-waitErr
			}
		}
	} else if hung {
		<-waitErr
	}
	res = &Result{Duration: time.Since(start)}
	res.Console = con.text()
	if hung {
		return res, true, nil
	}
	res.Output, res.ExitCode, err = parseConsole(res.Console, nonce)
	if err == nil {
		return res, false, nil
	}
	switch {
	case ctx.Err() != nil:
		return res, false, fmt.Errorf("vm: %w; console so far:%s", ctx.Err(), lastLines(res.Console, 60))
	case runCtx.Err() != nil:
		return res, false, fmt.Errorf("vm: %w after %v; console so far:%s", ErrTimeout, c.Timeout, lastLines(res.Console, 60))
	case werr != nil:
		return res, false, fmt.Errorf("vm: qemu failed (%v); console:%s", werr, lastLines(res.Console, 60))
	}
	return res, false, fmt.Errorf("vm: %w; console:%s", err, lastLines(res.Console, 60))
}

// parseConsole finds the script's output between the start and exit
// markers and its exit status.
func parseConsole(console, nonce string) (string, int, error) {
	startMark := "LIVEFIX-START-" + nonce + "\n"
	i := strings.Index(console, startMark)
	if i < 0 {
		return "", 0, errors.New("the guest never started the script (kernel or init failed)")
	}
	out := console[i+len(startMark):]
	re := regexp.MustCompile(`\nLIVEFIX-EXIT-` + nonce + `=(\d+)\n`)
	m := re.FindStringSubmatchIndex(out)
	if m == nil {
		return out, 0, errors.New("the guest stopped before the script finished (kernel panic or poweroff from the script?)")
	}
	code, err := strconv.Atoi(out[m[2]:m[3]])
	if err != nil {
		return out[:m[0]], 0, fmt.Errorf("bad exit status: %w", err)
	}
	return out[:m[0]], code, nil
}

// console collects qemu's serial output, strips carriage returns, copies
// it line by line to the live log and signals when the exit marker has
// been seen.
type console struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	live    io.Writer
	flushed int // bytes of buf already copied to live
	marker  []byte
	done    chan struct{}
	closed  bool
	// startMarker, when seen, closes started.
	startMarker []byte
	started     chan struct{}
	startSeen   bool
}

func (c *console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	clean := bytes.ReplaceAll(p, []byte("\r"), nil)
	c.buf.Write(clean)
	if c.live != nil {
		b := c.buf.Bytes()
		if k := bytes.LastIndexByte(b[c.flushed:], '\n'); k >= 0 {
			_, _ = c.live.Write(b[c.flushed : c.flushed+k+1]) // a failing log must not stop the guest
			c.flushed += k + 1
		}
	}
	if !c.startSeen && c.startMarker != nil {
		b := c.buf.Bytes()
		from := max(0, len(b)-len(clean)-len(c.startMarker))
		if bytes.Contains(b[from:], c.startMarker) {
			c.startSeen = true
			close(c.started)
		}
	}
	if !c.closed {
		// Look only at the tail, where a newly completed marker can be.
		b := c.buf.Bytes()
		from := max(0, len(b)-len(clean)-len(c.marker)-16)
		if k := bytes.Index(b[from:], c.marker); k >= 0 && bytes.IndexByte(b[from+k:], '\n') >= 0 {
			c.closed = true
			close(c.done)
		}
	}
	return len(p), nil
}

// text returns everything received, first copying an unfinished last line
// to the live log.
func (c *console) text() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.live != nil && c.flushed < c.buf.Len() {
		_, _ = c.live.Write(append(c.buf.Bytes()[c.flushed:], '\n'))
		c.flushed = c.buf.Len()
	}
	return c.buf.String()
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("[%d earlier lines]", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return "\n\t" + strings.Join(lines, "\n\t")
}

// writeInitramfs writes the gzip-compressed initramfs for c to path.
func writeInitramfs(ctx context.Context, path string, c Config, nonce string) error {
	a := newArchive()
	bb, err := os.ReadFile(busyboxPath)
	if err != nil {
		return fmt.Errorf("vm: busybox: %w; run `make setup` to install busybox-static", err)
	}
	for _, d := range []string{"proc", "sys", "dev", "tmp", "root", "run", "etc", "lib/modules", "livefix"} {
		if err := a.dir(d, 0o755); err != nil {
			return err
		}
	}
	steps := []error{
		a.file("bin/busybox", 0o755, bb),
		a.symlink("bin/sh", "busybox"),
		a.charDev("dev/console", 0o600, 5, 1),
		a.charDev("dev/null", 0o666, 1, 3),
		a.file("init", 0o755, []byte(strings.ReplaceAll(initScript, "@NONCE@", nonce))),
		a.file(ScriptPath, 0o755, []byte(c.Script)),
	}
	if err := errors.Join(steps...); err != nil {
		return fmt.Errorf("vm: %w", err)
	}
	if err := addModules(ctx, a, c.Target.Release, c.Modules); err != nil {
		return err
	}
	guests := make([]string, 0, len(c.Files))
	for g := range c.Files {
		guests = append(guests, g)
	}
	sort.Strings(guests)
	for _, g := range guests {
		if !strings.HasPrefix(g, "/") {
			return fmt.Errorf("vm: guest path %q must be absolute", g)
		}
		if clean := filepath.Clean(g); clean == "/init" || clean == ScriptPath {
			return fmt.Errorf("vm: guest path %s is reserved for the harness", g)
		}
		if err := addHostPath(a, g, c.Files[g]); err != nil {
			return err
		}
	}

	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("vm: %w", err)
	}
	zw, _ := gzip.NewWriterLevel(f, gzip.BestSpeed)
	err = a.writeTo(zw)
	if cerr := zw.Close(); err == nil {
		err = cerr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("vm: write initramfs: %w", err)
	}
	return nil
}

// addHostPath adds a host file, or a directory tree, at guest path g.
func addHostPath(a *archive, g, host string) error {
	fi, err := os.Stat(host)
	if err != nil {
		return fmt.Errorf("vm: file for guest %s: %w", g, err)
	}
	if !fi.IsDir() {
		data, err := os.ReadFile(host)
		if err != nil {
			return fmt.Errorf("vm: file for guest %s: %w", g, err)
		}
		if err := a.file(g, fi.Mode().Perm(), data); err != nil {
			return fmt.Errorf("vm: %w", err)
		}
		return nil
	}
	return filepath.WalkDir(host, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("vm: file for guest %s: %w", g, err)
		}
		rel, _ := filepath.Rel(host, p)
		dst := filepath.Join(g, rel)
		info, err := os.Stat(p) // follow symlinks
		if err != nil {
			return fmt.Errorf("vm: file for guest %s: %w", dst, err)
		}
		if info.IsDir() {
			if err := a.dir(dst, info.Mode().Perm()); err != nil {
				return fmt.Errorf("vm: %w", err)
			}
			return nil
		}
		if !info.Mode().IsRegular() {
			return nil // sockets, fifos and devices stay on the host
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("vm: file for guest %s: %w", dst, err)
		}
		if err := a.file(dst, info.Mode().Perm(), data); err != nil {
			return fmt.Errorf("vm: %w", err)
		}
		return nil
	})
}

// useKVM says whether qemu may use KVM: /dev/kvm opens and the CPU has
// hardware virtualisation (vmx or svm in /proc/cpuinfo), unless
// LIVEFIX_VM_ACCEL=tcg asks for emulation. Without vmx/svm a /dev/kvm
// is a paravirtual one (kvm_pvm in some cloud sandboxes) that runs only
// guests built for it: the Debian kernel hangs there before its first
// console line, so emulation is the only way that boots.
func useKVM() bool {
	if os.Getenv("LIVEFIX_VM_ACCEL") == "tcg" {
		return false
	}
	f, err := os.OpenFile(kvmDevice, os.O_RDWR, 0)
	if err != nil {
		return false
	}
	f.Close()
	info, err := os.ReadFile(cpuinfoPath)
	if err != nil {
		return false
	}
	return hasVirtFlag(info)
}

// hasVirtFlag reports whether a /proc/cpuinfo listing has vmx or svm
// among the first CPU's flags.
func hasVirtFlag(cpuinfo []byte) bool {
	for _, line := range strings.Split(string(cpuinfo), "\n") {
		name, flags, ok := strings.Cut(line, ":")
		if !ok || strings.TrimSpace(name) != "flags" {
			continue
		}
		for _, fl := range strings.Fields(flags) {
			if fl == "vmx" || fl == "svm" {
				return true
			}
		}
		return false
	}
	return false
}
