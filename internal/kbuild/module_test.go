package kbuild

import (
	"bytes"
	"compress/gzip"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

func TestReadModule(t *testing.T) {
	const content = "\x7fELF module"
	dir := t.TempDir()
	plain := filepath.Join(dir, "m.ko")
	os.WriteFile(plain, []byte(content), 0o644)
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write([]byte(content))
	zw.Close()
	gz := filepath.Join(dir, "g.ko.gz")
	os.WriteFile(gz, buf.Bytes(), 0o644)
	xzIn := filepath.Join(dir, "x.ko")
	os.WriteFile(xzIn, []byte(content), 0o644)
	if b, err := exec.Command("xz", xzIn).CombinedOutput(); err != nil {
		t.Fatalf("xz (installed by make setup): %v\n%s", err, b)
	}
	bad := filepath.Join(dir, "b.ko.xz")
	os.WriteFile(bad, []byte("not xz"), 0o644)

	tests := []struct {
		path    string
		wantErr bool
	}{
		{plain, false}, {gz, false}, {xzIn + ".xz", false},
		{bad, true}, {filepath.Join(dir, "m.txt"), true}, {filepath.Join(dir, "missing.ko"), true},
	}
	for _, tt := range tests {
		t.Run(filepath.Base(tt.path), func(t *testing.T) {
			got, err := ReadModule(context.Background(), tt.path)
			if tt.wantErr {
				if err == nil {
					t.Errorf("no error for %s", tt.path)
				}
				return
			}
			if err != nil || string(got) != content {
				t.Errorf("ReadModule = %q, %v", got, err)
			}
		})
	}
}
