package agent

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/livefix/livefix/agent/agentstatus"
	"github.com/livefix/livefix/patchrepo"
)

// DefaultConfigPath is where register writes the agent's configuration.
const DefaultConfigPath = agentstatus.DefaultConfigPath

// DefaultStateDir is the agent's default state directory (the host's
// persistent state directory; the agent uses STATE/agent/).
const DefaultStateDir = agentstatus.DefaultStateDir

// ConfigPath returns the configuration path: flag, then
// LIVEFIX_AGENT_CONFIG, then DefaultConfigPath.
func ConfigPath(flag string) string { return agentstatus.ConfigPath(flag) }

// Duration is a time.Duration written as a Go duration string ("24h").
type Duration struct{ time.Duration }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("duration %q: %w (write it like \"60s\", \"24h\")", b, err)
	}
	if v < 0 {
		return fmt.Errorf("duration %q is negative", b)
	}
	d.Duration = v
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.Duration.String()), nil }

// Config is the agent's configuration file (TOML).
type Config struct {
	// Server is the URL given to register; Repository the repository
	// base URL (metadata/ and targets/ below it) found there.
	Server     string `toml:"server"`
	Repository string `toml:"repository"`
	// Root is the trusted root metadata file (initial trust; the agent
	// then follows the repository's root rotations in its cache).
	Root string `toml:"root"`
	// Channel: "stable" (default) or "test".
	Channel string `toml:"channel"`
	// Delay: a stable host takes a level only this long after it reached
	// the stable channel (delayed feed).
	Delay Duration `toml:"delay"`
	// PinLevel, when not 0, holds the kernel at that level at most
	// (sticky host). PinDate, when set (YYYY-MM-DD or RFC 3339), takes
	// only levels that were on the host's channel by then.
	PinLevel int    `toml:"pin_level"`
	PinDate  string `toml:"pin_date"`
	// AutoUpdate: the daemon applies what it finds (default true); when
	// false it only records what is available.
	AutoUpdate *bool `toml:"auto_update"`
	// Userspace: also patch running processes (default true).
	Userspace *bool `toml:"userspace"`
	// PollInterval between conditional requests for the timestamp
	// metadata (default 60s), randomised by up to PollJitter (default
	// a tenth of the interval) either way.
	PollInterval Duration `toml:"poll_interval"`
	PollJitter   Duration `toml:"poll_jitter"`
	// HTTPTimeout bounds one request (default 5m; large downloads on
	// slow links).
	HTTPTimeout Duration `toml:"http_timeout"`
	// StateDir: default DefaultStateDir.
	StateDir string `toml:"state_dir"`

	// Fleet server host credential (livefix register --key, livefix-server
	// serve's host API). Empty without a fleet server.
	HostID          string   `toml:"host_id"`
	HostCredential  string   `toml:"host_credential"`
	CheckinInterval Duration `toml:"checkin_interval"`

	path string
}

// Path is the file the configuration was read from or will be saved to.
func (c *Config) Path() string { return c.path }

// LoadConfig reads the configuration at path. Unknown keys are an error
// naming the key, so that a typo does not silently change policy.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no agent configuration at %s: run livefix register --server URL first", path)
	}
	if err != nil {
		return nil, fmt.Errorf("read agent configuration: %w", err)
	}
	c, err := ParseConfig(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	c.path = path
	if c.Root != "" && !filepath.IsAbs(c.Root) {
		c.Root = filepath.Join(filepath.Dir(path), c.Root)
	}
	return c, nil
}

