package fleetapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// URL paths of the host API.
const (
	RegisterPath = "/api/v1/register"
	CheckInPath  = "/api/v1/checkin"
)

// MaxBodyBytes is the largest request body the host API accepts (64 KiB):
// a check-in with the maximum number of userspace patches fits easily.
const MaxBodyBytes = 64 << 10

// Limits of the check-in's fields.
const (
	MaxUserPatches = 256
	MaxErrorLen    = 4096
	MaxLevel       = 1_000_000
)

// Results a check-in reports for the last update attempt.
const (
	ResultNone    = ""        // no update attempted yet
	ResultOK      = "ok"      // succeeded, or nothing to do
	ResultFailed  = "failed"  // failed; the host kept its level
	ResultStalled = "stalled" // a kernel transition stalled and was reverted
)

// RegisterRequest asks for a host identity with an organisation key.
type RegisterRequest struct {
	Key      string `json:"key"`
	Hostname string `json:"hostname"`
}

// RegisterResponse carries the new host's id and credential. The server
// keeps only a hash of the credential: it cannot be shown again.
type RegisterResponse struct {
	HostID     string `json:"host_id"`
	Credential string `json:"credential"`
	Org        string `json:"org"`
}

// UserPatch is a userspace live patch applied on the host.
type UserPatch struct {
	BuildID string `json:"build_id"`
	Level   int64  `json:"level"`
	Name    string `json:"name,omitempty"`
}

// CheckIn reports a host's state. The credential travels in the
// Authorization header ("Bearer CREDENTIAL").
type CheckIn struct {
	HostID        string      `json:"host_id"`
	Hostname      string      `json:"hostname"`
	KernelRelease string      `json:"kernel_release"`
	BuildID       string      `json:"build_id"`
	Level         int64       `json:"level"` // the effective kernel patch level, 0 for none
	Userspace     []UserPatch `json:"userspace,omitempty"`
	AgentVersion  string      `json:"agent_version"`
	Channel       string      `json:"channel"`
	Result        string      `json:"result"`
	ResultAt      time.Time   `json:"result_at,omitzero"`
	Error         string      `json:"error,omitempty"`
}

// CheckInResponse acknowledges a stored check-in.
type CheckInResponse struct {
	Stored bool `json:"stored"`
	// NextCheckIn is the longest the host should wait before the next one.
	NextCheckIn string `json:"next_checkin,omitempty"`
}

// ErrorResponse is the body of every 4xx and 5xx answer.
type ErrorResponse struct {
	Error string `json:"error"`
}

// Decoding errors; the server maps them to 413 and 400.
var (
	ErrTooLarge  = fmt.Errorf("request body larger than %d bytes", MaxBodyBytes)
	ErrMalformed = errors.New("malformed request")
	ErrInvalid   = errors.New("invalid field")
)

// Decode reads one JSON object into v: at most MaxBodyBytes, no unknown
// fields, nothing after it.
func Decode(r io.Reader, v any) error {
	data, err := io.ReadAll(io.LimitReader(r, MaxBodyBytes+1))
	if err != nil {
		return fmt.Errorf("%w: reading body: %v", ErrMalformed, err)
	}
	if len(data) > MaxBodyBytes {
		return ErrTooLarge
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%w: data after the JSON object", ErrMalformed)
	}
	return nil
}

