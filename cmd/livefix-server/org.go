package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/livefix/livefix/fleetdb"
	"github.com/livefix/livefix/internal/cli"
)

const orgUsage = `
usage: livefix-server org add NAME [--data DIR] [--db DSN] [--json]
       livefix-server org list [--data DIR] [--db DSN] [--json]
       livefix-server org revoke NAME [--data DIR] [--db DSN]

Organisations own hosts. "org add" prints the organisation's registration
key once (only its hash is stored): hosts register with
"livefix register --server URL --key KEY". "org revoke" stops the key from
registering more hosts; hosts already registered keep their credentials.
`

func runOrg(args []string, stdout, stderr io.Writer) int {
	fs := cli.NewFlagSet("livefix-server org", orgUsage, stderr)
	sf := addStoreFlags(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := cli.Parse(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil || len(pos) == 0 {
		fs.Usage()
		return 2
	}
	cmd, rest := pos[0], pos[1:]
	if (cmd == "list") != (len(rest) == 0) || len(rest) > 1 {
		fs.Usage()
		return 2
	}
	ctx := context.Background()
	st, err := sf.open(ctx)
	if err != nil {
		fmt.Fprintln(stderr, "livefix-server org:", err)
		return 1
	}
	defer st.Close()
	switch cmd {
	case "add":
		key, err := st.AddOrg(ctx, rest[0])
		if err != nil {
			fmt.Fprintln(stderr, "livefix-server org add:", err)
			return 1
		}
		if *asJSON {
			json.NewEncoder(stdout).Encode(map[string]string{"org": rest[0], "key": key})
			return 0
		}
		fmt.Fprintf(stdout, "organisation %s created; its registration key (shown only now, keep it secret):\n%s\n", rest[0], key)
		fmt.Fprintf(stdout, "register a host with: livefix register --server URL --key %s\n", key)
	case "list":
		orgs, err := st.Orgs(ctx)
		if err != nil {
			fmt.Fprintln(stderr, "livefix-server org list:", err)
			return 1
		}
		if *asJSON {
			if orgs == nil {
				orgs = []fleetdb.Org{}
			}
			json.NewEncoder(stdout).Encode(orgs)
			return 0
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tHOSTS\tCREATED\tKEY")
		for _, o := range orgs {
			state := "active"
			if !o.RevokedAt.IsZero() {
				state = "revoked " + o.RevokedAt.Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", o.Name, o.Hosts, o.CreatedAt.Format(time.RFC3339), state)
		}
		tw.Flush()
	case "revoke":
		if err := st.RevokeOrg(ctx, rest[0]); err != nil {
			fmt.Fprintln(stderr, "livefix-server org revoke:", err)
			return 1
		}
		fmt.Fprintf(stdout, "organisation %s: key revoked; its hosts keep checking in\n", rest[0])
	default:
		fmt.Fprintf(stderr, "livefix-server org: unknown subcommand %q\n", cmd)
		fs.Usage()
		return 2
	}
	return 0
}
