package kernel_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/livefix/livefix/internal/e2etest"
	"github.com/livefix/livefix/internal/kerneltest"
	"github.com/livefix/livefix/internal/kernelvm"
)

// manifest is the part of livefix-build's NAME.json the tests check.
type manifest struct {
	Name    string `json:"name"`
	Release string `json:"kernel_release"`
	BuildID string `json:"vmlinux_build_id"`
	Level   int    `json:"level"`
	Objects []struct {
		Name      string `json:"name"`
		Functions []struct {
			Name string `json:"name"`
		} `json:"functions"`
	} `json:"objects"`
}

// buildPatch runs `livefix-build kernel` for case c into outDir and
// returns its combined output and exit status.
func buildPatch(ctx context.Context, t testing.TB, livefixBuild string, c acceptanceCase, outDir string) (string, int) {
	t.Helper()
	args := []string{"kernel", "--name", c.name, "-o", outDir}
	for _, p := range c.patches {
		args = append(args, "--patch", patchPath(p))
	}
	if c.level > 0 {
		args = append(args, "--level", strconv.Itoa(c.level))
	}
	cmd := exec.CommandContext(ctx, livefixBuild, args...)
	out, err := cmd.CombinedOutput()
	code := 0
	if err != nil {
		code = -1
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
	}
	return string(out), code
}

// checkManifest compares the functions a built patch replaces with the
// case's expectation.
func checkManifest(t *testing.T, c acceptanceCase, path string, release string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%s: %v", c.name, err)
	}
	var m manifest
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var funcs []string
	for _, o := range m.Objects {
		for _, f := range o.Functions {
			funcs = append(funcs, f.Name)
		}
	}
	slices.Sort(funcs)
	want := slices.Sorted(slices.Values(c.changed))
	if !slices.Equal(funcs, want) {
		t.Errorf("%s: manifest replaces %v, want %v", c.name, funcs, want)
	}
	if m.Release != release || len(m.BuildID) != 40 || (c.level > 0 && m.Level != c.level) {
		t.Errorf("%s: manifest release %q build-id %q level %d, want %s, a 40-digit build-id, level %d",
			c.name, m.Release, m.BuildID, m.Level, release, c.level)
	}
}

// TestAcceptance is issue 3's acceptance: every case is built with
// livefix-build kernel, then all run in one boot of the packaged kernel,
// one after another (each patch replaces all others, so they never
// overlap): behaviour before, `livefix kernel load`, behaviour after,
// `livefix kernel disable`, original behaviour back, `livefix kernel
// unload`, module gone. The refusal cases must fail to build with a clear
// message and leave no module.
func TestAcceptance(t *testing.T) {
	tgt := kerneltest.RequireVM(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	tmp := t.TempDir()
	livefix, livefixBuild := e2etest.Tools(t)
	outDir := filepath.Join(tmp, "patches")

	t.Run("refusals", func(t *testing.T) {
		for _, c := range refusedCases {
			out, code := buildPatch(ctx, t, livefixBuild, c, outDir)
			t.Logf("%s: exit %d\n%s", c.name, code, out)
			if code == 0 {
				t.Errorf("%s: livefix-build kernel succeeded, want a refusal", c.name)
			}
			for _, r := range c.refusal {
				if !strings.Contains(out, r) {
					t.Errorf("%s: output does not say %q", c.name, r)
				}
			}
			if _, err := os.Stat(filepath.Join(outDir, c.name+".ko")); err == nil {
				t.Errorf("%s: a module was written despite the refusal", c.name)
			}
		}
	})

	for _, c := range buildCases {
		start := time.Now()
		out, code := buildPatch(ctx, t, livefixBuild, c, outDir)
		if code != 0 {
			t.Fatalf("%s: livefix-build kernel exit %d:\n%s", c.name, code, out)
		}
		t.Logf("%s built in %.1fs", c.name, time.Since(start).Seconds())
		checkManifest(t, c, filepath.Join(outDir, c.name+".json"), tgt.Release)
	}

	files := map[string]string{"/bin/livefix": livefix}
	for _, c := range buildCases {
		for _, ext := range []string{".ko", ".json"} {
			files["/root/p/"+c.name+ext] = filepath.Join(outDir, c.name+ext)
		}
	}
	res, err := kernelvm.Run(ctx, kernelvm.Config{
		Target:  tgt,
		Script:  acceptanceScript,
		Files:   files,
		Modules: []string{"binfmt_misc"},
		Timeout: 10 * time.Minute,
		Log:     e2etest.GuestLog(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	checkGuestResults(t, res.Output, res.ExitCode, acceptanceChecks)
	t.Logf("guest ran in %s", res.Duration.Round(time.Second))
}

// checkGuestResults requires every named check to have passed exactly
// once and none to have failed (e2etest.CheckGuest), and the script to
// have exited 0; on failure it logs the guest's output.
func checkGuestResults(t *testing.T, output string, exit int, want []string) {
	t.Helper()
	e2etest.CheckGuest(t, output, want)
	if exit != 0 {
		t.Errorf("guest script exit %d", exit)
	}
	if t.Failed() {
		var buf bytes.Buffer
		fmt.Fprintf(&buf, "guest output:\n%s", output)
		t.Log(buf.String())
	}
}
