package agent

import (
	"net"
	"strings"
	"testing"
	"time"
)

func listen() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }

func TestParseConfig(t *testing.T) {
	tests := []struct {
		in, err string
		check   func(c *Config) bool
	}{
		{in: `repository = "http://r/x"`, check: func(c *Config) bool {
			return c.Channel == "stable" && c.PollInterval.Duration == time.Minute && c.auto() && c.StateDir == DefaultStateDir
		}},
		{in: "repository = \"https://r\"\nchannel = \"test\"\ndelay = \"24h\"\nauto_update = false\npoll_interval = \"5s\"", check: func(c *Config) bool {
			return c.Channel == "test" && c.Delay.Duration == 24*time.Hour && !c.auto() && c.PollJitter.Duration == 500*time.Millisecond
		}},
		{in: "repository = \"http://r\"\npin_date = \"2026-03-01\"", check: func(c *Config) bool { return c.PinDate != "" }},
		{in: "repository = \"http://r\"\nchanel = \"test\"", err: "unknown key(s) chanel"},
		{in: "repository = \"http://r\"\nchannel = \"beta\"", err: "channel \"beta\""},
		{in: "repository = \"ftp://r\"", err: "not an http(s) URL"},
		{in: "", err: "no repository URL"},
		{in: "repository = \"http://r\"\ndelay = \"tomorrow\"", err: "duration"},
		{in: "repository = \"http://r\"\npin_date = \"March\"", err: "pin_date"},
		{in: "repository = \"http://r\"\npoll_interval = \"1ms\"", err: "too short"},
		{in: "repository = [1", err: "agent configuration"},
	}
	for _, tt := range tests {
		c, err := ParseConfig([]byte(tt.in))
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%q: error %v; want %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || !tt.check(c) {
			t.Errorf("%q: %+v %v", tt.in, c, err)
		}
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte("repository = \"http://r\"\nchannel = \"test\"\ndelay = \"24h\"\npin_level = 3\n"))
	f.Add([]byte("repository = \"https://r/repo\"\npin_date = \"2026-01-02T03:04:05Z\"\nauto_update = true\n[x]\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseConfig(b)
		if err != nil {
			return
		}
		// A parsed configuration saves and parses back the same.
		c2, err := ParseConfig(mustEncode(t, c))
		if err != nil {
			t.Fatalf("re-parse of %q: %v", b, err)
		}
		if c2.Repository != c.Repository || c2.Channel != c.Channel || c2.Delay != c.Delay || c2.PinLevel != c.PinLevel {
			t.Fatalf("round trip changed %+v to %+v", c, c2)
		}
	})
}

func mustEncode(t *testing.T, c *Config) []byte {
	b, err := c.encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}
