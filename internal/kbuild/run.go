package kbuild

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// makeEnv is the environment for make and gcc: the caller's, minus the
// variables that would change what kbuild builds or break it (a jobserver
// inherited from an outer `make test`, a cross compiler, an output dir),
// with messages in the C locale so they can be parsed.
func makeEnv() []string {
	drop := map[string]bool{
		"MAKEFLAGS": true, "MFLAGS": true, "MAKELEVEL": true, "MAKEOVERRIDES": true, "GNUMAKEFLAGS": true,
		"ARCH": true, "SRCARCH": true, "CROSS_COMPILE": true, "O": true, "M": true, "LLVM": true, "CC": true, "LD": true,
		"KCFLAGS": true, "KCPPFLAGS": true, "KAFLAGS": true, "CFLAGS": true, "LDFLAGS": true, "INSTALL_MOD_PATH": true,
		"LC_ALL": true, "LANG": true, "LANGUAGE": true,
	}
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if drop[k] || strings.HasPrefix(k, "KBUILD_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "LC_ALL=C")
}

// run runs a command in its own process group, collecting stdout and
// stderr together. When ctx ends the whole group is killed, so no
// compiler is left writing into the tree after run returns.
func run(ctx context.Context, dir string, name string, args ...string) ([]byte, error) {
	return runTee(ctx, dir, nil, name, args...)
}

// runTee is run that also copies the command's output to tee (when not
// nil) as it comes.
func runTee(ctx context.Context, dir string, tee io.Writer, name string, args ...string) ([]byte, error) {
	return runCmd(ctx, command{dir: dir, tee: tee, name: name, args: args})
}

// command is one program runCmd starts.
type command struct {
	dir  string
	tee  io.Writer
	name string // the program
	args []string
	// label names the command in errors when it is not name (a wrapper
	// runs the real program).
	label string
	// newMountNS starts the command in a mount namespace of its own
	// (private propagation), whose mounts die with its last process.
	newMountNS bool
	// extra are inherited as file descriptors 3 and up.
	extra []*os.File
}

func runCmd(ctx context.Context, c command) ([]byte, error) {
	name := c.name
	if c.label != "" {
		name = c.label
	}
	cmd := exec.CommandContext(ctx, c.name, c.args...)
	cmd.Dir = c.dir
	cmd.ExtraFiles = c.extra
	tee := c.tee
	cmd.Env = makeEnv()
	var out bytes.Buffer
	var w io.Writer = &out
	if tee != nil {
		w = io.MultiWriter(&out, tee)
	}
	cmd.Stdout = w
	cmd.Stderr = w
	// Its own group, so that cancelling kills make and every compiler it
	// started; Pdeathsig, so that make dies with a killed caller (its
	// compilers then finish on their own) instead of building on in a tree
	// whose next user restores the sources.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if c.newMountNS {
		// Go makes / recursively private in the child before exec.
		cmd.SysProcAttr.Unshareflags = syscall.CLONE_NEWNS
	}
	cmd.Cancel = func() error {
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = 10 * time.Second
	err := cmd.Run()
	if err != nil {
		if ctx.Err() != nil {
			return out.Bytes(), fmt.Errorf("%s: %w", name, ctx.Err())
		}
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return out.Bytes(), fmt.Errorf("%s exited with status %d", name, ee.ExitCode())
		}
		return out.Bytes(), fmt.Errorf("run %s: %w", name, err)
	}
	return out.Bytes(), nil
}

// tail returns the last n non-empty lines of out, indented for an error.
func tail(out []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	var keep []string
	for i := len(lines) - 1; i >= 0 && len(keep) < n; i-- {
		if strings.TrimSpace(lines[i]) != "" {
			keep = append(keep, lines[i])
		}
	}
	for i, j := 0, len(keep)-1; i < j; i, j = i+1, j-1 {
		keep[i], keep[j] = keep[j], keep[i]
	}
	return "\n\t" + strings.Join(keep, "\n\t")
}

// compileErrors picks the compiler's first error messages out of make's
// output, with the source and caret lines gcc prints under each. When
// there is no recognisable error it falls back to the last lines.
func compileErrors(out []byte) string {
	lines := strings.Split(string(out), "\n")
	var keep []string
	const maxErrors, maxLines = 3, 14
	errs := 0
	for i := 0; i < len(lines) && errs < maxErrors && len(keep) < maxLines; i++ {
		l := lines[i]
		if !strings.Contains(l, "error:") && !strings.Contains(l, "Error:") {
			continue
		}
		if strings.HasPrefix(l, "make") {
			continue // make's own "*** [...] Error 1" lines say nothing new
		}
		errs++
		keep = append(keep, l)
		for j := i + 1; j < len(lines) && j <= i+3 && strings.HasPrefix(lines[j], " ") && len(keep) < maxLines; j++ {
			keep = append(keep, lines[j])
		}
	}
	if len(keep) == 0 {
		return tail(out, 12)
	}
	return "\n\t" + strings.Join(keep, "\n\t")
}
