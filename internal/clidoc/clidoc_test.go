package clidoc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"testing"
	"time"
)

const groupHelp = `usage: prog COMMAND [ARGS]

commands:
  kernel load|list
        manage kernel patches (run 'prog kernel --help')
  version    print the version
  --json     not a command

Run 'prog COMMAND --help' for a command's options.
`

const leafHelp = `usage: prog kernel load FILE.ko [--timeout D]
                        [--json]

Loads FILE.ko and waits.
Second line of the paragraph.

exit status: 0 loaded, 1 failure.

options:
  -json
    	print the result as JSON
  -o string
    	output file
  -timeout duration
    	give up after this long
    	and undo it (default 1m0s)
  -v	verbose
`

const customHelp = `usage: prog kernel list [--state-dir DIR]

options common to all commands:
  --state-dir DIR   where patches are recorded
                    (default /run/x)

options:
  --state-dir DIR   not the flag package's format
`

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		text string
		want *Help
		err  error
	}{
		{"group", groupHelp, &Help{
			Synopsis: []string{"prog COMMAND [ARGS]"},
			Entries: []Entry{
				{Names: []string{"kernel"}, Args: "load|list", Summary: "manage kernel patches (run 'prog kernel --help')"},
				{Names: []string{"version"}, Summary: "print the version"},
				{Args: "--json", Summary: "not a command"},
			},
			Blocks: []Block{{Lines: []string{"Run 'prog COMMAND --help' for a command's options."}}},
		}, nil},
		{"leaf", leafHelp, &Help{
			Synopsis: []string{"prog kernel load FILE.ko [--timeout D]", "[--json]"},
			Blocks: []Block{
				{Lines: []string{"Loads FILE.ko and waits.", "Second line of the paragraph."}},
				{Lines: []string{"exit status: 0 loaded, 1 failure."}},
			},
			Options: []Option{
				{Name: "json", Usage: "print the result as JSON"},
				{Name: "o", Arg: "string", Usage: "output file"},
				{Name: "timeout", Arg: "duration", Usage: "give up after this long and undo it (default 1m0s)"},
				{Name: "v", Usage: "verbose"},
			},
		}, nil},
		{"custom sections kept as printed", customHelp, &Help{
			Synopsis: []string{"prog kernel list [--state-dir DIR]"},
			Blocks: []Block{
				{Title: "options common to all commands", Literal: true, Lines: []string{"--state-dir DIR   where patches are recorded", "                  (default /run/x)"}},
				{Title: "options", Literal: true, Lines: []string{"--state-dir DIR   not the flag package's format"}},
			},
		}, nil},
		{"not help", "prog dev\n", nil, ErrNoUsage},
		{"empty", "", nil, ErrNoUsage},
		{"continuation before any command", "usage: p X\n\ncommands:\n        orphan\n", nil, nil},
		{"bad command name", "usage: p X\n\ncommands:\n  Bad!name  x\n", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.text)
			if tt.want == nil {
				if err == nil {
					t.Fatalf("Parse succeeded: %+v", got)
				}
				if tt.err != nil && !errors.Is(err, tt.err) {
					t.Fatalf("err = %v, want %v", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Parse:\n got %#v\nwant %#v", got, tt.want)
			}
		})
	}
}

// fakeHelp answers like a program whose commands print these texts.
func fakeHelp(texts map[string]string) HelpFunc {
	return func(_ context.Context, args []string) (string, error) {
		if t, ok := texts[strings.Join(args, " ")]; ok {
			return t, nil
		}
		return "prog: unknown command\n\n" + groupHelp, nil
	}
}

func TestWalk(t *testing.T) {
	root, err := Walk(context.Background(), "prog", fakeHelp(map[string]string{
		"":            groupHelp,
		"kernel":      "usage: prog kernel COMMAND\n\ncommands:\n  load FILE.ko\n        load it\n  list\n        list them\n",
		"kernel load": leafHelp,
		"kernel list": customHelp,
		"version":     "prog dev\n", // no help of its own
	}))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range root.All() {
		names = append(names, fmt.Sprintf("%s own=%v syn=%q", c.Name(), c.OwnHelp, c.Synopsis[0]))
	}
	want := []string{
		`prog own=true syn="prog COMMAND [ARGS]"`,
		`prog kernel own=true syn="prog kernel COMMAND"`,
		`prog kernel load own=true syn="prog kernel load FILE.ko [--timeout D]"`,
		`prog kernel list own=true syn="prog kernel list [--state-dir DIR]"`,
		`prog version own=false syn="prog version"`,
	}
	if !reflect.DeepEqual(names, want) {
		t.Errorf("tree:\n%s\nwant:\n%s", strings.Join(names, "\n"), strings.Join(want, "\n"))
	}
	if got := root.Commands[0].Commands[0].Summary; got != "load it" {
		t.Errorf("summary of kernel load = %q", got)
	}

	// A subcommand answering with its parent's usage has no help of its
	// own; one that recurses into itself is stopped.
	if _, err := Walk(context.Background(), "prog", fakeHelp(map[string]string{"": "prog: no usage\n"})); !errors.Is(err, ErrNoUsage) {
		t.Errorf("program without usage: err = %v", err)
	}
	deep := func(_ context.Context, args []string) (string, error) {
		return "usage: " + strings.Join(append([]string{"prog"}, args...), " ") + " X\n\ncommands:\n  again\n        recurse\n", nil
	}
	if _, err := Walk(context.Background(), "prog", deep); err == nil || !strings.Contains(err.Error(), "nested deeper") {
		t.Errorf("endless nesting: err = %v", err)
	}
}

