package objdiff

import (
	"os"
	"testing"

	"github.com/livefix/livefix/elfobj"
)

// BenchmarkDiffKernelFork diffs kernel/fork.o of the Debian kernel before
// and after a one-line patch: reading both objects, the diff itself and
// the extraction of the output object, as livefix-build does per file.
// BenchmarkReadKernelFork, the baseline measured in the same run, only
// reads the two objects.
func BenchmarkDiffKernelFork(b *testing.B) {
	orig, patched := forkPair(b)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		a, err := elfobj.Read(orig)
		if err != nil {
			b.Fatal(err)
		}
		p, err := elfobj.Read(patched)
		if err != nil {
			b.Fatal(err)
		}
		res, err := Diff(a, p, Options{})
		if err != nil || len(res.Funcs) == 0 {
			b.Fatalf("diff: %v, %+v", err, res)
		}
		if _, err := res.Output.Write(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReadKernelFork(b *testing.B) {
	orig, patched := forkPair(b)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := elfobj.Read(orig); err != nil {
			b.Fatal(err)
		}
		if _, err := elfobj.Read(patched); err != nil {
			b.Fatal(err)
		}
	}
}

func forkPair(b *testing.B) (orig, patched []byte) {
	pair := buildKernelPair(b, "fork-set-tid-address.patch")
	orig, err := os.ReadFile(pair.Orig)
	if err != nil {
		b.Fatal(err)
	}
	patched, err = os.ReadFile(pair.Patched)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("kernel/fork.o: %d and %d bytes", len(orig), len(patched))
	return orig, patched
}
