package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// build compiles C source with the corpus flags and returns the object.
func compileC(t *testing.T, dir, name, src string) string {
	t.Helper()
	c := filepath.Join(dir, name+".c")
	o := filepath.Join(dir, name+".o")
	if err := os.WriteFile(c, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("gcc", "-O2", "-ffunction-sections", "-fdata-sections", "-fno-pic", "-pg", "-mfentry",
		"-fno-asynchronous-unwind-tables", "-c", "-o", o, c).CombinedOutput()
	if err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	return o
}

func TestDiffCommand(t *testing.T) {
	dir := t.TempDir()
	base := compileC(t, dir, "base", "int limits[4] = {1,2,3,4};\nint get(int i) { return limits[i & 3] + 1; }\n")
	changed := compileC(t, dir, "changed", "int limits[4] = {1,2,3,4};\nint get(int i) { return limits[i & 3] + 2; }\n")
	refused := compileC(t, dir, "refused", "int limits[5] = {1,2,3,4,5};\nint get(int i) { return limits[i & 3] + 1; }\n")
	same := compileC(t, dir, "same", "int limits[4] = {1,2,3,4};\n/* comment */\nint get(int i) { return limits[i & 3] + 1; }\n")
	notELF := filepath.Join(dir, "text.o")
	os.WriteFile(notELF, []byte("hello, not an object\n"), 0o644)
	whole, _ := os.ReadFile(base)
	truncated := filepath.Join(dir, "truncated.o")
	os.WriteFile(truncated, whole[:len(whole)/3], 0o644)
	exe := filepath.Join(dir, "exe")
	os.WriteFile(exe+".c", []byte("int main(void) { return 0; }\n"), 0o644)
	if out, err := exec.Command("gcc", "-o", exe, exe+".c").CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	outObj := filepath.Join(dir, "out.o")

	tests := []struct {
		name     string
		args     []string
		exit     int
		json     string // exact stdout for --json runs
		stderr   string // substring of the one-line error
		wantFile string
	}{
		{name: "patchable", args: []string{base, changed, "--json", "-o", outObj}, exit: 0,
			json:     `{"changed":["get"],"new":[],"new_data":[],"refused":[],"no_functional_change":false}`,
			wantFile: outObj},
		{name: "flags first", args: []string{"--json", base, changed}, exit: 0,
			json: `{"changed":["get"],"new":[],"new_data":[],"refused":[],"no_functional_change":false}`},
		{name: "refused", args: []string{base, refused, "--json"}, exit: 3},
		{name: "no functional change", args: []string{base, same, "--json"}, exit: 4,
			json: `{"changed":[],"new":[],"new_data":[],"refused":[],"no_functional_change":true}`},
		{name: "not elf", args: []string{base, notELF}, exit: 2, stderr: "no ELF magic"},
		{name: "truncated", args: []string{truncated, changed}, exit: 2, stderr: "truncated"},
		{name: "executable", args: []string{exe, changed}, exit: 2, stderr: "want ET_REL"},
		{name: "missing", args: []string{filepath.Join(dir, "nope.o"), changed}, exit: 2, stderr: "no such file"},
		{name: "one argument", args: []string{base}, exit: 2, stderr: "exactly two objects"},
		{name: "unknown flag", args: []string{base, changed, "--frobnicate"}, exit: 2, stderr: "frobnicate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if got := runDiff(tt.args, &stdout, &stderr); got != tt.exit {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", got, tt.exit, &stdout, &stderr)
			}
			if tt.json != "" && strings.TrimSpace(stdout.String()) != tt.json {
				t.Errorf("stdout:\n%s\nwant:\n%s", stdout.String(), tt.json)
			}
			if tt.exit == 3 {
				var cs struct {
					Refused []struct{ Symbol, Reason string }
				}
				if err := json.Unmarshal(stdout.Bytes(), &cs); err != nil || len(cs.Refused) != 1 || cs.Refused[0].Symbol != "limits" ||
					!strings.Contains(cs.Refused[0].Reason, "data size changed") {
					t.Errorf("refusal output %q (%v)", stdout.String(), err)
				}
			}
			if tt.stderr != "" {
				msg := strings.TrimSpace(stderr.String())
				if !strings.Contains(msg, tt.stderr) {
					t.Errorf("stderr %q does not mention %q", msg, tt.stderr)
				}
				if tt.name != "unknown flag" && strings.Count(msg, "\n") != 0 {
					t.Errorf("error is not one line: %q", msg)
				}
			}
			if tt.wantFile != "" {
				if _, err := os.Stat(tt.wantFile); err != nil {
					t.Errorf("output object not written: %v", err)
				}
			}
		})
	}
}

// TestDiffExplain checks the exact --explain text for a patchable and a
// refused pair.
func TestDiffExplain(t *testing.T) {
	dir := t.TempDir()
	base := compileC(t, dir, "base", "int limits[4] = {1,2,3,4};\nint get(int i) { return limits[i & 3] + 1; }\nint put(int i) { return i; }\n")
	changed := compileC(t, dir, "changed", "int limits[4] = {1,2,3,4};\nint get(int i) { return limits[i & 3] + 2; }\nint put(int i) { return i; }\nint fresh(int i) { return i * 3; }\n")
	refused := compileC(t, dir, "refused", "int limits[5] = {1,2,3,4,5};\nint get(int i) { return limits[i & 3] + 1; }\nint put(int i) { return i; }\n")
	for _, tt := range []struct {
		patched string
		exit    int
		want    string
	}{
		{changed, 0, "PATCHED: patchable\n" +
			"  changed       get: code changed\n" +
			"  new           fresh: new function\n"},
		{refused, 3, "PATCHED: refused\n" +
			"  refused       limits: data size changed: 20 bytes instead of 16; the running object cannot grow in place (use shadow variables for new per-object state)\n"},
	} {
		var stdout, stderr bytes.Buffer
		if got := runDiff([]string{base, tt.patched, "--explain"}, &stdout, &stderr); got != tt.exit {
			t.Fatalf("exit %d, want %d\n%s%s", got, tt.exit, &stdout, &stderr)
		}
		if got := strings.ReplaceAll(stdout.String(), tt.patched, "PATCHED"); got != tt.want {
			t.Errorf("--explain printed:\n%s\nwant:\n%s", got, tt.want)
		}
	}
}
