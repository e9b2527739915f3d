package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// RegisterOptions describe livefix register.
type RegisterOptions struct {
	Server string // URL of the repository or of a livefix-server serving it at /repo/
	// RootFile is the root metadata to trust (from the repository's
	// operator); empty means trust on first use.
	RootFile string
	// Key is an organisation key for a fleet server (livefix-server serve):
	// Enroll exchanges it for a host credential stored in the config.
	Key    string
	Enroll func(ctx context.Context, cfg *Config, orgKey string) error
	// ConfigPath is where the configuration is written; an existing one
	// keeps its policy settings (channel, delay, pins, ...).
	ConfigPath string
	Channel    string // when set, overrides the channel
	StateDir   string // when set, overrides the state directory
	HTTP       *http.Client
	Out        io.Writer
}

// maxRoot bounds a root metadata download (go-tuf's default limit).
const maxRoot = 512000

// Register finds the repository at Server, establishes the trusted root,
// checks that the repository verifies against it and writes the
// configuration (mode 0600) and the root next to it.
func Register(ctx context.Context, o RegisterOptions) (*Config, error) {
	out := o.Out
	if out == nil {
		out = io.Discard
	}
	hc := o.HTTP
	if hc == nil {
		hc = (&Agent{Config: &Config{HTTPTimeout: Duration{60e9}}}).client()
	}
	server := strings.TrimRight(o.Server, "/")
	repo, first, err := findRepository(ctx, hc, server)
	if err != nil {
		return nil, err
	}
	var root []byte
	if o.RootFile != "" {
		if root, err = os.ReadFile(o.RootFile); err != nil {
			return nil, fmt.Errorf("register: %w", err)
		}
	} else {
		root = first
	}
	ids, err := checkRoot(root)
	if err != nil {
		return nil, fmt.Errorf("register: root metadata %s: %w", orDefault(o.RootFile, "from "+repo), err)
	}
	if o.RootFile == "" {
		fmt.Fprintf(out, "WARNING: TRUST ON FIRST USE: no --root FILE given, so this host now trusts the root metadata\n"+
			"WARNING: that %s served just now. If that server or the network path to it was compromised,\n"+
			"WARNING: so is this host. Compare the root key id(s) with the repository operator's:\n", repo)
		for _, id := range ids {
			fmt.Fprintf(out, "WARNING:   %s\n", id)
		}
	}
	path := o.ConfigPath
	cfg, err := LoadConfig(path)
	if err != nil {
		cfg = &Config{}
	}
	cfg.Server, cfg.Repository = o.Server, repo
	cfg.Root = filepath.Join(filepath.Dir(path), "root.json")
	if o.Channel != "" {
		cfg.Channel = o.Channel
	}
	if o.StateDir != "" {
		cfg.StateDir = o.StateDir
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("register: %w", err)
	}
	// Trust starts over from this root: drop metadata cached under another.
	if err := os.RemoveAll(filepath.Join(cfg.StateDir, "agent", "tuf")); err != nil {
		return nil, fmt.Errorf("register: %w", err)
	}
	if err := writeFile(cfg.Root, root, 0o600); err != nil {
		return nil, fmt.Errorf("register: %w", err)
	}
	a := &Agent{Config: cfg, HTTP: hc}
	cat, err := a.Refresh(ctx)
	if err != nil {
		return nil, fmt.Errorf("register: the repository does not verify against this root: %w", err)
	}
	if o.Key != "" {
		if o.Enroll == nil {
			return nil, fmt.Errorf("register: --key needs a fleet server (livefix-server serve) and this livefix cannot enroll with one; register without --key")
		}
		if err := o.Enroll(ctx, cfg, o.Key); err != nil {
			return nil, fmt.Errorf("register: enroll with %s: %w", o.Server, err)
		}
	}
	if err := cfg.Save(path); err != nil {
		return nil, err
	}
	fmt.Fprintf(out, "registered with %s (repository %s, %d patch levels published); channel %s; configuration in %s\n",
		o.Server, repo, len(cat.Levels), cfg.Channel, path)
	return cfg, nil
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// findRepository locates the repository: at server itself (a static
// server of DIR/repository) or at server/repo (livefix-server serve). It
// returns the base URL and the first root metadata served there.
func findRepository(ctx context.Context, hc *http.Client, server string) (string, []byte, error) {
	var errs []string
	for _, base := range []string{server, server + "/repo"} {
		b, err := get(ctx, hc, metadataURL(base)+"/1.root.json", maxRoot)
		if err == nil {
			return base, b, nil
		}
		errs = append(errs, err.Error())
	}
	return "", nil, fmt.Errorf("register: %w: no repository at %s: %s", ErrUnreachable, server, strings.Join(errs, "; "))
}

func get(ctx context.Context, hc *http.Client, url string, limit int64) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("GET %s: more than %d bytes", url, limit)
	}
	return b, nil
}

// checkRoot parses root metadata and checks that it is signed by its own
// root keys (threshold), returning those key ids.
func checkRoot(b []byte) ([]string, error) {
	root, err := metadata.Root().FromBytes(b)
	if err != nil {
		return nil, err
	}
	if err := root.VerifyDelegate(metadata.ROOT, root); err != nil {
		return nil, fmt.Errorf("not signed by its own root keys: %w", err)
	}
	r := root.Signed.Roles[metadata.ROOT]
	if r == nil {
		return nil, errors.New("no root role")
	}
	ids := append([]string(nil), r.KeyIDs...)
	sort.Strings(ids)
	return ids, nil
}
