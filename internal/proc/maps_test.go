package proc

import (
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
)

func TestParseMaps(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []Mapping
		wantErr string
	}{
		{
			name: "file",
			in:   "55e59608f000-55e596091000 r--p 00000000 fe:00 247026                     /usr/bin/cat\n",
			want: []Mapping{{Start: 0x55e59608f000, End: 0x55e596091000, Perm: "r--p", Dev: "fe:00", Inode: 247026, Path: "/usr/bin/cat"}},
		},
		{
			name: "anonymous and special",
			in: "7f2c4c3e8000-7f2c4c40a000 rw-p 00000000 00:00 0 \n" +
				"7ffd1000-7ffd2000 rw-p 00000000 00:00 0                          [stack]\n",
			want: []Mapping{
				{Start: 0x7f2c4c3e8000, End: 0x7f2c4c40a000, Perm: "rw-p", Dev: "00:00"},
				{Start: 0x7ffd1000, End: 0x7ffd2000, Perm: "rw-p", Dev: "00:00", Path: "[stack]"},
			},
		},
		{
			name: "deleted with spaces and shared",
			in:   "1000-3000 r-xs 0001a000 103:02 99 /tmp/my lib.so (deleted)",
			want: []Mapping{{Start: 0x1000, End: 0x3000, Perm: "r-xs", Offset: 0x1a000, Dev: "103:02", Inode: 99, Path: "/tmp/my lib.so (deleted)"}},
		},
		{name: "empty", in: "", want: nil},
		{name: "bad range", in: "1000 r-xp 0 00:00 0", wantErr: "bad address range"},
		{name: "reversed", in: "2000-1000 r-xp 0 00:00 0", wantErr: "ends before"},
		{name: "bad perm", in: "1000-2000 rwz 0 00:00 0", wantErr: "bad permissions"},
		{name: "bad offset", in: "1000-2000 r-xp zz 00:00 0", wantErr: "bad offset"},
		{name: "bad dev", in: "1000-2000 r-xp 0 0000 0", wantErr: "bad device"},
		{name: "bad inode", in: "1000-2000 r-xp 0 00:00 x", wantErr: "bad inode"},
		{name: "truncated", in: "1000-2000 r-xp", wantErr: "empty offset"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseMaps(strings.NewReader(tc.in))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestMappingHelpers(t *testing.T) {
	m := Mapping{Start: 0x1000, End: 0x3000, Perm: "r-xp", Inode: 5, Path: "/lib/x.so (deleted)"}
	if !m.Executable() || m.Writable() || !m.Readable() || m.Shared() || !m.FileBacked() || !m.Deleted() ||
		m.FilePath() != "/lib/x.so" || m.Size() != 0x2000 || !m.Contains(0x2fff) || m.Contains(0x3000) {
		t.Fatalf("helpers wrong for %v", m)
	}
	if got := m.MapFile(42); got != "/proc/42/map_files/1000-3000" {
		t.Fatalf("MapFile = %q", got)
	}
	if (Mapping{Path: "[vdso]", Inode: 0}).FileBacked() {
		t.Fatal("[vdso] reported as file-backed")
	}
}

func TestReadMapsSelf(t *testing.T) {
	maps, err := ReadMaps(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	exe, _ := os.Executable()
	found := false
	for _, m := range maps {
		if m.FilePath() == exe {
			found = true
		}
	}
	if !found {
		t.Fatalf("own executable %s not in maps", exe)
	}
	if _, err := ReadMaps(1 << 30); err == nil || !isNoProcess(err) {
		t.Fatalf("ReadMaps(no such pid) err = %v, want ErrNoProcess", err)
	}
}

func FuzzParseMaps(f *testing.F) {
	if b, err := os.ReadFile("/proc/self/maps"); err == nil {
		f.Add(string(b))
	}
	f.Add("1000-2000 r-xp 00000000 08:01 1234 /bin/x (deleted)\n")
	f.Add("1000-2000 ---p 0 0:0 0\n\n")
	f.Add("ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]")
	f.Fuzz(func(t *testing.T, in string) {
		maps, err := ParseMaps(strings.NewReader(in))
		if err != nil {
			return
		}
		for _, m := range maps {
			if m.End < m.Start || len(m.Perm) != 4 {
				t.Fatalf("invalid mapping accepted: %+v", m)
			}
			// What we parse, we can print and parse back identically.
			again, err := ParseMaps(strings.NewReader(m.String()))
			if err != nil || len(again) != 1 {
				t.Fatalf("reparse of %q: %v %v", m.String(), again, err)
			}
			if strings.TrimLeft(m.Path, " ") == m.Path && !reflect.DeepEqual(again[0], m) {
				t.Fatalf("round trip changed %+v to %+v", m, again[0])
			}
		}
	})
}

func TestReachWindow(t *testing.T) {
	const G = uint64(1) << 30
	tests := []struct {
		name           string
		tlo, thi, size uint64
		ok             bool
	}{
		{"point", 4 * G, 4*G + 1, 4096, true},
		{"range", 4 * G, 5 * G, 4096, true},
		{"low target", 0x400000, 0x500000, 4096, true},
		{"too wide", 4 * G, 8 * G, 4096, false},
		{"empty", 4 * G, 4 * G, 4096, false},
		{"zero size", 4 * G, 4*G + 1, 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			lo, hi, ok := reachWindow(tc.tlo, tc.thi, tc.size)
			if ok != tc.ok {
				t.Fatalf("ok = %v, want %v", ok, tc.ok)
			}
			if !ok {
				return
			}
			for _, s := range []uint64{lo, hi} {
				if !within(s, s+tc.size, tc.tlo, tc.thi) {
					t.Fatalf("start %#x not within reach of [%#x,%#x)", s, tc.tlo, tc.thi)
				}
			}
			if lo > 0 && within(lo-1, lo-1+tc.size, tc.tlo, tc.thi) {
				t.Fatalf("window not tight below: %#x", lo)
			}
			if within(hi+1, hi+1+tc.size, tc.tlo, tc.thi) {
				t.Fatalf("window not tight above: %#x", hi)
			}
		})
	}
}

// within reports whether every address of [a, b) reaches every address of
// [c, d) with |x-y| <= rel32Reach.
func within(a, b, c, d uint64) bool {
	return int64(b-1)-int64(c) <= rel32Reach && int64(d-1)-int64(a) <= rel32Reach
}

func isNoProcess(err error) bool { return errors.Is(err, ErrNoProcess) }

func TestGapCandidates(t *testing.T) {
	const G = uint64(1) << 30
	exe := []Mapping{
		{Start: 0x555555554000, End: 0x555555556000, Perm: "r--p", Inode: 1, Path: "/bin/t"},
		{Start: 0x555555556000, End: 0x555555558000, Perm: "r-xp", Inode: 1, Path: "/bin/t"},
		{Start: 0x7ffff7dd0000, End: 0x7ffff7ff0000, Perm: "r-xp", Inode: 2, Path: "/lib/libc.so.6"},
		{Start: 0x7ffffffde000, End: 0x7ffffffff000, Perm: "rw-p", Path: "[stack]"},
	}
	tests := []struct {
		name     string
		maps     []Mapping
		tlo, thi uint64
		size     uint64
		want     int // minimum number of candidates
	}{
		{"near exe", exe, 0x555555554000, 0x555555558000, 1 << 20, 1},
		{"near libc", exe, 0x7ffff7dd0000, 0x7ffff7ff0000, 64 << 10, 1},
		{"low exe", []Mapping{{Start: 0x400000, End: 0x600000, Perm: "r-xp", Inode: 1, Path: "/bin/s"}}, 0x400000, 0x600000, 4096, 1},
		{"all full", []Mapping{{Start: 0, End: 1 << 47, Perm: "r--p"}}, 4 * G, 4*G + 1, 4096, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cands := gapCandidates(tc.maps, tc.tlo, tc.thi, tc.size, 8)
			if len(cands) < tc.want || (tc.want == 0 && len(cands) != 0) {
				t.Fatalf("got %d candidates %#x, want >= %d", len(cands), cands, tc.want)
			}
			var prevDist uint64
			for i, c := range cands {
				if c%pageSize != 0 {
					t.Fatalf("candidate %#x not page aligned", c)
				}
				if !within(c, c+tc.size, tc.tlo, tc.thi) {
					t.Fatalf("candidate %#x out of reach", c)
				}
				for _, m := range tc.maps {
					if c < m.End+pageSize && c+tc.size+pageSize > m.Start {
						t.Fatalf("candidate %#x overlaps or touches %v", c, m)
					}
					if m.Path == "[stack]" && c+tc.size > m.Start-stackGrowthReserve && c < m.Start {
						t.Fatalf("candidate %#x in stack growth reserve", c)
					}
				}
				d := dist(c, c+tc.size, tc.tlo, tc.thi)
				if i > 0 && d < prevDist {
					t.Fatalf("candidates not sorted by distance: %#x", cands)
				}
				prevDist = d
			}
		})
	}
}

func dist(a, b, c, d uint64) uint64 {
	switch {
	case b <= c:
		return c - b
	case a >= d:
		return a - d
	}
	return 0
}
