package klp

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/livefix/livefix/buildid"
	"github.com/livefix/livefix/internal/kbuild"
)

// VmlinuzBuildID returns the GNU build-id of the kernel in a bzImage. The
// x86 boot protocol's setup header gives the offset and length of the
// compressed payload (payload_offset at 0x248, payload_length at 0x24c,
// relative to the protected-mode code that starts (setup_sects+1)*512
// bytes into the file); the payload decompresses to the vmlinux ELF image
// (objcopy -S keeps its PT_NOTE), whose NT_GNU_BUILD_ID note is the id the
// running kernel shows in /sys/kernel/notes. gzip payloads are read
// directly, xz and zstd ones with the xz or zstd tool. The result is cached
// under kbuild.CacheDir() by the image's path, size and mtime.
func VmlinuzBuildID(ctx context.Context, vmlinuz string) ([]byte, error) {
	fi, err := os.Stat(vmlinuz)
	if err != nil {
		return nil, fmt.Errorf("kernel build-id: %w", err)
	}
	key := strings.NewReplacer("/", "_").Replace(filepath.Clean(vmlinuz)) + "-" +
		strconv.FormatInt(fi.Size(), 10) + "-" + strconv.FormatInt(fi.ModTime().UnixNano(), 10)
	cache := filepath.Join(kbuild.CacheDir(), "klp", "buildid", key)
	if b, err := os.ReadFile(cache); err == nil {
		if id, err := hex.DecodeString(strings.TrimSpace(string(b))); err == nil && len(id) > 0 {
			return id, nil
		}
	}
	img, err := os.ReadFile(vmlinuz)
	if err != nil {
		return nil, fmt.Errorf("kernel build-id: %w", err)
	}
	id, err := bzImageBuildID(ctx, img)
	if err != nil {
		return nil, fmt.Errorf("kernel build-id of %s: %w", vmlinuz, err)
	}
	if err := os.MkdirAll(filepath.Dir(cache), 0o755); err == nil {
		_ = os.WriteFile(cache, []byte(hex.EncodeToString(id)+"\n"), 0o644) // only a cache
	}
	return id, nil
}

func bzImageBuildID(ctx context.Context, img []byte) ([]byte, error) {
	payload, err := bzImagePayload(img)
	if err != nil {
		return nil, err
	}
	raw, err := decompress(ctx, payload)
	if err != nil {
		return nil, err
	}
	return elfBuildID(raw)
}

// bzImagePayload returns the compressed kernel inside a bzImage.
func bzImagePayload(img []byte) ([]byte, error) {
	if len(img) < 0x250 || string(img[0x202:0x206]) != "HdrS" {
		return nil, errors.New("not an x86 bzImage (no HdrS setup header)")
	}
	setupSects := int(img[0x1f1])
	if setupSects == 0 {
		setupSects = 4
	}
	pm := (setupSects + 1) * 512
	off := int(binary.LittleEndian.Uint32(img[0x248:]))
	n := int(binary.LittleEndian.Uint32(img[0x24c:]))
	if n <= 0 || pm+off < 0 || pm+off+n > len(img) {
		return nil, fmt.Errorf("bzImage payload %d+%d bytes lies outside the %d-byte image", pm+off, n, len(img))
	}
	return img[pm+off : pm+off+n], nil
}

// decompress undoes the kernel's payload compression.
func decompress(ctx context.Context, p []byte) ([]byte, error) {
	var tool []string
	switch {
	case bytes.HasPrefix(p, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(bytes.NewReader(p))
		if err != nil {
			return nil, fmt.Errorf("gzip payload: %w", err)
		}
		zr.Multistream(false)
		out, err := io.ReadAll(zr)
		if err != nil && len(out) == 0 {
			return nil, fmt.Errorf("gzip payload: %w", err)
		}
		return out, nil
	case bytes.HasPrefix(p, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		tool = []string{"xz", "-dc", "--single-stream"}
	case bytes.HasPrefix(p, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		tool = []string{"zstd", "-dc"}
	default:
		return nil, fmt.Errorf("unsupported kernel compression (payload starts % x); livefix reads gzip, xz and zstd images", p[:min(6, len(p))])
	}
	cmd := exec.CommandContext(ctx, tool[0], tool[1:]...)
	cmd.Stdin = bytes.NewReader(p)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	err := cmd.Run()
	// The kernel appends the decompressed size after the stream, which
	// some tools report as trailing garbage; what matters is the output.
	if out.Len() == 0 {
		return nil, fmt.Errorf("decompress payload with %s: %v: %s", tool[0], err, strings.TrimSpace(stderr.String()))
	}
	return out.Bytes(), nil
}

// elfBuildID returns the NT_GNU_BUILD_ID note of an ELF image.
func elfBuildID(raw []byte) ([]byte, error) {
	id, err := buildid.FromELF(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("decompressed kernel image: %w", err)
	}
	return id, nil
}
