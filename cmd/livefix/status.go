package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/livefix/livefix/agent/agentstatus"
	"github.com/livefix/livefix/internal/cli"
	"github.com/livefix/livefix/kernelpatch"
)

const statusUsage = `usage: livefix status [--json | --prometheus] [--state-dir DIR] [--config FILE]

One line saying whether the kernel live patch level recorded for the
running kernel is applied. --json prints the details; --prometheus
prints node_exporter textfile-collector metrics (write them to a
temporary file and rename it into the collector's directory).

exit status:
  0  the recorded level is applied
  3  nothing to apply: no patch is recorded for this kernel
  4  applying failed, was skipped at boot, or has not run in this boot
  5  a patching transition is stalled or a change is incomplete
  6  disabled by an off switch (livefix=off, enabled = false)
  1  other error
  2  bad usage
`

func runStatus(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("status", "status [--json | --prometheus]", stderr)
	fs.Usage = func() { fmt.Fprint(stderr, statusUsage) }
	asJSON := fs.Bool("json", false, "print the status as JSON")
	prom := fs.Bool("prometheus", false, "print Prometheus textfile-collector metrics")
	config := configFlag(fs)
	sf := addStateFlags(fs)
	if _, code, ok := cli.ParseArgs(fs, "livefix", args, 0); !ok {
		return code
	}
	if *asJSON && *prom {
		fmt.Fprintln(stderr, "livefix status: --json and --prometheus exclude each other")
		return exitBadInput
	}
	m := sf.manager()
	off, err := offSwitch(m.Sys, *config)
	if err != nil {
		fmt.Fprintf(stderr, "livefix status: %v\n", err)
		return exitFailure
	}
	st := m.Status(context.Background(), off, kernelpatch.Options{Progress: stderr})
	if st.Repaired != "" {
		fmt.Fprintf(stderr, "livefix: %s\n", st.Repaired)
	}
	switch {
	case *asJSON:
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		// agent: the repository's view (channel, level available vs
		// applied, CVE ids) when this host is registered.
		_ = enc.Encode(struct {
			*kernelpatch.Status
			Agent *agentstatus.Status `json:"agent,omitempty"`
		}{st, agentStatus("")})
	case *prom:
		writePrometheus(stdout, st)
	default:
		fmt.Fprintln(stdout, st.Message)
	}
	return st.Code
}

// writePrometheus writes the status in the Prometheus text exposition
// format.
func writePrometheus(w io.Writer, st *kernelpatch.Status) {
	esc := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	labels := fmt.Sprintf(`release="%s",build_id="%s"`, esc.Replace(st.Release), esc.Replace(st.BuildID))
	gauge := func(name, help string, value float64, extra string) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s gauge\n", name, help, name)
		l := labels
		if extra != "" {
			l += "," + extra
		}
		fmt.Fprintf(w, "%s{%s} %g\n", name, l, value)
	}
	recorded := 0
	if st.Recorded != nil {
		recorded = st.Recorded.Level
	}
	applied := 0
	if st.Code == kernelpatch.StatusApplied {
		applied = 1
	}
	gauge("livefix_kernel_level", "Highest livefix kernel live patch level enabled in the running kernel.", float64(st.Level), "")
	gauge("livefix_kernel_recorded_level", "Kernel live patch level recorded for this kernel (re-applied at boot).", float64(recorded), "")
	gauge("livefix_kernel_applied", "1 when the recorded level is applied (livefix status exit 0).", float64(applied), "")
	gauge("livefix_status_code", "livefix status exit code: 0 applied, 3 nothing recorded, 4 failed or skipped, 5 transition, 6 off, 1 error.", float64(st.Code), "")
	result, at := "none", 0.0
	if st.Last != nil {
		result = st.Last.Result
		at = float64(st.Last.At.Unix())
	}
	gauge("livefix_last_result", "Result of the last change (label result), always 1.", 1, fmt.Sprintf(`result="%s"`, esc.Replace(result)))
	gauge("livefix_last_change_timestamp_seconds", "Unix time of the last change, 0 when none is recorded.", at, "")
}
