package kbuild

import (
	"errors"
	"reflect"
	"testing"
)

func TestTouchedFiles(t *testing.T) {
	tests := []struct {
		name  string
		patch string
		want  []string
		bad   bool // want an ErrPatch error
	}{
		{
			name: "git diff",
			patch: `diff --git a/fs/proc/cmdline.c b/fs/proc/cmdline.c
index 1111111..2222222 100644
--- a/fs/proc/cmdline.c
+++ b/fs/proc/cmdline.c
@@ -6,3 +6,3 @@
 {
-	seq_puts(m, saved_command_line);
+	seq_puts(m, "x");
 	seq_putc(m, '\n');
`,
			want: []string{"fs/proc/cmdline.c"},
		},
		{
			name: "diff -u with timestamps, two files, repeated file",
			patch: "--- a/kernel/fork.c\t2024-01-01 00:00:00.000000000 +0000\n" +
				"+++ b/kernel/fork.c\t2024-01-01 00:00:01.000000000 +0000\n" +
				"@@ -1 +1 @@\n-a\n+b\n" +
				"--- a/mm/mmap.c\n+++ b/mm/mmap.c\n@@ -1,2 +1,2 @@\n x\n-a\n+b\n" +
				"--- a/kernel/fork.c\n+++ b/kernel/fork.c\n@@ -9 +9 @@\n-c\n+d\n",
			want: []string{"kernel/fork.c", "mm/mmap.c"},
		},
		{
			name:  "new file",
			patch: "--- /dev/null\n+++ b/lib/new.c\n@@ -0,0 +1,2 @@\n+int x;\n+int y;\n",
			want:  []string{"lib/new.c"},
		},
		{
			name:  "deleted file named by its --- line",
			patch: "--- a/lib/old.c\n+++ /dev/null\n@@ -1 +0,0 @@\n-int x;\n",
			want:  []string{"lib/old.c"},
		},
		{
			name: "hunk lines that look like headers are not headers",
			patch: "--- a/scripts/x.sql\n+++ b/scripts/x.sql\n@@ -1,2 +1,2 @@\n" +
				"--- a/not/a/file\n" + // removed line "-- a/not/a/file"
				"+++ b/not/a/file\n" + // added line "++ b/not/a/file"
				" ctx\n",
			want: []string{"scripts/x.sql"},
		},
		{
			name:  "no newline marker and CRLF",
			patch: "--- a/a/b.c\r\n+++ b/a/b.c\r\n@@ -1 +1 @@\r\n-x\r\n\\ No newline at end of file\r\n+y\r\n",
			want:  []string{"a/b.c"},
		},
		{
			name:  "quoted name",
			patch: "--- \"a/dir/sp ace.c\"\n+++ \"b/dir/sp ace.c\"\n@@ -1 +1 @@\n-x\n+y\n",
			want:  []string{"dir/sp ace.c"},
		},
		{
			name:  "mail preamble is ignored",
			patch: "From: someone\nSubject: [PATCH] fix\n\n---\n fs/a.c | 2 +-\n\n--- a/fs/a.c\n+++ b/fs/a.c\n@@ -1 +1 @@\n-x\n+y\n-- \n2.39.2\n",
			want:  []string{"fs/a.c"},
		},
		{name: "empty", patch: "", bad: true},
		{name: "not a diff", patch: "hello\nworld\n", bad: true},
		{name: "headers without hunks", patch: "--- a/x.c\n+++ b/x.c\n", bad: true},
		{name: "no directory to strip", patch: "--- x.c\n+++ x.c\n@@ -1 +1 @@\n-a\n+b\n", bad: true},
		{name: "escapes the tree", patch: "--- a/../etc/passwd\n+++ b/../etc/passwd\n@@ -1 +1 @@\n-a\n+b\n", bad: true},
		{name: "absolute after strip", patch: "--- a//etc/passwd\n+++ b//etc/passwd\n@@ -1 +1 @@\n-a\n+b\n", bad: true},
		{name: "truncated hunk", patch: "--- a/x.c\n+++ b/x.c\n@@ -1,3 +1,3 @@\n a\n-b\n", bad: true},
		{name: "lines after a complete hunk are not part of it", patch: "--- a/x.c\n+++ b/x.c\n@@ -1 +1 @@\n-a\n+b\n+c\n", bad: false, want: []string{"x.c"}},
		{name: "bad hunk header", patch: "--- a/x.c\n+++ b/x.c\n@@ -x +1 @@\n-a\n+b\n", bad: true},
		{name: "+++ without ---", patch: "+++ b/x.c\n@@ -1 +1 @@\n-a\n+b\n", bad: true},
		{name: "unterminated quote", patch: "--- \"a/x.c\n+++ \"b/x.c\n@@ -1 +1 @@\n-a\n+b\n", bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := TouchedFiles([]byte(tt.patch))
			if tt.bad {
				if !errors.Is(err, ErrPatch) {
					t.Fatalf("TouchedFiles = %q, %v; want an ErrPatch error", got, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("TouchedFiles: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("TouchedFiles = %q, want %q", got, tt.want)
			}
		})
	}
}

func FuzzTouchedFiles(f *testing.F) {
	f.Add([]byte("--- a/x.c\n+++ b/x.c\n@@ -1 +1 @@\n-a\n+b\n"))
	f.Add([]byte("--- \"a/x\\\".c\"\n+++ /dev/null\n@@ -1,0 +0,0 @@\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		files, err := TouchedFiles(data)
		if err != nil && !errors.Is(err, ErrPatch) {
			t.Fatalf("error does not wrap ErrPatch: %v", err)
		}
		for _, f := range files {
			if f == "" || f[0] == '/' || f == ".." || len(f) >= 3 && f[:3] == "../" {
				t.Fatalf("unsafe name %q", f)
			}
		}
	})
}

func TestCompareVersions(t *testing.T) {
	tests := []struct {
		a, b string
		want int // sign
	}{
		{"6.1.0-56-amd64", "6.1.0-9-amd64", 1},
		{"6.1.0-9-amd64", "6.1.0-10-amd64", -1},
		{"6.1.0-10-amd64", "6.1.0-10-amd64", 0},
		{"6.10.0-1-amd64", "6.9.0-1-amd64", 1},
		{"6.1.0-10-amd64", "6.1.0-10-cloud-amd64", -1},
		{"6.1.0-10", "6.1.0-10-amd64", -1},
		{"6.1.007", "6.1.7", -1}, // equal value, different text: still a strict order
	}
	for _, tt := range tests {
		got := compareVersions(tt.a, tt.b)
		if sign(got) != tt.want || sign(compareVersions(tt.b, tt.a)) != -tt.want {
			t.Errorf("compareVersions(%q, %q) = %d, want sign %d (and the reverse)", tt.a, tt.b, got, tt.want)
		}
	}
}

func sign(x int) int {
	switch {
	case x < 0:
		return -1
	case x > 0:
		return 1
	}
	return 0
}

func TestMajorMinor(t *testing.T) {
	for in, want := range map[string]string{"6.1.0-56-amd64": "6.1", "6.12.3": "6.12", "5.10-rc1": "5.10", "6": "6"} {
		if got := majorMinor(in); got != want {
			t.Errorf("majorMinor(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestLocalConfig(t *testing.T) {
	in := "CONFIG_A=y\nCONFIG_SYSTEM_TRUSTED_KEYS=\"debian/certs/debian-uefi-certs.pem\"\n" +
		"CONFIG_MODULE_SIG_KEY=\"/secret/key.pem\"\n# CONFIG_B is not set\nCONFIG_SYSTEM_REVOCATION_KEYS=\"x\""
	want := "CONFIG_A=y\nCONFIG_SYSTEM_TRUSTED_KEYS=\"\"\nCONFIG_MODULE_SIG_KEY=\"certs/signing_key.pem\"\n" +
		"# CONFIG_B is not set\nCONFIG_SYSTEM_REVOCATION_KEYS=\"\"\n"
	if got := string(localConfig([]byte(in))); got != want {
		t.Errorf("localConfig:\n%s\nwant:\n%s", got, want)
	}
}
