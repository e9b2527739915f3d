package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/livefix/livefix/agent"
	"github.com/livefix/livefix/internal/patchtest"
	"github.com/livefix/livefix/kernelpatch"
	"github.com/livefix/livefix/patchrepo"
)

const agentBuildID = "f75010e906ea0123456789abcdef0123456789ab"

// stubKernel stands in for the host's load path in the command tests;
// the agent package's tests cover the policy, this covers the wiring.
type stubKernel struct{ level int }

func (k *stubKernel) BuildID() (string, error)      { return agentBuildID, nil }
func (k *stubKernel) Applied() (int, string, error) { return k.level, "", nil }
func (k *stubKernel) Apply(_ context.Context, ko string, _ bool, _ io.Writer) error {
	md, err := kernelpatch.ReadMetadata(ko)
	if err != nil {
		return err
	}
	k.level = md.Level
	return nil
}
func (k *stubKernel) Unload(context.Context, io.Writer) error { k.level = 0; return nil }

func TestRegisterUpdateCommands(t *testing.T) {
	r, err := patchrepo.Init(t.TempDir(), patchrepo.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(patchrepo.Handler(patchrepo.RepositoryDir(r.Dir)))
	defer srv.Close()
	k := &stubKernel{}
	oldK, oldU := newAgentKernel, newAgentUser
	newAgentKernel = func(*agent.Config) agent.Kernel { return k }
	newAgentUser = func() agent.UserPatcher { return nil }
	defer func() { newAgentKernel, newAgentUser = oldK, oldU }()
	cfg := filepath.Join(t.TempDir(), "agent.toml")
	var out, errb bytes.Buffer
	if code := runRegister([]string{"--server", srv.URL, "--config", cfg, "--state-dir", t.TempDir()}, &out, &errb); code != 0 {
		t.Fatalf("register: %d %s", code, errb.String())
	}
	if code := runRegister([]string{"--config", cfg}, &out, &errb); code != exitBadInput {
		t.Fatalf("register without --server: %d", code)
	}
	ko, _ := patchtest.KernelPatch{Name: "lf_c_l1", Level: 1, BuildID: agentBuildID, CVEs: []string{"CVE-2024-1086"}}.Write(t.TempDir())
	if _, err := r.Publish(ko, patchrepo.PublishOptions{Channel: "stable"}); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if code := runUpdate([]string{"--dry-run", "--config", cfg}, &out, &errb); code != 0 || !strings.Contains(out.String(), "would apply level 0 -> 1") || k.level != 0 {
		t.Fatalf("update --dry-run: %d %q %s", code, out.String(), errb.String())
	}
	out.Reset()
	if code := runUpdate([]string{"--json", "--config", cfg}, &out, &errb); code != 0 || k.level != 1 {
		t.Fatalf("update: %d %s %s", code, out.String(), errb.String())
	}
	var rep agent.Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil || !rep.Done || rep.Applied != 1 || len(rep.CVEs) != 1 {
		t.Fatalf("update --json: %v %s", err, out.String())
	}
	// A tampered target: exit 3 (refused), level kept.
	ko2, _ := patchtest.KernelPatch{Name: "lf_c_l2", Level: 2, BuildID: agentBuildID}.Write(t.TempDir())
	if _, err := r.Publish(ko2, patchrepo.PublishOptions{Channel: "stable"}); err != nil {
		t.Fatal(err)
	}
	m, _ := filepath.Glob(filepath.Join(patchrepo.RepositoryDir(r.Dir), "targets", "kernel", "*", "2", "*.ko"))
	if err := patchtestCorrupt(m[0]); err != nil {
		t.Fatal(err)
	}
	errb.Reset()
	if code := runUpdate([]string{"--config", cfg}, &out, &errb); code != exitRefused || k.level != 1 || !strings.Contains(errb.String(), "hash verification failed") {
		t.Fatalf("tampered update: %d level %d %s", code, k.level, errb.String())
	}
}

func patchtestCorrupt(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	b[len(b)/2] ^= 1
	return os.WriteFile(path, b, 0o644)
}
