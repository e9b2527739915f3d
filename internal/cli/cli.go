// Package cli holds the command-line conventions livefix's programs
// share: flags may stand before, between or after positional arguments,
// and every command prints its usage followed by its options.
package cli

import (
	"flag"
	"io"
	"strings"
)

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
