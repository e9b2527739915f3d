package ulp

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// systemLibc is the C library of this machine, whose .eh_frame_hdr a GNU
// linker wrote.
func systemLibc(t testing.TB) string {
	for _, p := range []string{"/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/libc.so.6", "/lib64/libc.so.6"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Skip("no libc.so.6 found")
	return ""
}

// The search table read in place gives the FDE that decoding every entry
// gives, for every entry's address, the bytes around it and addresses
// outside the table.
func TestEHFindInPlace(t *testing.T) {
	in := readEH(systemLibc(t))
	if in == nil || in.sdata4 == nil {
		t.Fatalf("libc's unwind table not read in place: %+v", in)
	}
	// The reference: every entry decoded with the general reader.
	dec := &ehTable{hdr: in.hdr, frame: in.frame, hdrAddr: in.hdrAddr, frameAddr: in.frameAddr}
	r := ehReader{b: in.sdata4, base: in.hdrAddr} // datarel: from the start of .eh_frame_hdr
	for r.pos < len(r.b) {
		pc, err1 := r.ptr(0x3b)
		fde, err2 := r.ptr(0x3b)
		if err1 != nil || err2 != nil {
			t.Fatalf("decode entry at %d: %v %v", r.pos, err1, err2)
		}
		dec.table = append(dec.table, ehEntry{pc, fde})
	}
	if len(dec.table) < 1000 {
		t.Fatalf("libc's table has %d entries, want thousands", len(dec.table))
	}
	check := func(pc uint64) {
		a, okA := in.find(pc)
		b, okB := dec.find(pc)
		if a != b || okA != okB {
			t.Fatalf("find(%#x): in place %#x %v, decoded %#x %v", pc, a, okA, b, okB)
		}
	}
	check(0)
	check(dec.table[0].pc - 1)
	for _, e := range dec.table {
		check(e.pc)
		check(e.pc + 1)
		check(e.pc - 1)
	}
	check(^uint64(0))
	// And the rules found through it are those of the entries.
	ruled := 0
	for _, e := range dec.table[:200] {
		if _, err := in.rule(e.pc); err == nil {
			ruled++
		}
	}
	if ruled < 190 {
		t.Errorf("rules for %d of the first 200 entries' addresses, want nearly all", ruled)
	}
}

// FuzzEHFromImage: finding the unwind tables in an object's file never
// panics on a damaged file (it runs before every stop, on files of the
// target). Run counted:
// go test -run '^$' -fuzz FuzzEHFromImage -fuzztime 20000x -parallel 1 ./ulp
func FuzzEHFromImage(f *testing.F) {
	if gcc, err := exec.LookPath("gcc"); err == nil {
		dir := f.TempDir()
		src, so := filepath.Join(dir, "a.c"), filepath.Join(dir, "a.so")
		os.WriteFile(src, []byte("int g(int x);\nint f(int x) { return g(x) + 1; }\nint h(int x) { return x * 3; }\n"), 0o644)
		if out, err := exec.Command(gcc, "-O2", "-shared", "-fPIC", "-o", so, src).CombinedOutput(); err != nil {
			f.Fatalf("gcc: %v\n%s", err, out)
		}
		if b, err := os.ReadFile(so); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("\x7fELF\x02\x01\x01"))
	f.Fuzz(func(t *testing.T, image []byte) {
		eh := ehFromImage(image)
		if eh == nil {
			return
		}
		for _, pc := range []uint64{0, 0x1000, 0x1100, eh.hdrAddr, eh.frameAddr, ^uint64(0)} {
			eh.find(pc)
			eh.rule(pc)
		}
	})
}
