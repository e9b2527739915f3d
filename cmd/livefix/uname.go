package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/livefix/livefix/kernelpatch"
)

const unameUsage = `usage: livefix uname [OPTION]...

Prints system information like uname(1), with the effective kernel
version (RELEASE+livefixN while live patch level N is applied) in place
of the kernel release, for vulnerability scanners (like kcare-uname).
Without an option, the same as -s.

  -a, --all                print all of the following, omitting -p and -i when unknown
  -s, --kernel-name        kernel name
  -n, --nodename           network node hostname
  -r, --kernel-release     effective kernel release
  -v, --kernel-version     kernel version
  -m, --machine            machine hardware name
  -p, --processor          processor type (or "unknown")
  -i, --hardware-platform  hardware platform (or "unknown")
  -o, --operating-system   operating system
      --help               show this help
`

// uname fields in output order.
const (
	unameS = 1 << iota
	unameN
	unameR
	unameV
	unameM
	unameP
	unameI
	unameO
	unameAll = unameS | unameN | unameR | unameV | unameM | unameO
)

func runUname(args []string, stdout, stderr io.Writer) int {
	long := map[string]int{"all": -1, "kernel-name": unameS, "nodename": unameN, "kernel-release": unameR,
		"kernel-version": unameV, "machine": unameM, "processor": unameP, "hardware-platform": unameI, "operating-system": unameO}
	short := map[rune]int{'a': -1, 's': unameS, 'n': unameN, 'r': unameR, 'v': unameV, 'm': unameM, 'p': unameP, 'i': unameI, 'o': unameO}
	var sel int
	all := false
	add := func(v int) {
		if v < 0 {
			all = true
		} else {
			sel |= v
		}
	}
	stateDir := ""
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--help" || a == "-h":
			fmt.Fprint(stdout, unameUsage)
			return exitOK
		case a == "--state-dir" && i+1 < len(args):
			i++
			stateDir = args[i]
		case strings.HasPrefix(a, "--state-dir="):
			stateDir = strings.TrimPrefix(a, "--state-dir=")
		case strings.HasPrefix(a, "--"):
			v, ok := long[a[2:]]
			if !ok {
				fmt.Fprintf(stderr, "livefix uname: unrecognized option '%s'\nTry 'livefix uname --help' for more information.\n", a)
				return exitBadInput
			}
			add(v)
		case strings.HasPrefix(a, "-") && len(a) > 1:
			for _, c := range a[1:] {
				v, ok := short[c]
				if !ok {
					fmt.Fprintf(stderr, "livefix uname: invalid option -- '%c'\nTry 'livefix uname --help' for more information.\n", c)
					return exitBadInput
				}
				add(v)
			}
		default:
			fmt.Fprintf(stderr, "livefix uname: extra operand '%s'\nTry 'livefix uname --help' for more information.\n", a)
			return exitBadInput
		}
	}
	if sel == 0 && !all {
		sel = unameS
	}
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		fmt.Fprintf(stderr, "livefix uname: %v\n", err)
		return exitFailure
	}
	str := func(b []byte) string { return string(bytes.TrimRight(b, "\x00")) }
	sys := newKernelSystem()
	m := kernelpatch.NewManager(sys, stateDirRoot(stateDir))
	reconcileReadOnly(context.Background(), m, stderr)
	release, level, err := sys.Version()
	if err != nil {
		fmt.Fprintf(stderr, "livefix uname: %v\n", err)
		return exitFailure
	}
	fields := []struct {
		bit   int
		value string
	}{
		{unameS, str(u.Sysname[:])},
		{unameN, str(u.Nodename[:])},
		{unameR, kernelpatch.FormatVersion(release, level)},
		{unameV, str(u.Version[:])},
		{unameM, str(u.Machine[:])},
		{unameP, "unknown"},
		{unameI, "unknown"},
		{unameO, "GNU/Linux"},
	}
	var out []string
	for _, f := range fields {
		want := sel&f.bit != 0
		if all && unameAll&f.bit != 0 {
			want = true
		}
		if all && f.value == "unknown" {
			want = false
		}
		if want {
			out = append(out, f.value)
		}
	}
	fmt.Fprintln(stdout, strings.Join(out, " "))
	return exitOK
}
