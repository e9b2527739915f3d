package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/livefix/livefix/fleetdb"
	"github.com/livefix/livefix/internal/cli"
	"golang.org/x/term"
)

const userUsage = `
usage: livefix-server user add NAME --role admin|viewer [--password-file FILE] [--replace]
       livefix-server user list [--json]
       livefix-server user delete NAME

Dashboard operators. Admins may publish, promote and revoke; viewers read.
The password comes from --password-file (first line; "-" for standard
input), else it is asked for on the terminal. --replace changes an
existing operator's password and role and ends their sessions.
Every command also takes --data DIR and --db DSN.
`

func runUser(args []string, stdout, stderr io.Writer) int {
	fs := cli.NewFlagSet("livefix-server user", userUsage, stderr)
	sf := addStoreFlags(fs)
	role := fs.String("role", "", "admin or viewer (add)")
	pwFile := fs.String("password-file", "", "read the password from `FILE` (\"-\": standard input)")
	replace := fs.Bool("replace", false, "change an existing operator (add)")
	asJSON := fs.Bool("json", false, "print JSON (list)")
	pos, err := cli.Parse(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil || len(pos) == 0 || (pos[0] == "list") != (len(pos) == 1) || len(pos) > 2 {
		fs.Usage()
		return 2
	}
	var password string
	if pos[0] == "add" {
		if *role == "" {
			fmt.Fprintln(stderr, "livefix-server user add: --role admin|viewer is required")
			return 2
		}
		if password, err = readPassword(*pwFile, stderr); err != nil {
			fmt.Fprintln(stderr, "livefix-server user add:", err)
			return 1
		}
	}
	ctx := context.Background()
	st, err := sf.open(ctx)
	if err != nil {
		fmt.Fprintln(stderr, "livefix-server user:", err)
		return 1
	}
	defer st.Close()
	switch pos[0] {
	case "add":
		if err := st.AddUser(ctx, pos[1], password, *role, *replace); err != nil {
			fmt.Fprintln(stderr, "livefix-server user add:", err)
			return 1
		}
		fmt.Fprintf(stdout, "operator %s (%s) ready: log in to the dashboard at /login\n", pos[1], *role)
	case "list":
		users, err := st.Users(ctx)
		if err != nil {
			fmt.Fprintln(stderr, "livefix-server user list:", err)
			return 1
		}
		if *asJSON {
			if users == nil {
				users = []fleetdb.User{}
			}
			json.NewEncoder(stdout).Encode(users)
			return 0
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tROLE\tCREATED")
		for _, u := range users {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", u.Name, u.Role, u.CreatedAt.Format(time.RFC3339))
		}
		tw.Flush()
	case "delete":
		if err := st.DeleteUser(ctx, pos[1]); err != nil {
			fmt.Fprintln(stderr, "livefix-server user delete:", err)
			return 1
		}
		fmt.Fprintf(stdout, "operator %s deleted\n", pos[1])
	default:
		fmt.Fprintf(stderr, "livefix-server user: unknown subcommand %q\n", pos[0])
		fs.Usage()
		return 2
	}
	return 0
}

func readPassword(file string, stderr io.Writer) (string, error) {
	if file == "" {
		if !term.IsTerminal(int(os.Stdin.Fd())) {
			return "", errors.New("no terminal to ask for the password: use --password-file FILE (or - for standard input)")
		}
		fmt.Fprint(stderr, "password: ")
		a, err := term.ReadPassword(int(os.Stdin.Fd()))
		fmt.Fprintln(stderr)
		if err != nil {
			return "", err
		}
		fmt.Fprint(stderr, "again: ")
		b, err := term.ReadPassword(int(os.Stdin.Fd()))
		fmt.Fprintln(stderr)
		if err != nil {
			return "", err
		}
		if string(a) != string(b) {
			return "", errors.New("the passwords differ")
		}
		return string(a), nil
	}
	var r io.Reader = os.Stdin
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return "", err
		}
		defer f.Close()
		r = f
	}
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil && !(errors.Is(err, io.EOF) && line != "") {
		return "", fmt.Errorf("reading the password: %w", err)
	}
	return strings.TrimRight(line, "\r\n"), nil
}
