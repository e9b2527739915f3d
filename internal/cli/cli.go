// Package cli holds the command-line conventions livefix's programs
// share: flags may stand before, between or after positional arguments,
// and every command prints its usage followed by its options.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// ExitUsage is the exit status of a command given bad flags or arguments.
const ExitUsage = 2

// NewFlagSet returns a flag set that reports errors instead of exiting
// and prints usage (the command's synopsis and description) followed by
// its options.
func NewFlagSet(name, usage string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		io.WriteString(stderr, strings.TrimSpace(usage)+"\n\noptions:\n")
		fs.PrintDefaults()
	}
	return fs
}

// Parse parses args, letting flags stand anywhere among the positional
// arguments, which it returns in order. "--" ends flag parsing.
func Parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		// The flag package consumes a "--" that ends the flags; after it
		// everything is positional.
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// ParseArgs is Parse for a command that takes exactly n positional
// arguments, as the livefix programs' subcommands do. ok is false when the
// command must stop without running: after --help (code 0) or on a bad
// flag or argument count (code ExitUsage, the reason already printed to
// the flag set's output as "PROGRAM NAME: ...").
func ParseArgs(fs *flag.FlagSet, program string, args []string, n int) (pos []string, code int, ok bool) {
	pos, err := Parse(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return nil, 0, false
	}
	if err != nil {
		return nil, ExitUsage, false
	}
	if len(pos) != n {
		fmt.Fprintf(fs.Output(), "%s %s: want %d argument(s), got %d (see --help)\n", program, fs.Name(), n, len(pos))
		return nil, ExitUsage, false
	}
	return pos, 0, true
}
