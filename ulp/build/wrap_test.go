package build

import (
	"strings"
	"testing"
)

// TestPlanReplay: every shape of compiler invocation becomes one compile
// per source file with the invocation's compile options only.
func TestPlanReplay(t *testing.T) {
	const tree = "/w/orig"
	cases := []struct {
		name string
		inv  invocation
		want []string // per job: src, then the args before the added flags
	}{
		{"compile and link in one command",
			invocation{lang: "c", dir: tree, args: []string{"-O2", "-g", "-fPIC", "-shared", "-o", "libauth.so", "auth.c"}},
			[]string{"auth.c: -O2 -g -fPIC"}},
		{"program from two sources and a library",
			invocation{lang: "c", dir: tree, args: []string{"-O2", "-o", "app", "a.c", "sub/b.c", "-L.", "-lauth", "-pthread", "-Wl,-rpath,$ORIGIN"}},
			[]string{"a.c: -O2 -pthread", "sub/b.c: -O2 -pthread"}},
		{"make-style object with dependency file",
			invocation{lang: "c", dir: tree + "/src", args: []string{"-DX=1", "-I", "../include", "-MD", "-MF", ".deps/x.Tpo", "-MT", "x.o", "-c", "-o", "x.o", "x.c"}},
			[]string{"src/x.c: -DX=1 -I ../include"}},
		{"libtool PIC compile",
			invocation{lang: "c", dir: tree, args: []string{"-c", "z.c", "-fPIC", "-DPIC", "-o", ".libs/z.o"}},
			[]string{"z.c: -fPIC -DPIC"}},
		{"link only", invocation{lang: "c", dir: tree, args: []string{"-shared", "-o", "libz.so", "a.o", "b.o", "libx.a"}}, nil},
		{"preprocess only", invocation{lang: "c", dir: tree, args: []string{"-E", "a.c"}}, nil},
		{"source outside the tree", invocation{lang: "c", dir: "/tmp", args: []string{"-c", "conftest.c"}}, nil},
		{"g++ compiles .c as C++", invocation{lang: "c++", dir: tree, args: []string{"-c", "a.c"}}, []string{"a.c(c++): "}},
		{"C++ source", invocation{lang: "c", dir: tree, args: []string{"-O2", "-c", "k.cc"}}, []string{"k.cc(c++): -O2"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			jobs := planReplay([]invocation{c.inv}, tree, "/src", "/usr/bin/gcc", "/usr/bin/g++")
			var got []string
			for _, j := range jobs {
				i := 0
				for i < len(j.args) && j.args[i] != "-ffunction-sections" {
					i++
				}
				s := j.src
				if j.lang == "c++" {
					s += "(c++)"
					if j.cc != "/usr/bin/g++" {
						t.Errorf("%s compiled with %s", j.src, j.cc)
					}
				}
				got = append(got, s+": "+strings.Join(j.args[:i], " "))
				tail := strings.Join(j.args[i:], " ")
				if !strings.Contains(tail, "-ffunction-sections -fdata-sections -fno-lto -ffile-prefix-map=/w/orig=/src -c ") {
					t.Errorf("added flags: %s", tail)
				}
			}
			if strings.Join(got, "|") != strings.Join(c.want, "|") {
				t.Fatalf("got %q, want %q", got, c.want)
			}
		})
	}
	// The same compile in the other tree has the same key; another
	// option makes another key.
	a := planReplay([]invocation{{lang: "c", dir: tree, args: []string{"-O2", "-I" + tree + "/inc", "-c", "a.c"}}}, tree, "/src", "gcc", "g++")
	b := planReplay([]invocation{{lang: "c", dir: "/w/patched", args: []string{"-O2", "-I/w/patched/inc", "-c", "a.c"}}}, "/w/patched", "/src", "gcc", "g++")
	d := planReplay([]invocation{{lang: "c", dir: tree, args: []string{"-O1", "-c", "a.c"}}}, tree, "/src", "gcc", "g++")
	if a[0].key != b[0].key || a[0].key == d[0].key {
		t.Fatalf("keys: %s %s %s", a[0].key, b[0].key, d[0].key)
	}
}
