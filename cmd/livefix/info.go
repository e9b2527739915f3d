package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/livefix/livefix/internal/cli"
)

func runInfo(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("info", "info [--json] [--state-dir DIR]", stderr)
	asJSON := fs.Bool("json", false, "print the patches as JSON")
	sf := addStateFlags(fs)
	if _, code, ok := cli.ParseArgs(fs, "livefix", args, 0); !ok {
		return code
	}
	m := sf.manager()
	reconcileReadOnly(context.Background(), m, stderr)
	infos, err := m.Info()
	if err != nil {
		fmt.Fprintf(stderr, "livefix info: %v\n", err)
		return exitFailure
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(infos)
		return exitOK
	}
	printAgentInfo(stdout, agentStatus(""))
	if len(infos) == 0 {
		fmt.Fprintln(stdout, "no livefix live patch is applied")
		return exitOK
	}
	for i, p := range infos {
		if i > 0 {
			fmt.Fprintln(stdout)
		}
		state := "enabled"
		if !p.Enabled {
			state = "disabled"
		}
		fmt.Fprintf(stdout, "%s: level %d, %s", p.Name, p.Level, state)
		if !p.Recorded {
			fmt.Fprint(stdout, ", not recorded (not re-applied at boot)")
		}
		fmt.Fprintln(stdout)
		if !p.BuiltAt.IsZero() {
			fmt.Fprintf(stdout, "  built:     %s\n", p.BuiltAt.UTC().Format(time.RFC3339))
		}
		if p.AppliedAt != "" {
			fmt.Fprintf(stdout, "  applied:   %s\n", p.AppliedAt)
		}
		cves := "none listed"
		if len(p.CVEs) > 0 {
			cves = strings.Join(p.CVEs, " ")
		}
		fmt.Fprintf(stdout, "  fixes:     %s\n", cves)
		if p.Summary != "" {
			fmt.Fprintf(stdout, "  summary:   %s\n", p.Summary)
		}
		fmt.Fprintf(stdout, "  functions: %s\n", strings.Join(p.Functions, " "))
	}
	return exitOK
}
