package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/livefix/livefix/internal/cli"
	"github.com/livefix/livefix/patchrepo"
)

// defaultData is the data directory when --data is not given.
func defaultData() string {
	if d := os.Getenv("LIVEFIX_SERVER_DATA"); d != "" {
		return d
	}
	return "/var/lib/livefix-server"
}

type roleInts map[string]int

func (m roleInts) String() string { return fmt.Sprint(map[string]int(m)) }
func (m roleInts) Set(s string) error {
	role, n, ok := strings.Cut(s, "=")
	v, err := strconv.Atoi(n)
	if !ok || err != nil {
		return fmt.Errorf("want ROLE=N, got %q", s)
	}
	m[role] = v
	return nil
}

type roleDurations map[string]time.Duration

func (m roleDurations) String() string { return fmt.Sprint(map[string]time.Duration(m)) }
func (m roleDurations) Set(s string) error {
	role, d, ok := strings.Cut(s, "=")
	v, err := time.ParseDuration(d)
	if !ok || err != nil {
		return fmt.Errorf("want ROLE=DURATION, got %q", s)
	}
	m[role] = v
	return nil
}

type strList []string

func (l *strList) String() string     { return strings.Join(*l, ",") }
func (l *strList) Set(s string) error { *l = append(*l, s); return nil }

func parse(fs *flag.FlagSet, args []string, npos int) ([]string, int, bool) {
	pos, err := cli.Parse(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return nil, 0, false
	}
	if err != nil {
		return nil, 2, false
	}
	if len(pos) != npos {
		fmt.Fprintf(fs.Output(), "livefix-server %s: want %d argument(s), got %d (see --help)\n", fs.Name(), npos, len(pos))
		return nil, 2, false
	}
	return pos, 0, true
}

func printJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func fail(stderr io.Writer, cmd string, err error) int {
	fmt.Fprintf(stderr, "livefix-server %s: %v\n", cmd, err)
	return 1
}

