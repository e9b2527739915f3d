package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/livefix/livefix/kernelpatch"
)

// fakeSystem is a kernel with one enabled livefix patch of level 2 and no
// syscalls: enough for the read-only commands and argument errors.
func fakeSystem(t *testing.T) func() *kernelpatch.System {
	root := t.TempDir()
	for _, d := range []string{"livepatch/lf_a/vmlinux/cmdline_proc_show,1", "state", "module/lf_a"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{
		"livepatch/lf_a/enabled":         "1\n",
		"livepatch/lf_a/transition":      "0\n",
		"livepatch/lf_a/vmlinux/patched": "1\n",
		"state/lf_a.json":                `{"module":"/root/lf_a.ko","metadata":{"release":"6.1.0-9-amd64","level":2}}`,
	}
	// The vmlinux build-id note (/sys/kernel/notes): namesz 4, descsz 20, type 3 (GNU).
	note := []byte{4, 0, 0, 0, 20, 0, 0, 0, 3, 0, 0, 0, 'G', 'N', 'U', 0}
	for i := 0; i < 20; i++ {
		note = append(note, byte(i))
	}
	files["notes"] = string(note)
	for p, c := range files {
		if err := os.WriteFile(filepath.Join(root, p), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return func() *kernelpatch.System {
		return &kernelpatch.System{
			Livepatch: filepath.Join(root, "livepatch"),
			Proc:      filepath.Join(root, "proc"),
			Notes:     filepath.Join(root, "notes"),
			Module:    filepath.Join(root, "module"),
			StateDir:  filepath.Join(root, "state"),
			Release:   func() (string, error) { return "6.1.0-9-amd64", nil },
		}
	}
}

func TestKernelCommands(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout []string
		stderr []string
	}{
		{"no command", nil, exitBadInput, nil, []string{"usage: livefix kernel"}},
		{"unknown command", []string{"patch"}, exitBadInput, nil, []string{`unknown command "patch"`}},
		{"help", []string{"--help"}, exitOK, []string{"load FILE.ko"}, nil},
		{"version", []string{"version"}, exitOK, []string{"6.1.0-9-amd64+livefix2\n"}, nil},
		{"version json", []string{"version", "--json"}, exitOK, []string{`"level":2`, `"version":"6.1.0-9-amd64+livefix2"`}, nil},
		{"list", []string{"list"}, exitOK, []string{"lf_a", "yes", "vmlinux:cmdline_proc_show,1"}, nil},
		{"list json", []string{"list", "--json"}, exitOK, []string{`"name": "lf_a"`, `"level": 2`}, nil},
		{"load without file", []string{"load"}, exitBadInput, nil, []string{"want 1 argument(s), got 0"}},
		{"load two files", []string{"load", "a.ko", "b.ko"}, exitBadInput, nil, []string{"want 1 argument(s), got 2"}},
		{"load missing file", []string{"load", "/nonexistent/x.ko"}, exitFailure, nil, []string{"nothing was loaded"}},
		{"bad timeout", []string{"disable", "lf_a", "--timeout", "soon"}, exitBadInput, nil, []string{"invalid value"}},
		{"unload unknown", []string{"unload", "nope"}, exitFailure, nil, []string{"no module nope is loaded"}},
	}
	newKernelSystem = fakeSystem(t)
	t.Setenv("LIVEFIX_STATE_DIR", t.TempDir())
	defer func() { newKernelSystem = kernelpatch.Host }()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := runKernel(tt.args, &stdout, &stderr)
			if code != tt.code {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, stdout.String(), stderr.String())
			}
			for _, s := range tt.stdout {
				if !strings.Contains(stdout.String(), s) {
					t.Errorf("stdout lacks %q:\n%s", s, stdout.String())
				}
			}
			for _, s := range tt.stderr {
				if !strings.Contains(stderr.String(), s) {
					t.Errorf("stderr lacks %q:\n%s", s, stderr.String())
				}
			}
		})
	}
}
