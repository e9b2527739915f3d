// Command livefix-server distributes live patches to a fleet: a signed
// static patch repository, feeds, host check-ins and a dashboard.
//
// Only the command's skeleton exists so far; see docs/architecture.md.
package main

import (
	"fmt"
	"os"
)

const usage = `usage: livefix-server COMMAND

commands:
  version    print the version
  serve      serve the repository, the host API, metrics and the dashboard
  org        add|list|revoke: organisations and their registration keys
  user       add|list|delete: dashboard operators
  keys       init|rotate: the repository's signing keys
  publish    publish a kernel (.ko + .json) or userspace (.lfp) patch to a channel
  promote    move a published level to the stable channel
  revoke     withdraw a level from hosts
  list       list published patches
  refresh    re-sign the expiring timestamp metadata
  static     serve only the repository over HTTP
`

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	switch os.Args[1] {
	case "version", "--version":
		fmt.Println("livefix-server", version)
	case "serve":
		os.Exit(runServe(os.Args[2:], os.Stdout, os.Stderr))
	case "org":
		os.Exit(runOrg(os.Args[2:], os.Stdout, os.Stderr))
	case "user":
		os.Exit(runUser(os.Args[2:], os.Stdout, os.Stderr))
	case "keys":
		os.Exit(runKeys(os.Args[2:], os.Stdout, os.Stderr))
	case "publish":
		os.Exit(runPublish(os.Args[2:], os.Stdout, os.Stderr))
	case "promote", "revoke":
		os.Exit(runChange(os.Args[1], os.Args[2:], os.Stdout, os.Stderr))
	case "list":
		os.Exit(runList(os.Args[2:], os.Stdout, os.Stderr))
	case "refresh":
		os.Exit(runRefresh(os.Args[2:], os.Stdout, os.Stderr))
	case "static":
		os.Exit(runStatic(os.Args[2:], os.Stdout, os.Stderr))
	case "-h", "--help", "help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "livefix-server: unknown command %q\n\n%s", os.Args[1], usage)
		os.Exit(2)
	}
}
