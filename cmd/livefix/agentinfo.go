package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/livefix/livefix/agent/agentstatus"
)

// agentStatus returns the agent's last view for status and info (nil
// when the host is not registered or the agent never ran).
func agentStatus(configFlag string) *agentstatus.Status { return agentstatus.Read(configFlag) }

// printAgentInfo prints the repository's view for livefix info.
func printAgentInfo(w io.Writer, s *agentstatus.Status) {
	if s == nil {
		return
	}
	reach := "reachable"
	if !s.Reachable {
		reach = "UNREACHABLE (level kept)"
	}
	fmt.Fprintf(w, "repository: %s, channel %s, %s\n", s.Repository, s.Channel, reach)
	fmt.Fprintf(w, "  level:     %d available, %d applied (last check %s)\n", s.AvailableLevel, s.AppliedLevel, s.LastCheck.Local().Format(time.RFC3339))
	if len(s.CVEs) > 0 {
		fmt.Fprintf(w, "  fixes:     %s\n", strings.Join(s.CVEs, " "))
	}
	fmt.Fprintf(w, "  last:      %s\n\n", s.Result)
}

// The agent commands (register, update, daemon) run in livefix-agent, a
// separate program: the agent links TUF and, through it, signature,
// protobuf and container-registry libraries whose package initialisation
// would otherwise run at the start of every livefix command (a patch
// command included). livefix execs it in its place, with the same
// arguments, so that its output, --help and exit status are the agent's.
const agentProgram = "livefix-agent"

// agentLibDir is where the package installs livefix-agent.
const agentLibDir = "/usr/lib/livefix"

// agentPath finds livefix-agent: $LIVEFIX_AGENT, else next to this
// executable (a build tree, bin/), else agentLibDir.
func agentPath() (string, []string) {
	if p := os.Getenv("LIVEFIX_AGENT"); p != "" {
		return p, []string{p}
	}
	var tried []string
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), agentProgram)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
		tried = append(tried, p)
	}
	p := filepath.Join(agentLibDir, agentProgram)
	if st, err := os.Stat(p); err == nil && !st.IsDir() {
		return p, nil
	}
	return "", append(tried, p)
}

// runAgent replaces this process with livefix-agent COMMAND ARGS; it
// returns only if that fails.
func runAgent(cmd string, args []string, stderr io.Writer) int {
	p, tried := agentPath()
	if p == "" {
		fmt.Fprintf(stderr, "livefix %s: the agent program %s is not installed (looked for %s); install the livefix package again\n",
			cmd, agentProgram, strings.Join(tried, " and "))
		return exitFailure
	}
	err := syscall.Exec(p, append([]string{p, cmd}, args...), os.Environ())
	fmt.Fprintf(stderr, "livefix %s: run %s: %v\n", cmd, p, err)
	return exitFailure
}