// Compiled on first use (sync.OnceValue), not at program start: every
// livefix command links this package, and compiling bounded repetitions
// at init would add milliseconds to the cold start of commands that never
// validate anything (livefix process patch).
var (
	hostIDRE   = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^h[A-Za-z0-9_-]{8,63}$`) })
	hostnameRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]{0,252})$`) })
	releaseRE  = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+~-]{0,127}$`) })
	buildIDRE  = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^([0-9a-f]{2}){2,64}$`) })
	channelRE  = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[a-z][a-z0-9-]{0,31}$`) })
	versionRE  = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+~-]{0,63}$`) })
	patchRE    = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+~-]{0,254}$`) })
)

func invalid(field, value, want string) error {
	if len(value) > 80 {
		value = value[:80] + "..."
	}
	return fmt.Errorf("%w %s %q: %s", ErrInvalid, field, value, want)
}

// ValidHostname reports whether s is an acceptable host name.
func ValidHostname(s string) bool { return hostnameRE().MatchString(s) && !strings.Contains(s, "..") }

// ValidBuildID reports whether s is a hex GNU build-id (lower case).
func ValidBuildID(s string) bool { return buildIDRE().MatchString(s) }

// ValidRelease reports whether s is an acceptable kernel release.
func ValidRelease(s string) bool { return releaseRE().MatchString(s) && !strings.Contains(s, "..") }

// ValidChannel reports whether s is an acceptable channel name.
func ValidChannel(s string) bool { return channelRE().MatchString(s) }

// Validate checks a registration request.
func (r *RegisterRequest) Validate() error {
	if r.Key == "" || len(r.Key) > 128 {
		return invalid("key", "", "the organisation key printed by `livefix-server org add`")
	}
	if r.Hostname != "" && !ValidHostname(r.Hostname) {
		return invalid("hostname", r.Hostname, "letters, digits, '.', '_' and '-', at most 253")
	}
	return nil
}

// Validate checks every field of a check-in.
func (c *CheckIn) Validate(now time.Time) error {
	switch {
	case !hostIDRE().MatchString(c.HostID):
		return invalid("host_id", c.HostID, "the host id from registration")
	case !ValidHostname(c.Hostname):
		return invalid("hostname", c.Hostname, "letters, digits, '.', '_' and '-', at most 253")
	case !ValidRelease(c.KernelRelease):
		return invalid("kernel_release", c.KernelRelease, "a kernel release as uname -r prints it")
	case !ValidBuildID(c.BuildID):
		return invalid("build_id", c.BuildID, "the running kernel's GNU build-id in lower-case hex")
	case c.Level < 0 || c.Level > MaxLevel:
		return invalid("level", fmt.Sprint(c.Level), fmt.Sprintf("0 to %d", MaxLevel))
	case len(c.Userspace) > MaxUserPatches:
		return invalid("userspace", fmt.Sprintf("%d entries", len(c.Userspace)), fmt.Sprintf("at most %d", MaxUserPatches))
	case !versionRE().MatchString(c.AgentVersion):
		return invalid("agent_version", c.AgentVersion, "a version string")
	case !ValidChannel(c.Channel):
		return invalid("channel", c.Channel, "a channel name such as stable or test")
	case len(c.Error) > MaxErrorLen || !utf8.ValidString(c.Error):
		return invalid("error", c.Error, fmt.Sprintf("UTF-8 text of at most %d bytes", MaxErrorLen))
	case !c.ResultAt.IsZero() && c.ResultAt.After(now.Add(24*time.Hour)):
		return invalid("result_at", c.ResultAt.Format(time.RFC3339), "a time not in the future")
	}
	switch c.Result {
	case ResultNone, ResultOK, ResultFailed, ResultStalled:
	default:
		return invalid("result", c.Result, `"", "ok", "failed" or "stalled"`)
	}
	for i, p := range c.Userspace {
		if !ValidBuildID(p.BuildID) {
			return invalid(fmt.Sprintf("userspace[%d].build_id", i), p.BuildID, "a GNU build-id in lower-case hex")
		}
		if p.Level < 0 || p.Level > MaxLevel {
			return invalid(fmt.Sprintf("userspace[%d].level", i), fmt.Sprint(p.Level), fmt.Sprintf("0 to %d", MaxLevel))
		}
		if p.Name != "" && (!patchRE().MatchString(p.Name) || strings.Contains(p.Name, "..")) {
			return invalid(fmt.Sprintf("userspace[%d].name", i), p.Name, "a patch name without '/' or '..'")
		}
	}
	return nil
}
