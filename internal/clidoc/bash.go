package clidoc

import (
	"fmt"
	"io"
	"strings"
)

// WriteBash writes a bash completion script for root's program: command
// words where a subcommand is expected, the command's options after a
// "-", and bash's default (file name) completion for arguments and
// option values.
func WriteBash(w io.Writer, root *Command) error {
	prog := root.Path[0]
	fn := "_" + strings.NewReplacer("-", "_", ".", "_").Replace(prog)
	var b strings.Builder
	fmt.Fprintf(&b, "# bash completion for %s, generated from its --help output by internal/clidoc; do not edit.\n", prog)
	fmt.Fprintf(&b, "%s() {\n", fn)
	b.WriteString(`	local cur=${COMP_WORDS[COMP_CWORD]} prev="" path="" i
	((COMP_CWORD > 0)) && prev=${COMP_WORDS[COMP_CWORD-1]}
	for ((i = 1; i < COMP_CWORD; i++)); do
		case "$path/${COMP_WORDS[i]}" in
`)
	var paths []string
	for _, c := range root.All()[1:] {
		paths = append(paths, quote(compPath(c)))
	}
	if len(paths) > 0 {
		fmt.Fprintf(&b, "\t\t%s) path=$path/${COMP_WORDS[i]} ;;\n", strings.Join(paths, " | "))
	}
	b.WriteString("\t\t*) break ;;\n\t\tesac\n\tdone\n")
	b.WriteString("\tlocal words=\"\" opts=\"\" valopts=\"\"\n\tcase $path in\n")
	for _, c := range root.All() {
		var words, opts, valopts []string
		for _, sub := range c.Commands {
			words = append(words, sub.Path[len(sub.Path)-1])
		}
		for _, o := range c.Options {
			opts = append(opts, o.Flag())
			if o.Arg != "" {
				valopts = append(valopts, o.Flag(), "-"+o.Name)
			}
		}
		if c.OwnHelp {
			opts = append(opts, "--help")
		}
		fmt.Fprintf(&b, "\t%s) words=%s opts=%s valopts=%s ;;\n",
			quote(compPath(c)), quote(strings.Join(words, " ")),
			quote(strings.Join(opts, " ")), quote(" "+strings.Join(valopts, " ")+" "))
	}
	b.WriteString(`	esac
	if [[ -n $prev && $valopts == *" $prev "* ]]; then
		compopt -o default
		COMPREPLY=()
		return
	fi
	if [[ $cur == -* ]]; then
		mapfile -t COMPREPLY < <(compgen -W "$opts" -- "$cur")
		return
	fi
	if [[ -n $words ]]; then
		mapfile -t COMPREPLY < <(compgen -W "$words" -- "$cur")
		return
	fi
	compopt -o default
	COMPREPLY=()
}
`)
	fmt.Fprintf(&b, "complete -F %s %s\n", fn, prog)
	_, err := io.WriteString(w, b.String())
	return err
}

// compPath is how the script names c: "" for the program, "/kernel/load"
// for "PROG kernel load".
func compPath(c *Command) string {
	if len(c.Path) == 1 {
		return ""
	}
	return "/" + strings.Join(c.Path[1:], "/")
}

// quote quotes s for the shell: single quotes, which the names and flags
// here never contain, but be exact anyway.
func quote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
