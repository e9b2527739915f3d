package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/livefix/livefix/agent"
	"github.com/livefix/livefix/internal/cli"
	"github.com/livefix/livefix/kernelpatch"
)

// agentVersion is compared with a patch's minimum agent version; set at
// build time with -ldflags "-X main.agentVersion=...".
var agentVersion = "dev"

// newAgentKernel is the kernel the agent applies to, through the host's
// load path with the state directory of the agent's configuration; tests
// replace it.
var newAgentKernel = func(cfg *agent.Config) agent.Kernel {
	return agent.HostKernel(cfg.StateDir, kernelpatch.DefaultLockTimeout)
}

// newAgentUser patches processes; tests replace it.
var newAgentUser = func() agent.UserPatcher { return agent.HostUser("") }

func loadAgent(configFlag string, stderr io.Writer) (*agent.Agent, error) {
	cfg, err := agent.LoadConfig(agent.ConfigPath(configFlag))
	if err != nil {
		return nil, err
	}
	return &agent.Agent{Config: cfg, Kernel: newAgentKernel(cfg), User: newAgentUser(), Version: agentVersion, Progress: stderr}, nil
}

func runRegister(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("register", `register --server URL [--root FILE] [--key ORG-KEY] [--channel stable|test] [--config FILE]

Registers this host with a patch repository: URL is the repository's base
(a static server of the repository directory) or a livefix-server serving
it at /repo/. The trusted root metadata comes from --root FILE (from the
repository's operator: DIR/repository/metadata/1.root.json); without it
the root the server sends is trusted on first use, with a warning. Writes
the configuration (mode 0600, default /etc/livefix/agent.toml) and the root
beside it.`, stderr)
	server := fs.String("server", "", "repository URL (required)")
	root := fs.String("root", "", "root metadata file to trust")
	key := fs.String("key", "", "organisation key for a fleet server (livefix-server org add)")
	channel := fs.String("channel", "", "channel: stable (default) or test")
	stateDir := fs.String("state-dir", "", "agent state directory (default /var/lib/livefix)")
	config := fs.String("config", "", "configuration file (default $LIVEFIX_AGENT_CONFIG or /etc/livefix/agent.toml)")
	if _, code, ok := cli.ParseArgs(fs, "livefix", args, 0); !ok {
		return code
	}
	if *server == "" {
		fmt.Fprintln(stderr, "livefix register: --server URL is required")
		return exitBadInput
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	_, err := agent.Register(ctx, agent.RegisterOptions{
		Server: *server, RootFile: *root, Key: *key, Channel: *channel, StateDir: *stateDir,
		ConfigPath: agent.ConfigPath(*config), Out: stdout, Enroll: enrollHost,
	})
	if err != nil {
		fmt.Fprintf(stderr, "livefix %v\n", err)
		return exitFailure
	}
	return exitOK
}

// enrollHost exchanges an organisation key for a host credential with a
// fleet server; nil until livefix-server serve's host API exists.
var enrollHost func(ctx context.Context, cfg *agent.Config, orgKey string) error

func runUpdate(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("update", `update [--dry-run] [--json] [--config FILE]

Refreshes the repository's signed metadata, picks the highest level for the
running kernel's build-id that this host's channel, delay and pins allow,
downloads and verifies it and applies it through the kernel load path; a
revoked level is replaced by the highest one still published (or unloaded
when none is). Then patches running processes that map an object with a
published userspace patch. Exit status: 0 done or nothing to do, 1 failed
(the host keeps its level), 3 refused (metadata or download did not verify,
patch for another kernel).`, stderr)
	dry := fs.Bool("dry-run", false, "decide and report, download and apply nothing")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	config := fs.String("config", "", "configuration file")
	if _, code, ok := cli.ParseArgs(fs, "livefix", args, 0); !ok {
		return code
	}
	a, err := loadAgent(*config, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "livefix update: %v\n", err)
		return exitFailure
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := a.Update(ctx, agent.UpdateOptions{DryRun: *dry})
	if !*dry {
		checkIn(a, rep, err, stderr)
	}
	if *asJSON {
		out := struct {
			*agent.Report
			Error string `json:"error,omitempty"`
		}{Report: rep}
		if err != nil {
			out.Error = err.Error()
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(out)
	} else if rep != nil {
		printReport(stdout, rep, err == nil)
	}
	if err != nil {
		fmt.Fprintf(stderr, "livefix update: %v\n", err)
		if errors.Is(err, agent.ErrUntrusted) || errors.Is(err, agent.ErrWrongKernel) {
			return exitRefused
		}
		return exitFailure
	}
	return exitOK
}

func printReport(w io.Writer, r *agent.Report, ok bool) {
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	if !ok {
		fmt.Fprintf(w, "kernel %s: level %d kept\n", short(r.KernelBuildID), r.Applied)
		return
	}
	k := r.Kernel
	switch {
	case k.Action == agent.ActionNone:
		fmt.Fprintf(w, "kernel %s: %s\n", short(r.KernelBuildID), k.Reason)
	case r.DryRun:
		fmt.Fprintf(w, "kernel %s: would %s level %d -> %d: %s\n", short(r.KernelBuildID), k.Action, k.From, k.To, k.Reason)
	default:
		fmt.Fprintf(w, "kernel %s: %s level %d -> %d: %s\n", short(r.KernelBuildID), k.Action, k.From, k.To, k.Reason)
	}
	if len(r.CVEs) > 0 {
		fmt.Fprintf(w, "fixes %s\n", strings.Join(r.CVEs, ", "))
	}
	if r.NextDue != nil {
		fmt.Fprintf(w, "a delayed level becomes due at %s\n", r.NextDue.Format(time.RFC3339))
	}
	for _, u := range r.User {
		verb := "patched"
		if r.DryRun {
			verb = "would patch"
		}
		fmt.Fprintf(w, "userspace %s (%s): %s level %d: %s %d of %d process(es): %s\n", u.Name, short(u.BuildID), u.Action, u.Level, verb, u.Applied, u.Processes, u.Reason)
		for _, f := range u.Failures {
			fmt.Fprintf(w, "  failed: %s\n", f)
		}
	}
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func runDaemon(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("daemon", `daemon [--config FILE] [--poll D]

The agent service (livefix-agent.service): polls the repository's
timestamp metadata with a conditional GET every poll_interval (default 60s,
with jitter), runs an update when it changed, and applies what it finds
when auto_update is true. When the repository is unreachable the host keeps
its level and the agent status says so. Honours HTTPS_PROXY and NO_PROXY.`, stderr)
	config := fs.String("config", "", "configuration file")
	poll := fs.Duration("poll", 0, "override poll_interval")
	if _, code, ok := cli.ParseArgs(fs, "livefix", args, 0); !ok {
		return code
	}
	a, err := loadAgent(*config, stdout)
	if err != nil {
		fmt.Fprintf(stderr, "livefix daemon: %v\n", err)
		return exitFailure
	}
	if *poll > 0 {
		a.Config.PollInterval.Duration, a.Config.PollJitter.Duration = *poll, *poll/10
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Fprintf(stdout, "livefix agent %s: repository %s, channel %s, poll every %s, auto_update %v\n",
		agentVersion, a.Config.Repository, a.Config.Channel, a.Config.PollInterval, a.Config.AutoUpdate == nil || *a.Config.AutoUpdate)
	if err := a.Run(ctx, agent.DaemonOptions{OnUpdate: daemonReporter(ctx, a, stderr)}); err != nil {
		fmt.Fprintf(stderr, "livefix daemon: %v\n", err)
		return exitFailure
	}
	return exitOK
}
