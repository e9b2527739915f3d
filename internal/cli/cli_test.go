package cli

import (
	"bytes"
	"errors"
	"flag"
	"slices"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		args    []string
		pos     []string
		json    bool
		out     string
		wantErr bool
	}{
		{args: []string{"a", "b"}, pos: []string{"a", "b"}},
		{args: []string{"--json", "a", "-o", "x", "b"}, pos: []string{"a", "b"}, json: true, out: "x"},
		{args: []string{"a", "b", "--json"}, pos: []string{"a", "b"}, json: true},
		{args: []string{"a", "--", "--json", "-o"}, pos: []string{"a", "--json", "-o"}},
		{args: []string{"--json", "--", "-o", "b"}, pos: []string{"-o", "b"}, json: true},
		{args: []string{"--", "a"}, pos: []string{"a"}},
		{args: []string{"a", "--nope"}, wantErr: true},
		{args: []string{"a", "-o"}, wantErr: true},
		{args: nil, pos: nil},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var stderr bytes.Buffer
			fs := NewFlagSet("x", "usage: x A B", &stderr)
			j := fs.Bool("json", false, "")
			o := fs.String("o", "", "")
			pos, err := Parse(fs, tt.args)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if !slices.Equal(pos, tt.pos) || *j != tt.json || *o != tt.out {
				t.Errorf("got %q json=%v o=%q; want %q json=%v o=%q", pos, *j, *o, tt.pos, tt.json, tt.out)
			}
		})
	}
}

func TestUsage(t *testing.T) {
	var stderr bytes.Buffer
	fs := NewFlagSet("x", "\nusage: x FILE\n", &stderr)
	fs.Bool("json", false, "print JSON")
	if _, err := Parse(fs, []string{"--help"}); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("err = %v, want flag.ErrHelp", err)
	}
	if got := stderr.String(); !strings.HasPrefix(got, "usage: x FILE\n\noptions:\n") || !strings.Contains(got, "print JSON") {
		t.Errorf("usage output %q", got)
	}
}

func TestParseArgs(t *testing.T) {
	tests := []struct {
		args     []string
		wantPos  []string
		wantCode int
		wantOK   bool
		wantMsg  string
	}{
		{[]string{"a.ko"}, []string{"a.ko"}, 0, true, ""},
		{[]string{"-v", "a.ko"}, []string{"a.ko"}, 0, true, ""},
		{[]string{"--help"}, nil, 0, false, "usage: prog x"},
		{[]string{"--nope", "a.ko"}, nil, ExitUsage, false, "flag provided but not defined"},
		{[]string{}, nil, ExitUsage, false, "prog x: want 1 argument(s), got 0"},
		{[]string{"a", "b"}, nil, ExitUsage, false, "prog x: want 1 argument(s), got 2"},
	}
	for _, tt := range tests {
		var out strings.Builder
		fs := NewFlagSet("x", "usage: prog x FILE", &out)
		fs.Bool("v", false, "verbose")
		pos, code, ok := ParseArgs(fs, "prog", tt.args, 1)
		if ok != tt.wantOK || code != tt.wantCode || strings.Join(pos, " ") != strings.Join(tt.wantPos, " ") {
			t.Errorf("ParseArgs(%q) = %q, %d, %v; want %q, %d, %v", tt.args, pos, code, ok, tt.wantPos, tt.wantCode, tt.wantOK)
		}
		if !strings.Contains(out.String(), tt.wantMsg) {
			t.Errorf("ParseArgs(%q) printed %q, want it to contain %q", tt.args, out.String(), tt.wantMsg)
		}
	}
}
