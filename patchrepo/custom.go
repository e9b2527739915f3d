package patchrepo

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Kinds of patch a repository holds.
const (
	KindKernel = "kernel"
	KindUser   = "user"
)

// Channels a patch is published to. A host on the test channel takes test
// and stable patches; a host on stable takes stable ones only.
const (
	ChannelTest   = "test"
	ChannelStable = "stable"
)

// ErrBadCustom is wrapped by DecodeCustom for metadata that does not
// describe a livefix patch.
var ErrBadCustom = errors.New("bad patch metadata")

// Custom is the custom metadata of every target: what a host needs to
// decide whether to take a patch. It is signed with the targets metadata.
type Custom struct {
	Kind    string `json:"kind"`     // KindKernel or KindUser
	BuildID string `json:"build_id"` // kernel: vmlinux build-id; user: the patched object's
	Level   int    `json:"level"`
	Name    string `json:"name"`              // module or patch name
	Release string `json:"release,omitempty"` // kernel release the patch was built for
	Channel string `json:"channel"`
	// Published is when the level was first published; StableSince when
	// it reached the stable channel (delayed feeds count from it).
	Published   time.Time  `json:"published"`
	StableSince *time.Time `json:"stable_since,omitempty"`
	CVEs        []string   `json:"cves,omitempty"`
	Summary     string     `json:"summary,omitempty"`
	// MinAgent is the oldest agent version that may apply the patch.
	MinAgent string      `json:"min_agent_version,omitempty"`
	Revoked  *Revocation `json:"revoked,omitempty"`
}

// Revocation withdraws a level from hosts.
type Revocation struct {
	Time   time.Time `json:"time"`
	Reason string    `json:"reason"`
}

// Compiled on first use (sync.OnceValue), not at program start: every
// livefix command links this package, and compiling bounded repetitions
// at init would add milliseconds to the cold start of commands that never
// validate anything (livefix process patch).
var (
	nameRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$`) })
	cveRE  = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^CVE-[0-9]{4}-[0-9]{4,}$`) })
)

// maxCustom bounds the custom metadata of one target.
const maxCustom = 16 << 10

// DecodeCustom parses and checks the custom metadata of a target. It
// comes from the network (inside verified metadata, but a compromised or
// buggy publisher must still not crash a host): anything unexpected is an
// error wrapping ErrBadCustom.
func DecodeCustom(raw []byte) (*Custom, error) {
	if len(raw) == 0 {
		return nil, fmt.Errorf("%w: no custom metadata", ErrBadCustom)
	}
	if len(raw) > maxCustom {
		return nil, fmt.Errorf("%w: %d bytes, more than %d", ErrBadCustom, len(raw), maxCustom)
	}
	var c Custom
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadCustom, err)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Validate checks the fields of c.
func (c *Custom) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrBadCustom}, a...)...)
	}
	switch c.Kind {
	case KindKernel, KindUser:
	default:
		return bad("kind %q, want %q or %q", c.Kind, KindKernel, KindUser)
	}
	if !validBuildID(c.BuildID) {
		return bad("build-id %q is not lowercase hex", c.BuildID)
	}
	if c.Level < 1 {
		return bad("level %d, want 1 or more", c.Level)
	}
	if !nameRE().MatchString(c.Name) {
		return bad("name %q", c.Name)
	}
	switch c.Channel {
	case ChannelTest, ChannelStable:
	default:
		return bad("channel %q, want %q or %q", c.Channel, ChannelTest, ChannelStable)
	}
	if c.Channel == ChannelStable && c.StableSince == nil {
		return bad("stable patch without a stable_since time")
	}
	for _, id := range c.CVEs {
		if !cveRE().MatchString(id) {
			return bad("CVE id %q", id)
		}
	}
	if c.Revoked != nil && c.Revoked.Reason == "" {
		return bad("revocation without a reason")
	}
	return nil
}

func validBuildID(s string) bool {
	if len(s) < 2 || len(s) > 128 || len(s)%2 != 0 || strings.ToLower(s) != s {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// ValidChannel reports whether ch names a channel.
func ValidChannel(ch string) bool { return ch == ChannelTest || ch == ChannelStable }

// ValidCVE reports whether id is a well-formed CVE id.
func ValidCVE(id string) bool { return cveRE().MatchString(id) }

// TargetPath is the target name of a patch file: kind/BUILD-ID/LEVEL/FILE.
func TargetPath(kind, buildID string, level int, file string) string {
	return path.Join(kind, buildID, strconv.Itoa(level), file)
}

// ParseTargetPath splits a target name made by TargetPath.
func ParseTargetPath(p string) (kind, buildID string, level int, file string, err error) {
	parts := strings.Split(p, "/")
	if len(parts) != 4 {
		return "", "", 0, "", fmt.Errorf("target %q: want KIND/BUILD-ID/LEVEL/FILE", p)
	}
	kind, buildID, file = parts[0], parts[1], parts[3]
	if kind != KindKernel && kind != KindUser {
		return "", "", 0, "", fmt.Errorf("target %q: unknown kind %q", p, kind)
	}
	if !validBuildID(buildID) {
		return "", "", 0, "", fmt.Errorf("target %q: bad build-id", p)
	}
	level, err = strconv.Atoi(parts[2])
	if err != nil || level < 1 || strconv.Itoa(level) != parts[2] {
		return "", "", 0, "", fmt.Errorf("target %q: bad level %q", p, parts[2])
	}
	if !nameRE().MatchString(file) {
		return "", "", 0, "", fmt.Errorf("target %q: bad file name", p)
	}
	return kind, buildID, level, file, nil
}

// Eligible reports whether a host on channel ch may take the patch at now
// given a delay (stable hosts only) and the agent's version. It does not
// look at revocation (see Revoked).
func (c *Custom) Eligible(ch string, delay time.Duration, now time.Time) bool {
	switch ch {
	case ChannelTest:
		return true
	case ChannelStable:
		return c.Channel == ChannelStable && c.StableSince != nil && !now.Before(c.StableSince.Add(delay))
	}
	return false
}