// ParseConfig parses and checks a configuration file's content.
func ParseConfig(b []byte) (*Config, error) {
	var c Config
	md, err := toml.Decode(string(b), &c)
	if err != nil {
		return nil, fmt.Errorf("agent configuration: %w", err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return nil, fmt.Errorf("agent configuration: unknown key(s) %s", strings.Join(keys, ", "))
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Validate checks the configuration and fills in defaults.
func (c *Config) Validate() error {
	if c.Channel == "" {
		c.Channel = patchrepo.ChannelStable
	}
	if !patchrepo.ValidChannel(c.Channel) {
		return fmt.Errorf("agent configuration: channel %q; want %q or %q", c.Channel, patchrepo.ChannelStable, patchrepo.ChannelTest)
	}
	if c.Repository == "" {
		return fmt.Errorf("agent configuration: no repository URL; run livefix register --server URL")
	}
	u, err := url.Parse(c.Repository)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("agent configuration: repository %q is not an http(s) URL", c.Repository)
	}
	if c.PinLevel < 0 {
		return fmt.Errorf("agent configuration: pin_level %d is negative", c.PinLevel)
	}
	if c.PinDate != "" {
		if _, err := parsePinDate(c.PinDate); err != nil {
			return err
		}
	}
	if c.PollInterval.Duration == 0 {
		c.PollInterval.Duration = 60 * time.Second
	}
	if c.PollInterval.Duration < 100*time.Millisecond {
		return fmt.Errorf("agent configuration: poll_interval %s is too short", c.PollInterval)
	}
	if c.PollJitter.Duration == 0 {
		c.PollJitter.Duration = c.PollInterval.Duration / 10
	}
	if c.PollJitter.Duration > c.PollInterval.Duration/2 {
		c.PollJitter.Duration = c.PollInterval.Duration / 2
	}
	if c.HTTPTimeout.Duration == 0 {
		c.HTTPTimeout.Duration = 5 * time.Minute
	}
	if c.CheckinInterval.Duration == 0 {
		c.CheckinInterval.Duration = time.Hour
	}
	if c.StateDir == "" {
		c.StateDir = DefaultStateDir
	}
	return nil
}

func parsePinDate(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	t, err := time.Parse("2006-01-02", s)
	if err != nil {
		return time.Time{}, fmt.Errorf("agent configuration: pin_date %q: want YYYY-MM-DD or RFC 3339", s)
	}
	// A day pin includes that whole day.
	return t.Add(24*time.Hour - time.Nanosecond), nil
}

// auto and userspace read the optional booleans.
func (c *Config) auto() bool      { return c.AutoUpdate == nil || *c.AutoUpdate }
func (c *Config) userspace() bool { return c.Userspace == nil || *c.Userspace }

// Save writes the configuration atomically with mode 0600 (it may hold a
// host credential).
func (c *Config) Save(path string) error {
	b, err := c.encode()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("save agent configuration: %w", err)
	}
	if err := writeFile(path, b, 0o600); err != nil {
		return err
	}
	c.path = path
	return nil
}

// fields are the settings that differ from the zero value, so that a
// saved file states only what was chosen.
func (c *Config) fields() map[string]any {
	m := map[string]any{}
	str := func(k, v string) {
		if v != "" {
			m[k] = v
		}
	}
	dur := func(k string, d Duration) {
		if d.Duration != 0 {
			m[k] = d.Duration.String()
		}
	}
	str("server", c.Server)
	str("repository", c.Repository)
	str("root", c.Root)
	str("channel", c.Channel)
	dur("delay", c.Delay)
	if c.PinLevel != 0 {
		m["pin_level"] = c.PinLevel
	}
	str("pin_date", c.PinDate)
	if c.AutoUpdate != nil {
		m["auto_update"] = *c.AutoUpdate
	}
	if c.Userspace != nil {
		m["userspace"] = *c.Userspace
	}
	// Defaults are left out, so that they follow a later change (the
	// jitter follows the interval).
	if c.PollInterval.Duration != 60*time.Second {
		dur("poll_interval", c.PollInterval)
	}
	if c.PollJitter.Duration != c.PollInterval.Duration/10 {
		dur("poll_jitter", c.PollJitter)
	}
	if c.HTTPTimeout.Duration != 5*time.Minute {
		dur("http_timeout", c.HTTPTimeout)
	}
	if c.StateDir != DefaultStateDir {
		str("state_dir", c.StateDir)
	}
	str("host_id", c.HostID)
	str("host_credential", c.HostCredential)
	if c.CheckinInterval.Duration != time.Hour {
		dur("checkin_interval", c.CheckinInterval)
	}
	return m
}

// writeFile writes atomically: temp file, fsync, rename, fsync directory.
func writeFile(name string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(name)
	f, err := os.CreateTemp(dir, "."+filepath.Base(name)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(mode)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, name)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", name, err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// encode is the file content Save writes.
func (c *Config) encode() ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteString("# livefix agent configuration (written by livefix register; see livefix update --help)\n")
	if err := toml.NewEncoder(&buf).Encode(c.fields()); err != nil {
		return nil, fmt.Errorf("encode agent configuration: %w", err)
	}
	return buf.Bytes(), nil
}
