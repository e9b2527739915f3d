package hostconfig

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/BurntSushi/toml"
)

// DefaultPath is the configuration file used when neither --config nor
// LIVEFIX_CONFIG says otherwise.
const DefaultPath = "/etc/livefix/livefix.conf"

// EnvPath names the environment variable that overrides DefaultPath.
const EnvPath = "LIVEFIX_CONFIG"

// Path returns the configuration file: flagValue if set, else
// $LIVEFIX_CONFIG, else DefaultPath.
func Path(flagValue string) string {
	if flagValue != "" {
		return flagValue
	}
	if v := os.Getenv(EnvPath); v != "" {
		return v
	}
	return DefaultPath
}

// Config is the host configuration.
type Config struct {
	// Enabled false turns off applying live patches at boot.
	Enabled bool `toml:"enabled"`
	// Path is the file it was read from; empty for defaults.
	Path string `toml:"-"`
}

// Default is the configuration without a file.
func Default() *Config { return &Config{Enabled: true} }

// Load reads the file at path; a missing file gives the defaults.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Default(), nil
	}
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	c, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	c.Path = path
	return c, nil
}

// Parse parses a configuration file's content.
func Parse(b []byte) (*Config, error) {
	c := Default()
	md, err := toml.NewDecoder(bytes.NewReader(b)).Decode(c)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("line %d: %s", pe.Position.Line, pe.Message)
		}
		return nil, err
	}
	if und := md.Undecoded(); len(und) > 0 {
		key := und[0].String()
		return nil, fmt.Errorf("line %d: unknown key %q (known keys: enabled)", keyLine(b, und[0]), key)
	}
	return c, nil
}

// keyLine finds the line that sets key (toml.Key), for the message of an
// unknown key; the decoder does not report positions of keys it accepted.
func keyLine(b []byte, key toml.Key) int {
	last := key[len(key)-1]
	table := strings.Join(key[:len(key)-1], ".")
	cur := ""
	for i, line := range strings.Split(string(b), "\n") {
		l := strings.TrimSpace(line)
		if strings.HasPrefix(l, "[") {
			cur = strings.Trim(l, "[] \t")
			if cur == strings.Join(key, ".") {
				return i + 1
			}
			continue
		}
		k, _, ok := strings.Cut(l, "=")
		if !ok {
			continue
		}
		k = strings.Trim(strings.TrimSpace(k), `"'`)
		if (cur == table && k == last) || (cur == "" && k == key.String()) {
			return i + 1
		}
	}
	return 0
}

// OffReason returns the off switch in effect, or "" when livefix may
// apply patches: the word livefix=off on the kernel command line
// (cmdline is /proc/cmdline's content), or enabled = false in c.
func OffReason(cmdline string, c *Config) string {
	for _, w := range strings.Fields(cmdline) {
		if w == "livefix=off" {
			return "livefix=off on the kernel command line"
		}
	}
	if c != nil && !c.Enabled {
		where := c.Path
		if where == "" {
			where = "the configuration"
		}
		return "enabled = false in " + where
	}
	return ""
}
