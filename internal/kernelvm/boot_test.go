package kernelvm

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/livefix/livefix/internal/kbuild"
)

// fakeQemu puts a qemu-system-x86_64 on PATH whose first hangs boots
// print nothing and never exit (a guest hung before init), and whose
// later ones run a script that prints "hi". It returns the file that
// counts its boots.
func fakeQemu(t *testing.T, hangs int) string {
	t.Helper()
	dir := t.TempDir()
	count := filepath.Join(dir, "boots")
	script := `#!/bin/sh
n=$(cat ` + count + ` 2>/dev/null || echo 0); n=$((n+1)); echo $n > ` + count + `
if [ $n -le ` + strconv.Itoa(hangs) + ` ]; then exec sleep 60; fi
while [ $# -gt 0 ]; do [ "$1" = -initrd ] && initrd=$2; shift; done
nonce=$(zcat "$initrd" | grep -a -o 'LIVEFIX-START-[0-9a-f]*' | head -1 | sed 's/LIVEFIX-START-//')
echo "LIVEFIX-START-$nonce"
echo hi
printf '\nLIVEFIX-EXIT-%s=0\n' "$nonce"
`
	if err := os.WriteFile(filepath.Join(dir, "qemu-system-x86_64"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+":"+os.Getenv("PATH"))
	return count
}

func TestBootHungIsRetried(t *testing.T) {
	old := busyboxPath
	busyboxPath = "/bin/sh" // any file: the fake qemu never runs it
	t.Cleanup(func() { busyboxPath = old })
	kernel := filepath.Join(t.TempDir(), "vmlinuz")
	os.WriteFile(kernel, []byte("not a kernel"), 0o644)
	for _, tc := range []struct {
		name      string
		hangs     int
		wantBoots int
		wantErr   error
	}{
		{"boots at once", 0, 1, nil},
		{"hangs once", 1, 2, nil},
		{"hangs twice", 2, 3, nil},
		{"hangs every time", BootAttempts, BootAttempts, ErrBootHung},
	} {
		t.Run(tc.name, func(t *testing.T) {
			count := fakeQemu(t, tc.hangs)
			var log strings.Builder
			start := time.Now()
			res, err := Run(context.Background(), Config{
				Target: kbuild.Target{Vmlinuz: kernel}, Script: "echo hi",
				Timeout: 30 * time.Second, BootTimeout: 300 * time.Millisecond, Log: &log,
			})
			b, _ := os.ReadFile(count)
			boots, _ := strconv.Atoi(strings.TrimSpace(string(b)))
			if boots != tc.wantBoots {
				t.Errorf("%d boots, want %d (log %q)", boots, tc.wantBoots, log.String())
			}
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Run: %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil || strings.TrimSpace(res.Output) != "hi" || res.ExitCode != 0 {
				t.Fatalf("Run: %+v, %v; want output hi", res, err)
			}
			if d := time.Since(start); d > 20*time.Second {
				t.Errorf("took %v: a hung boot was not cut at BootTimeout", d)
			}
		})
	}
}
