package kbuild

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
)

// ReadModule returns the contents of a kernel module file, decompressed
// when the distribution ships it as .ko.gz, .ko.xz or .ko.zst (the last
// two through the xz and zstd tools, which make setup installs).
func ReadModule(ctx context.Context, path string) ([]byte, error) {
	switch {
	case strings.HasSuffix(path, ".ko"):
		return os.ReadFile(path)
	case strings.HasSuffix(path, ".ko.gz"):
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		zr, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("decompress %s: %w", path, err)
		}
		data, err := io.ReadAll(zr)
		if err != nil {
			return nil, fmt.Errorf("decompress %s: %w", path, err)
		}
		return data, nil
	case strings.HasSuffix(path, ".ko.xz"), strings.HasSuffix(path, ".ko.zst"):
		tool := "xz"
		if strings.HasSuffix(path, ".zst") {
			tool = "zstd"
		}
		var stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, tool, "-dc", path)
		cmd.Stderr = &stderr
		data, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("decompress %s with %s: %w: %s", path, tool, err, strings.TrimSpace(stderr.String()))
		}
		return data, nil
	}
	return nil, fmt.Errorf("module %s: unknown file type (want .ko, .ko.gz, .ko.xz or .ko.zst)", path)
}
