package e2etest

import (
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// Module is the import path the package names given to Build are relative
// to.
const Module = "github.com/livefix/livefix"

var tools struct {
	mu    sync.Mutex
	main  bool              // Main is running the tests
	dir   string            // where the programs are built, made on first use
	built map[string]error  // package -> result of its build
	out   map[string][]byte // package -> go build's output when it failed
}

// Main runs the tests and then removes what Build built; it returns the
// exit code for os.Exit.
func Main(m *testing.M) int {
	tools.mu.Lock()
	tools.main = true
	tools.mu.Unlock()
	code := m.Run()
	tools.mu.Lock()
	defer tools.mu.Unlock()
	if tools.dir != "" {
		os.RemoveAll(tools.dir)
	}
	return code
}

// Build builds each named program once per test binary and returns the
// directory holding them, each as filepath.Join(dir, path.Base(name)). A
// name without a slash is a command of the module (cmd/NAME); one with a
// slash is a package path inside the module ("e2e/dist/simagent"). The
// programs are built static (CGO_ENABLED=0) with -trimpath, as packaged.
// A failed build fails the test, and every later test asking for it.
// Building livefix also builds livefix-agent next to it: livefix runs its
// agent commands (register, update, daemon) through that program.
func Build(t testing.TB, names ...string) string {
	t.Helper()
	tools.mu.Lock()
	defer tools.mu.Unlock()
	if !tools.main {
		t.Fatal("e2etest.Build: the package's tests must run through e2etest.Main (func TestMain(m *testing.M) { os.Exit(e2etest.Main(m)) })")
	}
	if tools.dir == "" {
		dir, err := os.MkdirTemp("", "livefix-e2e-bin-")
		if err != nil {
			t.Fatalf("e2etest.Build: %v", err)
		}
		tools.dir = dir
		tools.built = map[string]error{}
		tools.out = map[string][]byte{}
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go not on PATH: %v", err)
	}
	for i := 0; i < len(names); i++ {
		name := names[i]
		if name == "livefix" && !slices.Contains(names, "livefix-agent") {
			names = append(slices.Clone(names), "livefix-agent")
		}
		pkg := Module + "/cmd/" + name
		if strings.Contains(name, "/") {
			pkg = Module + "/" + name
		}
		berr, done := tools.built[pkg]
		if !done {
			cmd := exec.Command(goBin, "build", "-trimpath", "-o", filepath.Join(tools.dir, path.Base(name)), pkg)
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			var b []byte
			b, berr = cmd.CombinedOutput()
			if berr != nil {
				tools.out[pkg] = b
			}
			tools.built[pkg] = berr
		}
		if berr != nil {
			t.Fatalf("build %s: %v\n%s", name, berr, tools.out[pkg])
		}
	}
	return tools.dir
}

// Tools builds livefix and livefix-build (see Build) and returns their
// paths.
func Tools(t testing.TB) (livefix, livefixBuild string) {
	t.Helper()
	dir := Build(t, "livefix", "livefix-build")
	return filepath.Join(dir, "livefix"), filepath.Join(dir, "livefix-build")
}
