package clidoc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Command is one node of a program's command tree.
type Command struct {
	Path     []string // the program's name and the subcommand words
	Synopsis []string // its usage lines (from its own help, else from the parent's list)
	Summary  string   // what the parent's command list says about it
	Blocks   []Block
	Options  []Option
	Commands []*Command
	OwnHelp  bool // false: the command printed no usage for --help; only the parent's list documents it
}

// Name is the command as typed: "livefix kernel load".
func (c *Command) Name() string { return strings.Join(c.Path, " ") }

// Leaves returns every command under c (c included) that has no
// subcommands, depth first, in the order the help lists them.
func (c *Command) Leaves() []*Command {
	if len(c.Commands) == 0 {
		return []*Command{c}
	}
	var out []*Command
	for _, sub := range c.Commands {
		out = append(out, sub.Leaves()...)
	}
	return out
}

// All returns c and every command under it, depth first.
func (c *Command) All() []*Command {
	out := []*Command{c}
	for _, sub := range c.Commands {
		out = append(out, sub.All()...)
	}
	return out
}

// HelpFunc prints the help of the program's command named by args (none:
// the program itself), as "PROG ARGS... --help" would.
type HelpFunc func(ctx context.Context, args []string) (string, error)

// maxDepth bounds the tree, so a program whose subcommands print their
// parent's help cannot make Walk recurse forever.
const maxDepth = 6

// Walk reads the command tree of the program named prog, asking help for
// each command's text.
func Walk(ctx context.Context, prog string, help HelpFunc) (*Command, error) {
	root, err := walk(ctx, help, []string{prog}, "", "")
	if err != nil {
		return nil, err
	}
	if !root.OwnHelp {
		return nil, fmt.Errorf("%s --help: %w", prog, ErrNoUsage)
	}
	return root, nil
}

func walk(ctx context.Context, help HelpFunc, path []string, summary, args string) (*Command, error) {
	if len(path) > maxDepth {
		return nil, fmt.Errorf("%s: commands nested deeper than %d levels", strings.Join(path, " "), maxDepth)
	}
	c := &Command{Path: path, Summary: summary}
	out, err := help(ctx, path[1:])
	if err != nil {
		return nil, err
	}
	h, err := Parse(out)
	name := strings.Join(path, " ")
	switch {
	case errors.Is(err, ErrNoUsage):
	case err != nil:
		return nil, fmt.Errorf("%s --help: %w", name, err)
	case h.Synopsis[0] != name && !strings.HasPrefix(h.Synopsis[0], name+" "):
		// It printed some other command's usage (typically its
		// parent's, for an argument it does not know): not its own.
	default:
		c.OwnHelp = true
		c.Synopsis, c.Blocks, c.Options = h.Synopsis, h.Blocks, h.Options
		for _, e := range h.Entries {
			for _, n := range e.Names {
				sub, err := walk(ctx, help, append(path[:len(path):len(path)], n), e.Summary, e.Args)
				if err != nil {
					return nil, err
				}
				c.Commands = append(c.Commands, sub)
			}
		}
	}
	if !c.OwnHelp {
		c.Synopsis = []string{strings.TrimSpace(name + " " + args)}
	}
	return c, nil
}

// Nobody is the user ExecHelp runs programs as when it runs as root.
const nobody = 65534

// ExecHelp returns a HelpFunc that runs a copy of the program at bin
// with --help appended. Help must never touch the machine it is
// generated on, even for a command that ignored --help: each run gets an
// empty working directory, a fixed minimal environment, stdin closed and
// a time limit, and when ExecHelp
// runs as root the program runs as nobody, so it can load no module,
// kexec nothing and trace no process. Call the returned cleanup when
// done. The programs named by with are copied next to the copy of bin:
// helpers bin runs from its own directory (livefix's livefix-agent).
func ExecHelp(bin string, timeout time.Duration, with ...string) (HelpFunc, func(), error) {
	dir, err := os.MkdirTemp("", "clidoc-")
	if err != nil {
		return nil, nil, err
	}
	cleanup := func() { os.RemoveAll(dir) }
	prog := filepath.Join(dir, filepath.Base(bin))
	for _, src := range append([]string{bin}, with...) {
		data, err := os.ReadFile(src)
		if err != nil {
			cleanup()
			return nil, nil, err
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(src)), data, 0o755); err != nil {
			cleanup()
			return nil, nil, err
		}
	}
	var cred *syscall.SysProcAttr
	if os.Geteuid() == 0 {
		cred = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
		if err := os.Chmod(dir, 0o755); err != nil {
			cleanup()
			return nil, nil, err
		}
	}
	run := 0
	help := func(ctx context.Context, args []string) (string, error) {
		run++
		work := filepath.Join(dir, fmt.Sprintf("run%d", run))
		if err := os.Mkdir(work, 0o700); err != nil {
			return "", err
		}
		defer os.RemoveAll(work)
		if cred != nil {
			if err := os.Chown(work, nobody, nobody); err != nil {
				return "", err
			}
		}
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, prog, append(append([]string{}, args...), "--help")...)
		cmd.Dir = work
		// The same environment on every machine and every run: flag
		// defaults taken from it end up in the man page.
		cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/nonexistent", "LANG=C"}
		cmd.SysProcAttr = cred
		var buf bytes.Buffer
		cmd.Stdout, cmd.Stderr = &buf, &buf
		cmd.WaitDelay = time.Second
		err := cmd.Run()
		name := strings.TrimSpace(filepath.Base(bin) + " " + strings.Join(args, " "))
		if ctx.Err() != nil {
			return "", fmt.Errorf("%s --help: no answer within %s (does it ignore --help?)", name, timeout)
		}
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) {
			return "", fmt.Errorf("run %s --help: %w", name, err)
		}
		return buf.String(), nil
	}
	return help, cleanup, nil
}
