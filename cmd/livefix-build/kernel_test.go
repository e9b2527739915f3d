package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/livefix/livefix/internal/kerneltest"
)

// TestKernelBadInput checks the argument errors that stop before any
// kernel work: exit status 2 and a message saying what is wrong.
func TestKernelBadInput(t *testing.T) {
	kerneltest.RequireTarget(t) // DefaultTarget must succeed to reach the later checks
	dir := t.TempDir()
	notPatch := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(notPatch, []byte("just text\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	good := filepath.Join("..", "..", "klp", "testdata", "cmdline.patch")
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no patch", []string{"--name", "x"}, "need at least one --patch"},
		{"no name", []string{"--patch", good}, "need --name"},
		{"bad level", []string{"--patch", good, "--name", "x", "--level", "0"}, "--level must be 1 or more"},
		{"bad module object", []string{"--patch", good, "--name", "x", "--module-object", "fs/proc/cmdline.c"}, "want MODNAME=path/in/tree.c"},
		{"stray argument", []string{"--patch", good, "--name", "x", "extra"}, `unexpected argument "extra"`},
		{"bad name", []string{"--patch", good, "--name", "has-dash"}, `patch name "has-dash"`},
		{"missing patch file", []string{"--patch", filepath.Join(dir, "none.patch"), "--name", "x"}, "no such file"},
		{"not a patch", []string{"--patch", notPatch, "--name", "x"}, "malformed patch"},
		{"bad cve", []string{"--patch", good, "--name", "x", "--cve", "CVE-24-1"}, `--cve "CVE-24-1": want an id like CVE-2024-1234`},
		{"two-line summary", []string{"--patch", good, "--name", "x", "--summary", "a\nb"}, "--summary must be one line"},
		{"unknown kernel", []string{"--patch", good, "--name", "x", "--kernel", "0.0.0-none"}, "kernel files missing"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := runKernel(tc.args, &stdout, &stderr)
			if code != exitBadInput {
				t.Errorf("exit %d, want %d; stderr: %s", code, exitBadInput, stderr.String())
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("stderr %q lacks %q", stderr.String(), tc.want)
			}
		})
	}
}
