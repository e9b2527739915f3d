package clidoc

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// Help is one command's --help output, parsed.
type Help struct {
	Synopsis []string // the "usage:" line and its indented continuation lines, without "usage: "
	Blocks   []Block  // description paragraphs and unrecognised sections, in order
	Entries  []Entry  // the "commands:" list
	Options  []Option // the "options:" list
}

// Block is a paragraph of prose (no Title) or a titled section kept as
// it was printed (Literal: line breaks and indentation matter).
type Block struct {
	Title   string
	Lines   []string
	Literal bool
}

// Entry is one item of a "commands:" list: "  NAME[|NAME...] ARGS" then
// the description, on the same line after a wide gap or on the lines
// below, indented further.
type Entry struct {
	Names   []string
	Args    string
	Summary string
}

// Option is one flag as the flag package's PrintDefaults writes it.
type Option struct {
	Name  string // without dashes
	Arg   string // the value's type or name; empty for a boolean flag
	Usage string
}

// Flag is the option as a user types it: -x for one letter, --name
// otherwise (the flag package accepts both; livefix's usage lines use
// the double dash).
func (o Option) Flag() string {
	if len(o.Name) == 1 {
		return "-" + o.Name
	}
	return "--" + o.Name
}

// ErrNoUsage means the text does not start with a "usage:" line, so it
// is not a command's help.
var ErrNoUsage = errors.New("help text does not start with \"usage: \"")

var (
	headerRE  = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9 ,'()/-]{0,60}:$`)
	nameRE    = regexp.MustCompile(`^[a-z][a-z0-9-]*$`)
	gapRE     = regexp.MustCompile(`\t| {3,}`)
	optNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)
)

// Parse reads one command's help text.
func Parse(text string) (*Help, error) {
	text = strings.ReplaceAll(text, "\r\n", "\n")
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	first, ok := strings.CutPrefix(lines[0], "usage: ")
	if !ok {
		return nil, ErrNoUsage
	}
	h := &Help{Synopsis: []string{strings.TrimSpace(first)}}
	i := 1
	for ; i < len(lines) && lines[i] != "" && indented(lines[i]); i++ {
		h.Synopsis = append(h.Synopsis, strings.TrimSpace(lines[i]))
	}
	for i < len(lines) {
		line := lines[i]
		switch {
		case strings.TrimSpace(line) == "":
			i++
		case headerRE.MatchString(line):
			title := strings.TrimSuffix(line, ":")
			j := i + 1
			for j < len(lines) && (strings.TrimSpace(lines[j]) == "" || indented(lines[j])) {
				j++
			}
			body := trimBlank(lines[i+1 : j])
			i = j
			if err := h.section(title, body); err != nil {
				return nil, err
			}
		default:
			j := i
			for j < len(lines) && strings.TrimSpace(lines[j]) != "" && !headerRE.MatchString(lines[j]) {
				j++
			}
			var para []string
			for _, l := range lines[i:j] {
				para = append(para, strings.TrimSpace(l))
			}
			h.Blocks = append(h.Blocks, Block{Lines: para})
			i = j
		}
	}
	return h, nil
}

func (h *Help) section(title string, body []string) error {
	switch title {
	case "commands":
		entries, err := parseEntries(body)
		if err != nil {
			return err
		}
		h.Entries = append(h.Entries, entries...)
		return nil
	case "options":
		if opts, ok := parseOptions(body); ok {
			h.Options = append(h.Options, opts...)
			return nil
		}
	}
	h.Blocks = append(h.Blocks, Block{Title: title, Lines: dedent(body), Literal: true})
	return nil
}

// parseEntries reads a "commands:" list.
func parseEntries(body []string) ([]Entry, error) {
	var out []Entry
	var summary []string
	flush := func() {
		if len(out) > 0 {
			last := &out[len(out)-1]
			last.Summary = strings.Join(append(strings.Fields(last.Summary), strings.Fields(strings.Join(summary, " "))...), " ")
		}
		summary = nil
	}
	for n, line := range body {
		if strings.TrimSpace(line) == "" {
			continue
		}
		if indent(line) >= 4 {
			if len(out) == 0 {
				return nil, fmt.Errorf("commands: line %d %q continues no command", n+1, line)
			}
			summary = append(summary, strings.TrimSpace(line))
			continue
		}
		flush()
		head := strings.TrimSpace(line)
		var inline string
		if loc := gapRE.FindStringIndex(head); loc != nil {
			head, inline = head[:loc[0]], strings.TrimSpace(head[loc[1]:])
		}
		name, args, _ := strings.Cut(head, " ")
		if strings.HasPrefix(name, "-") {
			// An option listed among the commands (e.g. --version)
			// is not a subcommand.
			out = append(out, Entry{Args: head, Summary: inline})
			continue
		}
		var names []string
		for _, nm := range strings.Split(name, "|") {
			if !nameRE.MatchString(nm) {
				return nil, fmt.Errorf("commands: line %d: %q is not a command name", n+1, nm)
			}
			names = append(names, nm)
		}
		out = append(out, Entry{Names: names, Args: strings.TrimSpace(args), Summary: inline})
	}
	flush()
	return out, nil
}

// parseOptions reads the flag package's PrintDefaults format:
//
//	-name type
//	  	usage
//	-v	usage of a one-letter boolean
//
// It reports false when a line does not fit, so the section is kept as
// it was printed.
func parseOptions(body []string) ([]Option, bool) {
	var out []Option
	for _, line := range body {
		switch {
		case strings.HasPrefix(line, "    \t"):
			if len(out) == 0 {
				return nil, false
			}
			o := &out[len(out)-1]
			o.Usage = strings.TrimSpace(o.Usage + " " + strings.TrimSpace(line))
		case strings.HasPrefix(line, "  -") && len(line) > 3 && line[3] != '-':
			rest := line[3:]
			end := strings.IndexAny(rest, " \t")
			if end < 0 {
				end = len(rest)
			}
			o := Option{Name: rest[:end]}
			rest = rest[end:]
			if strings.HasPrefix(rest, " ") {
				arg, usage, _ := strings.Cut(rest[1:], "\t")
				o.Arg, o.Usage = strings.TrimSpace(arg), strings.TrimSpace(usage)
			} else {
				o.Usage = strings.TrimSpace(rest)
			}
			if !optNameRE.MatchString(o.Name) {
				return nil, false
			}
			out = append(out, o)
		case strings.TrimSpace(line) == "":
		default:
			return nil, false
		}
	}
	return out, len(out) > 0
}

func indented(line string) bool { return line != "" && (line[0] == ' ' || line[0] == '\t') }

func indent(line string) int {
	n := 0
	for _, c := range line {
		switch c {
		case ' ':
			n++
		case '\t':
			n += 8 - n%8
		default:
			return n
		}
	}
	return n
}

func trimBlank(lines []string) []string {
	for len(lines) > 0 && strings.TrimSpace(lines[len(lines)-1]) == "" {
		lines = lines[:len(lines)-1]
	}
	return lines
}

// dedent removes the indentation every non-blank line shares.
func dedent(lines []string) []string {
	common := -1
	for _, l := range lines {
		if strings.TrimSpace(l) == "" {
			continue
		}
		if n := len(l) - len(strings.TrimLeft(l, " ")); common < 0 || n < common {
			common = n
		}
	}
	out := make([]string, len(lines))
	for i, l := range lines {
		if len(l) >= common && common > 0 {
			l = l[common:]
		}
		out[i] = strings.TrimRight(l, " ")
	}
	return out
}