func testTree(t *testing.T) *Command {
	t.Helper()
	root, err := Walk(context.Background(), "prog", fakeHelp(map[string]string{
		"":            groupHelp,
		"kernel":      "usage: prog kernel COMMAND\n\ncommands:\n  load FILE.ko\n        load it\n  list\n        .list them, a line starting with a dot\n",
		"kernel load": leafHelp,
		"kernel list": customHelp,
	}))
	if err != nil {
		t.Fatal(err)
	}
	return root
}

func TestWriteMan(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteMan(&buf, testTree(t), Page{Section: "8", Date: "2026-01-02", Source: "prog 1.0", Manual: "prog manual",
		Summary: "does things", SeeAlso: []string{"other(1)", "plain"},
		Files: []File{{"/etc/prog.conf", "the configuration"}}}); err != nil {
		t.Fatal(err)
	}
	page := buf.String()
	for _, want := range []string{
		`.TH PROG 8 "2026-01-02" "prog 1.0" "prog manual"`,
		`prog \- does things`,
		`\fBprog kernel load\fR FILE.ko [\-\-timeout D]`,
		`.SS "kernel load"`,
		"\\fB\\-\\-timeout\\fR \\fIduration\\fR\ngive up after this long and undo it (default 1m0s)",
		"\\fB\\-o\\fR \\fIstring\\fR",
		`\&.list them`,
		".BR other (1) ,\n.B plain",
		".SH FILES\n.TP\n.I /etc/prog.conf\nthe configuration\n",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("man page lacks %q:\n%s", want, page)
		}
	}
	if _, err := exec.LookPath("man"); err != nil {
		t.Fatal("man not found: run `make setup`")
	}
	// groff must read it without a warning.
	cmd := exec.Command("man", "--warnings", "-E", "UTF-8", "-l", "-")
	cmd.Stdin = &buf
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil || stderr.Len() > 0 {
		t.Errorf("man: %v\n%s", err, stderr.String())
	}
}

func TestWriteBash(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Fatal("bash not found")
	}
	var buf bytes.Buffer
	if err := WriteBash(&buf, testTree(t)); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		line string // the word being completed is the last, possibly empty
		want string
	}{
		{"prog ", "kernel version"},
		{"prog k", "kernel"},
		{"prog kernel ", "list load"},
		{"prog kernel load -", "--help --json --timeout -o -v"},
		{"prog kernel load --ti", "--timeout"},
		{"prog kernel load --timeout ", ""}, // a value: file names
		{"prog kernel load FILE.ko ", ""},
		{"prog nope ", "kernel version"}, // unknown words do not descend
		{"prog version -", ""},           // no help of its own, so no --help either
	}
	for _, tt := range tests {
		words := strings.Split(tt.line, " ")
		quoted := make([]string, len(words))
		for i, w := range words {
			quoted[i] = "'" + w + "'"
		}
		sh := buf.String() + fmt.Sprintf("\nCOMP_WORDS=(%s); COMP_CWORD=%d; _prog 2>/dev/null; printf '%%s\\n' \"${COMPREPLY[@]}\" | sort | tr '\\n' ' '",
			strings.Join(quoted, " "), len(words)-1)
		out, err := exec.Command("bash", "--norc", "-c", sh).Output()
		if got := strings.TrimSpace(string(out)); err != nil || got != tt.want {
			t.Errorf("complete %q = %q (%v), want %q", tt.line, got, err, tt.want)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{groupHelp, leafHelp, customHelp, "usage: x\n\ncommands:\n  a|b  c\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h, err := Parse(s)
		if err != nil {
			return
		}
		if len(h.Synopsis) == 0 {
			t.Fatal("parsed help without a synopsis")
		}
		var buf bytes.Buffer
		root := &Command{Path: []string{"p"}, Synopsis: h.Synopsis, Blocks: h.Blocks, Options: h.Options, OwnHelp: true}
		if err := WriteMan(&buf, root, Page{Section: "1", Summary: "x"}); err != nil {
			t.Fatal(err)
		}
		if err := WriteBash(&buf, root); err != nil {
			t.Fatal(err)
		}
	})
}

func TestExecHelp(t *testing.T) {
	script := t.TempDir() + "/prog"
	if err := os.WriteFile(script, []byte(`#!/bin/sh
case "$1" in
hang) sleep 5 ;;
esac
echo "usage: prog $*"
echo "uid=$(id -u) cwd=$(pwd) home=$HOME state=$LIVEFIX_STATE_DIR"
echo "stdin=$(cat)"
`), 0o755); err != nil {
		t.Fatal(err)
	}
	help, cleanup, err := ExecHelp(script, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup()
	out, err := help(context.Background(), []string{"kernel", "load"})
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(out, "\n")
	if lines[0] != "usage: prog kernel load --help" {
		t.Errorf("arguments: %q", lines[0])
	}
	var uid int
	var cwd, home string
	if _, err := fmt.Sscanf(strings.NewReplacer("=", " ").Replace(lines[1]), "uid %d cwd %s home %s state", &uid, &cwd, &home); err != nil {
		t.Fatalf("%q: %v", lines[1], err)
	}
	if os.Geteuid() == 0 && uid != nobody {
		t.Errorf("ran as uid %d, want nobody (%d)", uid, nobody)
	}
	if !strings.HasPrefix(cwd, os.TempDir()) || home != "/nonexistent" || !strings.HasSuffix(lines[1], " state=") {
		t.Errorf("%q: want a fresh temporary directory, HOME=/nonexistent, no LIVEFIX_STATE_DIR", lines[1])
	}
	if lines[2] != "stdin=" {
		t.Errorf("stdin not empty: %q", lines[2])
	}
	start := time.Now()
	if _, err := help(context.Background(), []string{"hang"}); err == nil || !strings.Contains(err.Error(), "no answer within") {
		t.Errorf("a command that hangs: err = %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the time limit took %s", d)
	}
}
