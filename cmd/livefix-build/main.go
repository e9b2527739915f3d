// Command livefix-build turns source patches into live patches.
//
//	livefix-build diff ORIG.o PATCHED.o [--json] [-o OUT.o] [-v]
//	livefix-build user --src DIR --patch FILE --build 'CMD' --target PATH [-o OUT.lfp]
//	livefix-build kernel --patch FILE --name NAME [-o DIR]
package main

import (
	"fmt"
	"os"
)

const usage = `usage: livefix-build COMMAND [ARGS]

commands:
  diff ORIG.o PATCHED.o [--json] [-o OUT.o] [-v]
        compare one translation unit compiled before and after a patch
  user --src DIR --patch FILE --build 'CMD' --target PATH [-o OUT.lfp]
        build a live patch for running processes or shared libraries
  kernel --patch FILE [--patch FILE...] --name NAME [--level N] [-o DIR]
        build a livepatch module for the running Debian kernel

Run 'livefix-build COMMAND --help' for a command's options.
`

// version is set at build time with -ldflags "-X main.version=..."
// (make deb does; see packaging/).
var version = "dev"

// Exit codes shared by the subcommands.
const (
	exitOK       = 0
	exitFailure  = 1
	exitBadInput = 2
	exitRefused  = 3
	exitNoChange = 4
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(exitBadInput)
	}
	var code int
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "diff":
		code = runDiff(args, os.Stdout, os.Stderr)
	case "user":
		code = runUser(args, os.Stdout, os.Stderr)
	case "kernel":
		code = runKernel(args, os.Stdout, os.Stderr)
	case "--version":
		fmt.Println("livefix-build", version)
	case "-h", "--help", "help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "livefix-build: unknown command %q\n\n%s", cmd, usage)
		code = exitBadInput
	}
	os.Exit(code)
}
