// Command livefix manages live patches on a running host.
//
//	livefix kernel load FILE.ko [--timeout D] [--json]
//	livefix kernel list [--json]
//	livefix kernel disable NAME [--timeout D] [--json]
//	livefix kernel unload NAME [--timeout D] [--json]
//	livefix kernel version [--json]
//	livefix kernel kexec [--release R] [--append ARGS] [--load-only]
//	livefix boot [--retry] [--json]
//	livefix status [--json|--prometheus]
//	livefix info [--json]
//	livefix uname [-asnrvmpio]
//	livefix process patch (--pid PID | --all) PATCH.lfp
//	livefix process unpatch (--pid PID | --all) [NAME]
//	livefix process list [--json]
package main

import (
	"fmt"
	"os"

	"github.com/livefix/livefix/internal/proc"
)

const usage = `usage: livefix COMMAND [ARGS]

commands:
  kernel load|list|disable|unload|version|kexec
        manage kernel live patches (run 'livefix kernel --help')
  boot [--retry]
        re-apply the recorded kernel live patch level at boot
  status [--json|--prometheus]
        is the recorded level applied? (exit 0 yes, 3 nothing recorded,
        4 failed or skipped, 5 transition, 6 off; run 'livefix status --help')
  info [--json]
        applied patches: level, build time, functions, CVE ids, summary
  uname [-a|-r|...]
        uname(1) with the effective kernel version as the release
  process patch|unpatch|list
        live patch running processes and shared libraries
        (run 'livefix process --help')
  register --server URL [--root FILE] [--key ORG-KEY]
        trust a patch repository (run 'livefix register --help')
  update [--dry-run] [--json]
        take the patch level this host's channel allows, now
  daemon
        the agent service: poll the repository and update by itself
`

// version is set at build time with -ldflags "-X main.version=..."
// (make deb does; see packaging/).
var version = "dev"

// Exit codes shared by the subcommands.
const (
	exitOK       = 0
	exitFailure  = 1 // the operation failed; its message says in which state it left the system
	exitBadInput = 2
	exitRefused  = 3 // refused before changing anything (e.g. built for another kernel)
)

func main() {
	proc.Mark("main")
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(exitBadInput)
	}
	var code int
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "kernel":
		code = runKernel(args, os.Stdout, os.Stderr)
	case "boot":
		code = runBoot(os.Args[2:], os.Stdout, os.Stderr)
	case "status":
		code = runStatus(os.Args[2:], os.Stdout, os.Stderr)
	case "info":
		code = runInfo(os.Args[2:], os.Stdout, os.Stderr)
	case "uname":
		code = runUname(os.Args[2:], os.Stdout, os.Stderr)
	case "process":
		code = runProcess(args, os.Stdout, os.Stderr)
	case "--version":
		fmt.Println("livefix", version)
	case "register", "update", "daemon":
		code = runAgent(cmd, args, os.Stderr)
	case "-h", "--help", "help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "livefix: unknown command %q\n\n%s", cmd, usage)
		code = exitBadInput
	}
	proc.Mark("exit")
	proc.FlushTrace(os.Stderr)
	os.Exit(code)
}
