// Command livefix-agent runs the agent commands of livefix:
//
//	livefix-agent register --server URL [--root FILE] [--key ORG-KEY]
//	livefix-agent update [--dry-run] [--json]
//	livefix-agent daemon
//
// Users run them as `livefix register`, `livefix update` and `livefix
// daemon`: livefix execs this program (installed in /usr/lib/livefix, or
// next to livefix in a build tree) with the same arguments. It is a
// program of its own so that the agent's dependencies (TUF, signature,
// protobuf and container-registry libraries) and their package
// initialisation stay out of every other livefix command.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/livefix/livefix/internal/cli"
)

const usage = `usage: livefix COMMAND [ARGS]

livefix-agent runs livefix's agent commands (run them as livefix COMMAND):

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

// Exit codes, as livefix's.
const (
	exitOK       = 0
	exitFailure  = 1
	exitBadInput = 2
	exitRefused  = 3
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(exitBadInput)
	}
	var code int
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "register":
		code = runRegister(args, os.Stdout, os.Stderr)
	case "update":
		code = runUpdate(args, os.Stdout, os.Stderr)
	case "daemon":
		code = runDaemon(args, os.Stdout, os.Stderr)
	case "--version":
		fmt.Println("livefix", version)
	case "-h", "--help", "help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "livefix-agent: unknown command %q\n\n%s", cmd, usage)
		code = exitBadInput
	}
	os.Exit(code)
}

func newFlags(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	return cli.NewFlagSet(name, "usage: livefix "+synopsis, stderr)
}