func runKeys(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || (args[0] != "init" && args[0] != "rotate") {
		fmt.Fprint(stderr, "usage: livefix-server keys init|rotate ... (see livefix-server keys init --help)\n")
		return 2
	}
	if args[0] == "init" {
		fs := cli.NewFlagSet("keys init", `usage: livefix-server keys init [--data DIR] [--keys ROLE=N] [--threshold ROLE=M] [--root-keys DIR] [--expires ROLE=D]

Creates the signing keys and the first signed metadata of a new patch
repository in DIR (keys under DIR/keys/, the repository to serve under
DIR/repository/). Roles: root, targets, snapshot, timestamp. With
--root-keys the root keys are written there instead (removable storage):
only 'keys rotate' needs them afterwards.`, stderr)
		data := fs.String("data", defaultData(), "data directory")
		nkeys, thr, exp := roleInts{}, roleInts{}, roleDurations{}
		fs.Var(nkeys, "keys", "number of keys of a role, ROLE=N (repeatable; default 1)")
		fs.Var(thr, "threshold", "signatures a role needs, ROLE=M (repeatable; default 1)")
		fs.Var(exp, "expires", "metadata lifetime of a role, ROLE=DURATION (repeatable)")
		rootDir := fs.String("root-keys", "", "write the root keys to this directory (keep it offline)")
		if _, code, ok := parse(fs, args[1:], 0); !ok {
			return code
		}
		r, err := patchrepo.Init(*data, patchrepo.InitOptions{Keys: nkeys, Thresholds: thr, Expires: exp, RootKeysDir: *rootDir})
		if err != nil {
			return fail(stderr, "keys init", err)
		}
		fmt.Fprintf(stdout, "repository created in %s\n  serve %s (any static web server, or livefix-server static)\n",
			r.Dir, patchrepo.RepositoryDir(r.Dir))
		if *rootDir != "" {
			fmt.Fprintf(stdout, "  root keys written to %s: store them offline; keys rotate needs them (--root-keys)\n", *rootDir)
		}
		fmt.Fprintf(stdout, "  hosts: livefix register --server URL --root %s/metadata/1.root.json\n", patchrepo.RepositoryDir(r.Dir))
		fmt.Fprintf(stdout, "  re-sign the timestamp (it expires) with livefix-server refresh, e.g. daily from a timer\n")
		return 0
	}
	fs := cli.NewFlagSet("keys rotate", `usage: livefix-server keys rotate ROLE [--data DIR] [--root-keys DIR] [--keys N] [--threshold M]

Replaces every key of ROLE with new ones, signs a new root version with
the current root keys, and re-signs the metadata. Hosts follow on their
next update. The old keys move to DIR/keys/retired/.`, stderr)
	data := fs.String("data", defaultData(), "data directory")
	rootDir := fs.String("root-keys", "", "directory holding the current root keys (default DIR/keys/root)")
	n := fs.Int("keys", 0, "number of new keys (default: as many as now)")
	t := fs.Int("threshold", 0, "new threshold (default: unchanged)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	pos, code, ok := parse(fs, args[1:], 1)
	if !ok {
		return code
	}
	r, err := patchrepo.Open(*data)
	if err != nil {
		return fail(stderr, "keys rotate", err)
	}
	res, err := r.Rotate(pos[0], patchrepo.RotateOptions{RootKeysDir: *rootDir, Keys: *n, Threshold: *t})
	if err != nil {
		return fail(stderr, "keys rotate", err)
	}
	if *asJSON {
		printJSON(stdout, res)
		return 0
	}
	fmt.Fprintf(stdout, "%s keys rotated: %d new key(s), threshold %d, root version %d\n", res.Role, len(res.NewKeys), res.Threshold, res.RootVersion)
	return 0
}

func runPublish(args []string, stdout, stderr io.Writer) int {
	fs := cli.NewFlagSet("publish", `usage: livefix-server publish PATH --channel test|stable [--data DIR] [--cve ID]... [--summary TEXT] [--min-agent VERSION]

Publishes a kernel live patch (NAME.ko with NAME.json beside it, from
livefix-build kernel) or a userspace patch (NAME.lfp). Refuses a level not
higher than the published ones for that build-id, a malformed file, and a
NAME.json whose build-id disagrees with the module.`, stderr)
	data := fs.String("data", defaultData(), "data directory")
	channel := fs.String("channel", "", "channel: test or stable (required)")
	var cves strList
	fs.Var(&cves, "cve", "CVE id the patch fixes (repeatable; added to NAME.json's)")
	summary := fs.String("summary", "", "one-line description (default: NAME.json's)")
	minAgent := fs.String("min-agent", "", "oldest livefix agent version that may apply it")
	asJSON := fs.Bool("json", false, "print the published entry as JSON")
	pos, code, ok := parse(fs, args, 1)
	if !ok {
		return code
	}
	if *channel == "" {
		fmt.Fprintln(stderr, "livefix-server publish: --channel test|stable is required")
		return 2
	}
	r, err := patchrepo.Open(*data)
	if err != nil {
		return fail(stderr, "publish", err)
	}
	e, err := r.Publish(pos[0], patchrepo.PublishOptions{Channel: *channel, CVEs: cves, Summary: *summary, MinAgent: *minAgent})
	if err != nil {
		return fail(stderr, "publish", err)
	}
	if *asJSON {
		printJSON(stdout, e)
		return 0
	}
	fmt.Fprintf(stdout, "published %s level %d for %s %s on %s (%d files, %d bytes)\n", e.Name, e.Level, e.Kind, e.BuildID, e.Channel, len(e.Targets), e.Length)
	return 0
}

func runChange(cmd string, args []string, stdout, stderr io.Writer) int {
	syn := "promote BUILD-ID LEVEL --channel stable [--data DIR]"
	if cmd == "revoke" {
		syn = "revoke BUILD-ID LEVEL --reason TEXT [--data DIR]"
	}
	fs := cli.NewFlagSet(cmd, "usage: livefix-server "+syn, stderr)
	data := fs.String("data", defaultData(), "data directory")
	channel := fs.String("channel", patchrepo.ChannelStable, "channel to promote to")
	reason := fs.String("reason", "", "why the level is withdrawn (hosts show it)")
	pos, code, ok := parse(fs, args, 2)
	if !ok {
		return code
	}
	level, err := strconv.Atoi(pos[1])
	if err != nil || level < 1 {
		fmt.Fprintf(stderr, "livefix-server %s: level %q is not a positive number\n", cmd, pos[1])
		return 2
	}
	r, err := patchrepo.Open(*data)
	if err != nil {
		return fail(stderr, cmd, err)
	}
	var e *patchrepo.Entry
	if cmd == "promote" {
		e, err = r.Promote(pos[0], level, *channel)
	} else {
		e, err = r.Revoke(pos[0], level, *reason)
	}
	if err != nil {
		return fail(stderr, cmd, err)
	}
	if cmd == "promote" {
		fmt.Fprintf(stdout, "%s level %d for %s is on %s since %s\n", e.Name, e.Level, e.BuildID, e.Channel, e.StableSince.Format(time.RFC3339))
	} else {
		fmt.Fprintf(stdout, "%s level %d for %s revoked (%s); hosts move to the highest level still published\n", e.Name, e.Level, e.BuildID, e.Revoked.Reason)
	}
	return 0
}

func runList(args []string, stdout, stderr io.Writer) int {
	fs := cli.NewFlagSet("list", "usage: livefix-server list [--data DIR] [--json]", stderr)
	data := fs.String("data", defaultData(), "data directory")
	asJSON := fs.Bool("json", false, "print JSON")
	if _, code, ok := parse(fs, args, 0); !ok {
		return code
	}
	r, err := patchrepo.Open(*data)
	if err != nil {
		return fail(stderr, "list", err)
	}
	es, err := r.List()
	if err != nil {
		return fail(stderr, "list", err)
	}
	if *asJSON {
		if es == nil {
			es = []*patchrepo.Entry{}
		}
		printJSON(stdout, es)
		return 0
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KIND\tBUILD-ID\tLEVEL\tNAME\tCHANNEL\tPUBLISHED\tCVES\tSTATE")
	for _, e := range es {
		state := "published"
		if e.Revoked != nil {
			state = "revoked: " + e.Revoked.Reason
		}
		cves := strings.Join(e.CVEs, ",")
		if cves == "" {
			cves = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", e.Kind, e.BuildID, e.Level, e.Name, e.Channel,
			e.Published.Format("2006-01-02 15:04"), cves, state)
	}
	tw.Flush()
	return 0
}

func runRefresh(args []string, stdout, stderr io.Writer) int {
	fs := cli.NewFlagSet("refresh", `usage: livefix-server refresh [--data DIR] [--json]

Re-signs the timestamp metadata (and snapshot and targets when half their
lifetime is gone), so hosts do not see a frozen repository. Run it at
least twice per timestamp lifetime (default lifetime 7 days), e.g. daily.`, stderr)
	data := fs.String("data", defaultData(), "data directory")
	asJSON := fs.Bool("json", false, "print JSON")
	if _, code, ok := parse(fs, args, 0); !ok {
		return code
	}
	r, err := patchrepo.Open(*data)
	if err != nil {
		return fail(stderr, "refresh", err)
	}
	res, err := r.Refresh()
	if err != nil {
		return fail(stderr, "refresh", err)
	}
	if *asJSON {
		printJSON(stdout, res)
		return 0
	}
	fmt.Fprintf(stdout, "timestamp valid until %s\n", res.Timestamp.Format(time.RFC3339))
	if res.Warning != "" {
		fmt.Fprintf(stderr, "warning: %s\n", res.Warning)
	}
	return 0
}

func runStatic(args []string, stdout, stderr io.Writer) int {
	fs := cli.NewFlagSet("static", `usage: livefix-server static [--data DIR] [--listen ADDR]

Serves only the repository (DIR/repository) over plain HTTP: metadata at
/metadata/, targets at /targets/. Hosts: livefix register --server
http://ADDR. For the host API and dashboard use livefix-server serve.`, stderr)
	data := fs.String("data", defaultData(), "data directory")
	listen := fs.String("listen", "127.0.0.1:8471", "address to listen on")
	if _, code, ok := parse(fs, args, 0); !ok {
		return code
	}
	if _, err := patchrepo.Open(*data); err != nil {
		return fail(stderr, "static", err)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fail(stderr, "static", err)
	}
	fmt.Fprintf(stdout, "serving %s at http://%s/ (plain HTTP)\n", patchrepo.RepositoryDir(*data), ln.Addr())
	// IdleTimeout longer than the agents' own (30 s): the client closes an
	// idle connection first, so a poll never races the server's close.
	// Polls are answered from memory for up to a second after the file
	// was last checked (no stat per poll).
	h := patchrepo.NewHandler(patchrepo.RepositoryDir(*data), patchrepo.HandlerOptions{Revalidate: time.Second})
	srv := &http.Server{Handler: h,
		ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	return fail(stderr, "static", srv.Serve(ln))
}
