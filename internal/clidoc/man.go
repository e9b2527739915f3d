package clidoc

import (
	"fmt"
	"io"
	"strings"
)

// Page is what a man page needs besides the command tree.
type Page struct {
	Section string   // "1" for /usr/bin, "8" for /usr/sbin
	Date    string   // YYYY-MM-DD
	Source  string   // "livefix 1.2.3"
	Manual  string   // "livefix manual"
	Summary string   // the NAME line's description: "manage live patches on a running host"
	Files   []File   // the FILES section: what the package installs or the program keeps
	SeeAlso []string // "livefix-build(1)"
}

// File is one entry of a man page's FILES section.
type File struct {
	Path string
	Desc string
}

// WriteMan writes root's man page in the man(7) macro language.
func WriteMan(w io.Writer, root *Command, p Page) error {
	var b strings.Builder
	prog := root.Path[0]
	fmt.Fprintf(&b, ".\\\" Generated from %s's --help output by internal/clidoc; do not edit.\n", prog)
	fmt.Fprintf(&b, ".TH %s %s %q %q %q\n", strings.ToUpper(prog), p.Section, p.Date, p.Source, p.Manual)
	b.WriteString(".SH NAME\n")
	fmt.Fprintf(&b, "%s \\- %s\n", esc(prog), esc(p.Summary))

	b.WriteString(".SH SYNOPSIS\n.nf\n")
	for _, l := range root.Synopsis {
		b.WriteString(synopsisLine(root, l))
	}
	for _, c := range root.Leaves() {
		if c == root {
			break
		}
		for _, l := range c.Synopsis {
			b.WriteString(synopsisLine(c, l))
		}
	}
	b.WriteString(".fi\n")

	b.WriteString(".SH DESCRIPTION\n")
	fmt.Fprintf(&b, "\\fB%s\\fR: %s.\n", esc(prog), esc(p.Summary))
	writeBlocks(&b, root.Blocks)
	writeOptions(&b, root.Options)

	if len(root.Commands) > 0 {
		b.WriteString(".SH COMMANDS\n")
		for _, c := range root.All()[1:] {
			writeCommand(&b, c)
		}
	}
	if len(p.Files) > 0 {
		b.WriteString(".SH FILES\n")
		for _, f := range p.Files {
			b.WriteString(".TP\n.I " + esc(f.Path) + "\n" + text(f.Desc) + "\n")
		}
	}
	if len(p.SeeAlso) > 0 {
		b.WriteString(".SH SEE ALSO\n")
		refs := make([]string, len(p.SeeAlso))
		for i, s := range p.SeeAlso {
			name, sec, ok := strings.Cut(strings.TrimSuffix(s, ")"), "(")
			if ok {
				refs[i] = fmt.Sprintf(".BR %s (%s)", esc(name), sec)
			} else {
				refs[i] = ".B " + esc(s)
			}
			if i < len(refs)-1 {
				refs[i] += " ,"
			}
		}
		b.WriteString(strings.Join(refs, "\n") + "\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// synopsisLine sets the command words in bold and the rest in roman.
func synopsisLine(c *Command, line string) string {
	name := c.Name()
	if rest, ok := strings.CutPrefix(line, name); ok {
		return "\\fB" + esc(name) + "\\fR" + esc(rest) + "\n"
	}
	// A continuation line of a long synopsis: indent it under the args.
	return strings.Repeat(" ", len(name)+1) + esc(line) + "\n"
}

func writeCommand(b *strings.Builder, c *Command) {
	fmt.Fprintf(b, ".SS \"%s\"\n", escQuoted(strings.Join(c.Path[1:], " ")))
	b.WriteString(".nf\n")
	for _, l := range c.Synopsis {
		b.WriteString(synopsisLine(c, l))
	}
	b.WriteString(".fi\n")
	if c.Summary != "" {
		b.WriteString(".PP\n" + text(c.Summary) + "\n")
	}
	writeBlocks(b, c.Blocks)
	writeOptions(b, c.Options)
}

func writeBlocks(b *strings.Builder, blocks []Block) {
	for _, bl := range blocks {
		b.WriteString(".PP\n")
		if bl.Title != "" {
			b.WriteString(text(strings.ToUpper(bl.Title[:1])+bl.Title[1:]) + ":\n")
		}
		if bl.Literal {
			b.WriteString(".RS\n.nf\n")
			for _, l := range bl.Lines {
				b.WriteString(text(l) + "\n")
			}
			b.WriteString(".fi\n.RE\n")
			continue
		}
		b.WriteString(text(strings.Join(bl.Lines, " ")) + "\n")
	}
}

func writeOptions(b *strings.Builder, opts []Option) {
	if len(opts) == 0 {
		return
	}
	b.WriteString(".PP\nOptions:\n")
	for _, o := range opts {
		b.WriteString(".TP\n\\fB" + esc(o.Flag()) + "\\fR")
		if o.Arg != "" {
			b.WriteString(" \\fI" + esc(o.Arg) + "\\fR")
		}
		b.WriteString("\n" + text(o.Usage) + "\n")
	}
}

// esc escapes text for roff inside a line: backslashes, and hyphens as
// minus signs (options and file names must copy-paste as ASCII).
func esc(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	s = strings.ReplaceAll(s, "-", `\-`)
	return s
}

func escQuoted(s string) string { return strings.ReplaceAll(esc(s), `"`, `\(dq`) }

// text escapes a whole output line: also a leading '.' or "'" that roff
// would read as a request.
func text(s string) string {
	s = esc(s)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}
