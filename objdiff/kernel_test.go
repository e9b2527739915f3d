package objdiff

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/livefix/livefix/elfobj"
	"github.com/livefix/livefix/internal/kbuild"
	"github.com/livefix/livefix/internal/kerneltest"
)

type logWriter struct{ t testing.TB }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

var (
	kernelPairsOnce sync.Once
	kernelPairs     map[string]kbuild.ObjectPair
	kernelPairsErr  error
)

// buildKernelPair compiles the object a testdata/kernel patch touches,
// before and after, in the prepared Debian tree. Pairs are built once
// per test binary and shared by the tests and benchmarks.
func buildKernelPair(t testing.TB, patch string) kbuild.ObjectPair {
	t.Helper()
	tgt := kerneltest.RequireTarget(t)
	kernelPairsOnce.Do(func() {
		ctx := context.Background()
		tree, err := kbuild.Prepare(ctx, tgt, logWriter{t})
		if err != nil {
			kernelPairsErr = err
			return
		}
		patches, _ := filepath.Glob("testdata/kernel/*.patch")
		dir, err := os.MkdirTemp("", "livefix-objdiff-kernel-")
		if err != nil {
			kernelPairsErr = err
			return
		}
		kernelPairs = make(map[string]kbuild.ObjectPair)
		for _, p := range patches {
			if pair, ok := prebuiltPair(p); ok {
				kernelPairs[filepath.Base(p)] = pair
				continue
			}
			abs, _ := filepath.Abs(p)
			pairs, err := tree.BuildPair(ctx, []string{abs}, filepath.Join(dir, filepath.Base(p)), logWriter{t})
			if err != nil {
				kernelPairsErr = err
				return
			}
			if len(pairs) != 1 {
				kernelPairsErr = os.ErrInvalid
				return
			}
			kernelPairs[filepath.Base(p)] = pairs[0]
		}
	})
	if kernelPairsErr != nil {
		t.Fatalf("build kernel objects: %v", kernelPairsErr)
	}
	pair, ok := kernelPairs[patch]
	if !ok {
		t.Fatalf("no testdata/kernel/%s", patch)
	}
	return pair
}

// PairsEnv names a directory of object pairs built earlier, laid out as
// these tests and kbuild.BuildPair write them (DIR/PATCH/orig/FILE.o and
// DIR/PATCH/patched/FILE.o); a patch whose pair is there is not compiled
// again. Kernel objects take minutes to build on a loaded machine, and the
// tree and compiler are the same from one run to the next.
const PairsEnv = "LIVEFIX_OBJDIFF_KERNEL_PAIRS"

func prebuiltPair(patch string) (kbuild.ObjectPair, bool) {
	dir := os.Getenv(PairsEnv)
	if dir == "" {
		return kbuild.ObjectPair{}, false
	}
	data, err := os.ReadFile(patch)
	if err != nil {
		return kbuild.ObjectPair{}, false
	}
	files, err := kbuild.TouchedFiles(data)
	if err != nil || len(files) != 1 {
		return kbuild.ObjectPair{}, false
	}
	obj := strings.TrimSuffix(files[0], ".c") + ".o"
	pair := kbuild.ObjectPair{Source: files[0],
		Orig:    filepath.Join(dir, filepath.Base(patch), "orig", obj),
		Patched: filepath.Join(dir, filepath.Base(patch), "patched", obj)}
	for _, f := range []string{pair.Orig, pair.Patched} {
		if _, err := os.Stat(f); err != nil {
			return kbuild.ObjectPair{}, false
		}
	}
	return pair, true
}

// TestKernelObjects diffs objects of the Debian kernel built before and
// after small patches, and checks the change sets against golden files.
func TestKernelObjects(t *testing.T) {
	patches, _ := filepath.Glob("testdata/kernel/*.patch")
	if len(patches) < 3 {
		t.Fatalf("want at least three kernel patches, have %d", len(patches))
	}
	for _, p := range patches {
		name := filepath.Base(p)
		t.Run(strings.TrimSuffix(name, ".patch"), func(t *testing.T) {
			pair := buildKernelPair(t, name)
			res, orig, patched := diffFiles(t, pair.Orig, pair.Patched)
			want := golden(t, strings.TrimSuffix(p, ".patch")+".json", res)
			var explained bytes.Buffer
			if err := WriteExplanation(&explained, pair.Source, res); err != nil {
				t.Fatal(err)
			}
			goldenText(t, strings.TrimSuffix(p, ".patch")+".explain.txt", explained.Bytes())
			got := res.ChangeSet
			if !slices.Equal(got.Changed, want.Changed) || !slices.Equal(got.New, want.New) ||
				!slices.Equal(got.NewData, want.NewData) || got.NoFunctionalChange != want.NoFunctionalChange ||
				len(got.Refused) != len(want.Refused) || exitCode(res) != want.Exit {
				t.Errorf("change set of %s:\n got %+v (exit %d)\nwant %+v", pair.Source, got, exitCode(res), want)
			}
			for _, f := range res.Funcs {
				t.Logf("%s: %s", f.Name, f.Reason)
			}
			if res.Output != nil {
				checkOutput(t, res, orig, patched)
				checkKernelOutput(t, res)
			}
		})
	}
}

// checkKernelOutput checks that the special sections of a kernel object
// were cut down to the included functions: every entry of __mcount_loc
// points into an included function, and each included function that
// has an ftrace entry keeps it.
func checkKernelOutput(t *testing.T, res *Result) {
	t.Helper()
	data, err := res.Output.Write()
	if err != nil {
		t.Fatal(err)
	}
	out, err := elfobj.Read(data)
	if err != nil {
		t.Fatal(err)
	}
	funcs := make(map[*elfobj.Section]bool)
	for _, s := range out.Symbols {
		if s.Section != nil && isCode(s.Section) {
			funcs[s.Section] = true
		}
	}
	mcount := 0
	for _, s := range out.Sections {
		if !s.IsRela() || s.Target == nil || tableFor(s.Target.Name) == nil {
			continue
		}
		tb := tableFor(s.Target.Name)
		for _, r := range s.Relocs {
			if r.Offset%tb.entSize != tb.anchor || r.Sym == nil {
				continue
			}
			if r.Sym.Section == nil || !funcs[r.Sym.Section] {
				t.Errorf("%s entry at %#x points at %s, outside the included functions", s.Target.Name, r.Offset, r.Sym.Name)
			}
			if s.Target.Name == "__mcount_loc" {
				mcount++
			}
		}
	}
	if mcount < len(res.Funcs) {
		t.Errorf("__mcount_loc has %d entries for %d replaced functions", mcount, len(res.Funcs))
	}
}
