package fleetapi

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func validCheckIn() CheckIn {
	return CheckIn{HostID: "hAbCdEfGhIjKlMnOpQrStUv", Hostname: "web-1.example.com", KernelRelease: "6.1.0-57-amd64",
		BuildID: "0123456789abcdef0123456789abcdef01234567", Level: 2, AgentVersion: "1.0.0", Channel: "stable",
		Result: ResultOK, Userspace: []UserPatch{{BuildID: "beef", Level: 1, Name: "libc.so.6"}}}
}

func TestDecode(t *testing.T) {
	tests := []struct {
		name string
		body string
		want error
	}{
		{"ok", `{"host_id":"x"}`, nil},
		{"unknown field", `{"host_id":"x","evil":1}`, ErrMalformed},
		{"malformed", `{"host_id":`, ErrMalformed},
		{"wrong type", `{"level":"2"}`, ErrMalformed},
		{"two objects", `{"host_id":"x"}{"host_id":"y"}`, ErrMalformed},
		{"trailing garbage", `{"host_id":"x"} x`, ErrMalformed},
		{"not an object", `[1,2]`, ErrMalformed},
		{"empty", ``, ErrMalformed},
		{"too large", `{"error":"` + strings.Repeat("a", MaxBodyBytes) + `"}`, ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c CheckIn
			err := Decode(strings.NewReader(tt.body), &c)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("Decode = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name   string
		modify func(c *CheckIn)
		field  string // "" = valid
	}{
		{"valid", func(c *CheckIn) {}, ""},
		{"no result yet", func(c *CheckIn) { c.Result = "" }, ""},
		{"host id", func(c *CheckIn) { c.HostID = "../../etc" }, "host_id"},
		{"hostname traversal", func(c *CheckIn) { c.Hostname = "../x" }, "hostname"},
		{"hostname dots", func(c *CheckIn) { c.Hostname = "a..b" }, "hostname"},
		{"hostname slash", func(c *CheckIn) { c.Hostname = "a/b" }, "hostname"},
		{"release slash", func(c *CheckIn) { c.KernelRelease = "6.1/../../x" }, "kernel_release"},
		{"release dots", func(c *CheckIn) { c.KernelRelease = "6..1" }, "kernel_release"},
		{"build-id traversal", func(c *CheckIn) { c.BuildID = "../../../etc/passwd" }, "build_id"},
		{"build-id upper", func(c *CheckIn) { c.BuildID = "ABCD" }, "build_id"},
		{"build-id odd", func(c *CheckIn) { c.BuildID = "abc" }, "build_id"},
		{"negative level", func(c *CheckIn) { c.Level = -1 }, "level"},
		{"huge level", func(c *CheckIn) { c.Level = MaxLevel + 1 }, "level"},
		{"channel", func(c *CheckIn) { c.Channel = "Stable;drop" }, "channel"},
		{"agent version", func(c *CheckIn) { c.AgentVersion = "" }, "agent_version"},
		{"result", func(c *CheckIn) { c.Result = "great" }, "result"},
		{"error too long", func(c *CheckIn) { c.Error = strings.Repeat("e", MaxErrorLen+1) }, "error"},
		{"error not utf-8", func(c *CheckIn) { c.Error = "\xff" }, "error"},
		{"future result", func(c *CheckIn) { c.ResultAt = now.Add(48 * time.Hour) }, "result_at"},
		{"userspace name traversal", func(c *CheckIn) { c.Userspace[0].Name = "../../lib" }, "userspace[0].name"},
		{"userspace build-id", func(c *CheckIn) { c.Userspace[0].BuildID = "zz" }, "userspace[0].build_id"},
		{"too many userspace", func(c *CheckIn) { c.Userspace = make([]UserPatch, MaxUserPatches+1) }, "userspace"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validCheckIn()
			tt.modify(&c)
			err := c.Validate(now)
			if tt.field == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), " "+tt.field+" ") {
				t.Fatalf("Validate = %v; want ErrInvalid naming %s", err, tt.field)
			}
		})
	}
}

func TestValidateRegister(t *testing.T) {
	for _, tt := range []struct {
		r  RegisterRequest
		ok bool
	}{
		{RegisterRequest{Key: "lfo_x", Hostname: "web1"}, true},
		{RegisterRequest{Key: "lfo_x"}, true},
		{RegisterRequest{Key: ""}, false},
		{RegisterRequest{Key: "lfo_x", Hostname: "../x"}, false},
		{RegisterRequest{Key: strings.Repeat("k", 129)}, false},
	} {
		if err := tt.r.Validate(); (err == nil) != tt.ok {
			t.Errorf("%+v: %v", tt.r, err)
		}
	}
}

// FuzzDecodeCheckIn: any body either decodes and validates, or is refused
// with ErrMalformed, ErrTooLarge or ErrInvalid; never a panic, and a
// check-in that validates has only safe names.
func FuzzDecodeCheckIn(f *testing.F) {
	f.Add(`{"host_id":"hAbCdEfGhIjKlMnOpQrStUv","hostname":"a","kernel_release":"6.1.0","build_id":"abcd","level":1,"agent_version":"1","channel":"stable","result":"ok"}`)
	f.Add(`{"host_id":"x","userspace":[{"build_id":"ab","level":1,"name":"../x"}]}`)
	f.Add(`{"error":"\u0000\ud800"}`)
	f.Add(`{"level":1e400}`)
	f.Add(`{}{}`)
	f.Fuzz(func(t *testing.T, body string) {
		var c CheckIn
		err := Decode(strings.NewReader(body), &c)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("Decode error %v is neither ErrMalformed nor ErrTooLarge", err)
			}
			return
		}
		if err := c.Validate(time.Now()); err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Validate error %v is not ErrInvalid", err)
			}
			return
		}
		for _, s := range []string{c.HostID, c.Hostname, c.KernelRelease, c.BuildID, c.Channel, c.AgentVersion} {
			if strings.Contains(s, "/") || strings.Contains(s, "..") || s == "" {
				t.Fatalf("validated check-in has an unsafe name %q", s)
			}
		}
		for _, p := range c.Userspace {
			if strings.Contains(p.Name, "/") || strings.Contains(p.Name, "..") {
				t.Fatalf("validated userspace name %q", p.Name)
			}
		}
	})
}
