package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/livefix/livefix/kernelpatch"
)

// TestHostCommands runs boot, status, info and uname against the fake
// kernel (one livefix patch of level 2 loaded without a persistent
// record) with a state directory and configuration of their own.
func TestHostCommands(t *testing.T) {
	newKernelSystem = fakeSystem(t)
	defer func() { newKernelSystem = kernelpatch.Host }()
	dir := t.TempDir()
	t.Setenv("LIVEFIX_STATE_DIR", filepath.Join(dir, "state"))
	off := filepath.Join(dir, "off.conf")
	bad := filepath.Join(dir, "bad.conf")
	os.WriteFile(off, []byte("enabled = false\n"), 0o644)
	os.WriteFile(bad, []byte("# x\nenabled = true\nenabeld = false\n"), 0o644)
	t.Setenv("LIVEFIX_CONFIG", filepath.Join(dir, "none.conf"))
	tests := []struct {
		name   string
		run    func([]string, *bytes.Buffer, *bytes.Buffer) int
		args   []string
		code   int
		stdout []string
		stderr []string
	}{
		{"status nothing recorded", status, nil, 3, []string{"no live patch recorded for this kernel (6.1.0-9-amd64); level 2 is loaded without a record"}, nil},
		{"status json", status, []string{"--json"}, 3, []string{`"code": 3`, `"state": "nothing"`, `"effective_version": "6.1.0-9-amd64+livefix2"`}, nil},
		{"status prometheus", status, []string{"--prometheus"}, 3, []string{"# TYPE livefix_kernel_level gauge", `livefix_kernel_level{release="6.1.0-9-amd64",build_id="000102030405060708090a0b0c0d0e0f10111213"} 2`, "livefix_status_code{", "} 3\n", `result="none"`}, nil},
		{"status off by config", status, []string{"--config", off}, 6, []string{"livefix is off (enabled = false in " + off}, nil},
		{"status bad config", status, []string{"--config", bad}, 1, nil, []string{"line 3", `unknown key "enabeld"`}},
		{"status both formats", status, []string{"--json", "--prometheus"}, 2, nil, []string{"exclude each other"}},
		{"boot nothing recorded", boot, nil, 0, []string{"no live patch is recorded for this kernel"}, nil},
		{"boot off", boot, []string{"--config", off}, 6, []string{"livefix is off", "nothing applied"}, nil},
		{"boot bad config", boot, []string{"--config", bad}, 1, nil, []string{"line 3", "nothing applied"}},
		{"boot extra argument", boot, []string{"now"}, 2, nil, []string{"want 0 argument(s)"}},
		{"info", info, nil, 0, []string{"lf_a: level 2, enabled, not recorded", "fixes:     none listed", "functions: vmlinux:cmdline_proc_show"}, nil},
		{"info json", info, []string{"--json"}, 0, []string{`"name": "lf_a"`, `"cves": []`}, nil},
		{"uname -r", uname, []string{"-r"}, 0, []string{"6.1.0-9-amd64+livefix2\n"}, nil},
		{"uname -sr", uname, []string{"-sr"}, 0, []string{"Linux 6.1.0-9-amd64+livefix2\n"}, nil},
		{"uname default", uname, nil, 0, []string{"Linux\n"}, nil},
		{"uname -a", uname, []string{"-a"}, 0, []string{"Linux ", " 6.1.0-9-amd64+livefix2 ", " GNU/Linux\n"}, nil},
		{"uname bad option", uname, []string{"-x"}, 2, nil, []string{"invalid option -- 'x'"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := tt.run(tt.args, &stdout, &stderr)
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

func status(a []string, o, e *bytes.Buffer) int { return runStatus(a, o, e) }
func boot(a []string, o, e *bytes.Buffer) int   { return runBoot(a, o, e) }
func info(a []string, o, e *bytes.Buffer) int   { return runInfo(a, o, e) }
func uname(a []string, o, e *bytes.Buffer) int  { return runUname(a, o, e) }
