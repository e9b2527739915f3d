// Package agentstatus is the part of the agent that livefix status and
// livefix info read: where the configuration is, which state directory it
// names, and the status the agent left there (STATE/agent/status.json).
// It is kept apart from package agent so that the livefix command, which
// does not run the agent, links none of the agent's dependencies (TUF,
// its signature and container libraries) and pays none of their package
// initialisation at every start; the agent commands run in livefix-agent
// (docs/userspace.md, "Cold start").
package agentstatus

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/livefix/livefix/hoststate"
)

// DefaultConfigPath is where register writes the agent's configuration.
const DefaultConfigPath = "/etc/livefix/agent.toml"

// DefaultStateDir is the agent's default state directory (the host's
// persistent state directory; the agent uses STATE/agent/).
const DefaultStateDir = hoststate.DefaultRoot

// ConfigPath returns the configuration path: flag, then
// LIVEFIX_AGENT_CONFIG, then DefaultConfigPath.
func ConfigPath(flag string) string {
	if flag != "" {
		return flag
	}
	if p := os.Getenv("LIVEFIX_AGENT_CONFIG"); p != "" {
		return p
	}
	return DefaultConfigPath
}

// Status is the agent's last view of the repository, kept in
// STATE/agent/status.json for livefix status and info.
type Status struct {
	Repository string `json:"repository"`
	Channel    string `json:"channel"`
	// LastCheck is the last update attempt; LastSuccess the last one that
	// verified the repository.
	LastCheck   time.Time `json:"last_check"`
	LastSuccess time.Time `json:"last_success,omitzero"`
	// Reachable is false when the last attempt could not reach the
	// repository; the host then keeps its level.
	Reachable bool   `json:"reachable"`
	Error     string `json:"error,omitempty"`
	// Result is one line: what the last attempt did.
	Result         string     `json:"result"`
	KernelBuildID  string     `json:"kernel_build_id,omitempty"`
	AvailableLevel int        `json:"available_level"`
	AppliedLevel   int        `json:"applied_level"`
	CVEs           []string   `json:"cves,omitempty"`
	Summary        string     `json:"summary,omitempty"`
	NextDue        *time.Time `json:"next_due,omitempty"`
	LastChange     time.Time  `json:"last_change,omitzero"`
	User           []UserPlan `json:"user,omitempty"`
}

// UserPlan is what an update did or would do for one userspace object.
type UserPlan struct {
	BuildID   string `json:"build_id"`
	Name      string `json:"name"`
	Level     int    `json:"level"`     // the level taken (0: patches removed)
	Action    string `json:"action"`    // apply, or downgrade/unload after a revocation
	Reason    string `json:"reason"`    // why
	Processes int    `json:"processes"` // processes mapping it without that level
	Applied   int    `json:"applied"`   // processes changed now
	// Failures name the processes that could not be changed (each was
	// left as it was).
	Failures []string `json:"failures,omitempty"`
}

// StatusPath is the status file in a state directory.
func StatusPath(stateDir string) string { return filepath.Join(stateDir, "agent", "status.json") }

// ReadStatus reads the agent status of a state directory; nil and no
// error when the agent never ran.
func ReadStatus(stateDir string) (*Status, error) {
	b, err := os.ReadFile(StatusPath(stateDir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("agent status: %w", err)
	}
	var s Status
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("agent status %s: %w", StatusPath(stateDir), err)
	}
	return &s, nil
}

// StateDir returns the state directory the configuration at path names
// (state_dir, default DefaultStateDir). It reads that one key: the agent
// itself (agent.LoadConfig) checks the whole file.
func StateDir(path string) (string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("no agent configuration at %s: run livefix register --server URL first", path)
	}
	if err != nil {
		return "", fmt.Errorf("read agent configuration: %w", err)
	}
	var c struct {
		StateDir string `toml:"state_dir"`
	}
	if _, err := toml.Decode(string(b), &c); err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	if c.StateDir == "" {
		return DefaultStateDir, nil
	}
	return c.StateDir, nil
}

// Read returns the status of the agent configured at the configuration
// path flag resolves to (ConfigPath); nil when the host is not
// registered or the agent never ran.
func Read(flag string) *Status {
	dir, err := StateDir(ConfigPath(flag))
	if err != nil {
		return nil
	}
	s, _ := ReadStatus(dir)
	return s
}
