package elfobj

import (
	"os"
	"testing"
)

// FuzzRead feeds arbitrary bytes to the reader. Malformed input must
// produce an error; anything that reads must also write and read back.
func FuzzRead(f *testing.F) {
	for _, fs := range flagSets {
		b, err := os.ReadFile(compile(f, "sample", fs.flags...))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("\x7fELF"))
	f.Fuzz(func(t *testing.T, data []byte) {
		obj, err := Read(data)
		if err != nil {
			return
		}
		out, err := obj.Write()
		if err != nil {
			return
		}
		if _, err := Read(out); err != nil {
			t.Fatalf("output of Write does not read back: %v", err)
		}
	})
}
