// Package kerneltest decides, for tests that need the packaged kernel,
// whether to run, skip or fail.
//
// Kernel and VM tests need files that only `make setup` installs. Without
// them a test skips and says why, so `go test ./...` stays useful on any
// machine. With LIVEFIX_REQUIRE_VM=1 (set by `make test`, hence by CI) the
// same situation fails the test instead: CI can never pass by skipping the
// kernel tests.
package kerneltest

import (
	"os"
	"os/exec"
	"testing"

	"github.com/livefix/livefix/internal/kbuild"
)

// RequireEnv is the environment variable that turns skips into failures.
const RequireEnv = "LIVEFIX_REQUIRE_VM"

// Required reports whether kernel tests must run (LIVEFIX_REQUIRE_VM=1).
func Required() bool { return os.Getenv(RequireEnv) == "1" }

// RequireTarget returns the packaged kernel target for tests that build
// kernel objects or modules: image, config, headers and source must be
// installed, with make, gcc, patch, tar and xz on PATH. In -short mode the
// test is skipped unless kernel tests are required.
func RequireTarget(t testing.TB) kbuild.Target {
	t.Helper()
	if testing.Short() && !Required() {
		t.Skip("kernel build test skipped in -short mode")
	}
	tgt, err := kbuild.DefaultTarget("")
	if err != nil {
		unavailable(t, err.Error())
	}
	for _, tool := range []string{"make", "gcc", "patch", "tar", "xz"} {
		if _, err := exec.LookPath(tool); err != nil {
			unavailable(t, tool+" not on PATH; run `make setup`")
		}
	}
	return tgt
}

// RequireVM returns the packaged kernel target for tests that boot it in
// qemu (internal/kernelvm): in addition to RequireTarget's needs, qemu and a
// static busybox must be installed.
func RequireVM(t testing.TB) kbuild.Target {
	t.Helper()
	tgt := RequireTarget(t)
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		unavailable(t, "qemu-system-x86_64 not on PATH; run `make setup`")
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		unavailable(t, "/bin/busybox (busybox-static) missing; run `make setup`")
	}
	return tgt
}

func unavailable(t testing.TB, reason string) {
	t.Helper()
	if Required() {
		t.Fatalf("%s (%s=1: kernel tests may not be skipped)", reason, RequireEnv)
	}
	t.Skipf("%s (set %s=1 to make this a failure)", reason, RequireEnv)
}
