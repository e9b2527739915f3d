package objdiff

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/livefix/livefix/elfobj"
)

// FuzzDiff mutates the patched object of corpus pairs. Whatever the
// bytes, Diff must return a result or an error, never panic or hang, and
// a patchable result must write out.
func FuzzDiff(f *testing.F) {
	dirs, _ := filepath.Glob("testdata/cases/*/orig.c")
	var origs [][]byte
	for i, dir := range dirs {
		if i%5 != 0 {
			continue
		}
		o, p := compileCase(f, filepath.Dir(dir))
		ob, err := os.ReadFile(o)
		if err != nil {
			f.Fatal(err)
		}
		pb, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(uint8(len(origs)), pb)
		origs = append(origs, ob)
	}
	f.Fuzz(func(t *testing.T, which uint8, patched []byte) {
		orig, err := elfobj.Read(origs[int(which)%len(origs)])
		if err != nil {
			t.Fatal(err)
		}
		p, err := elfobj.Read(patched)
		if err != nil {
			return
		}
		start := time.Now()
		res, err := Diff(orig, p, Options{})
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("diff took %v", d)
		}
		if err != nil || res.Output == nil {
			return
		}
		if _, err := res.Output.Write(); err != nil {
			t.Fatalf("patchable result does not write: %v", err)
		}
	})
}
