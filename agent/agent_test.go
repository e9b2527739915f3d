package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/livefix/livefix/internal/patchtest"
	"github.com/livefix/livefix/kernelpatch"
	"github.com/livefix/livefix/patchrepo"
)

const kernelID = "f75010e906ea0123456789abcdef0123456789ab"

// fakeKernel is the host kernel load path with the kernel left out: it
// checks what it is given as the host's Load does (module and metadata)
// and records the level.
type fakeKernel struct {
	mu      sync.Mutex
	id      string
	level   int
	name    string
	applies []string
	fail    error
}

func (k *fakeKernel) BuildID() (string, error) { return k.id, nil }
func (k *fakeKernel) Applied() (int, string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.level, k.name, nil
}
func (k *fakeKernel) Apply(_ context.Context, ko string, downgrade bool, _ io.Writer) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.fail != nil {
		return k.fail
	}
	mi, err := kernelpatch.ReadModuleInfo(ko)
	if err != nil {
		return err
	}
	md, err := kernelpatch.ReadMetadata(ko)
	if err != nil {
		return err
	}
	if md.BuildID != k.id {
		return fmt.Errorf("fake kernel: build-id %s", md.BuildID)
	}
	if mi.Level < k.level && !downgrade {
		return fmt.Errorf("fake kernel: level %d below %d without downgrade", mi.Level, k.level)
	}
	k.level, k.name = mi.Level, mi.Name
	k.applies = append(k.applies, fmt.Sprintf("%d%s", mi.Level, map[bool]string{true: "d"}[downgrade]))
	return nil
}
func (k *fakeKernel) Unload(context.Context, io.Writer) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.level, k.name = 0, ""
	k.applies = append(k.applies, "unload")
	return nil
}
func (k *fakeKernel) get() (int, []string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.level, append([]string(nil), k.applies...)
}

// env is a repository served over HTTP on loopback and a registered host.
type env struct {
	t      *testing.T
	repo   *patchrepo.Repo
	srv    *httptest.Server
	kernel *fakeKernel
	agent  *Agent
	// mangle, when set, may replace a response (attacks).
	mu     sync.Mutex
	mangle func(w http.ResponseWriter, r *http.Request) bool
}

func newEnv(t *testing.T, cfgExtra string) *env {
	t.Helper()
	r, err := patchrepo.Init(t.TempDir(), patchrepo.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, repo: r, kernel: &fakeKernel{id: kernelID}}
	h := patchrepo.Handler(patchrepo.RepositoryDir(r.Dir))
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		e.mu.Lock()
		m := e.mangle
		e.mu.Unlock()
		if m != nil && m(w, req) {
			return
		}
		h.ServeHTTP(w, req)
	}))
	t.Cleanup(e.srv.Close)
	etc := t.TempDir()
	cfgPath := filepath.Join(etc, "agent.toml")
	var out bytes.Buffer
	_, err = Register(context.Background(), RegisterOptions{
		Server: e.srv.URL, RootFile: filepath.Join(patchrepo.RepositoryDir(r.Dir), "metadata", "1.root.json"),
		ConfigPath: cfgPath, StateDir: t.TempDir(), Out: &out,
	})
	if err != nil {
		t.Fatalf("register: %v", err)
	}
	if cfgExtra != "" {
		b, _ := os.ReadFile(cfgPath)
		os.WriteFile(cfgPath, append(b, []byte(cfgExtra)...), 0o600)
	}
	cfg, err := LoadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	e.agent = &Agent{Config: cfg, Kernel: e.kernel, Version: "1.0.0", Progress: io.Discard}
	return e
}

func (e *env) setMangle(m func(w http.ResponseWriter, r *http.Request) bool) {
	e.mu.Lock()
	e.mangle = m
	e.mu.Unlock()
}

func (e *env) publish(level int, channel string, k patchtest.KernelPatch) {
	e.t.Helper()
	k.Level = level
	if k.Name == "" {
		k.Name = fmt.Sprintf("lf_fix_l%d", level)
	}
	if k.BuildID == "" {
		k.BuildID = kernelID
	}
	ko, err := k.Write(e.t.TempDir())
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.repo.Publish(ko, patchrepo.PublishOptions{Channel: channel}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) update(dry bool) (*Report, error) {
	return e.agent.Update(context.Background(), UpdateOptions{DryRun: dry})
}

func (e *env) wantLevel(level int, applies string) {
	e.t.Helper()
	l, a := e.kernel.get()
	if l != level || strings.Join(a, ",") != applies {
		e.t.Fatalf("kernel at level %d after %v; want level %d after [%s]", l, a, level, applies)
	}
}

func TestChannelsPromoteRevoke(t *testing.T) {
	e := newEnv(t, "")
	rep, err := e.update(false)
	if err != nil || rep.Kernel.Action != ActionNone || !strings.Contains(rep.Kernel.Reason, "no patch published") {
		t.Fatalf("empty repository: %+v %v", rep, err)
	}
	e.publish(1, "stable", patchtest.KernelPatch{CVEs: []string{"CVE-2024-1086"}})
	if rep, err = e.update(true); err != nil || rep.Kernel.Action != ActionApply || rep.Done {
		t.Fatalf("dry run: %+v %v", rep, err)
	}
	e.wantLevel(0, "")
	if rep, err = e.update(false); err != nil || !rep.Done || rep.Applied != 1 {
		t.Fatalf("update: %+v %v", rep, err)
	}
	e.wantLevel(1, "1")
	if len(rep.CVEs) != 1 || rep.CVEs[0] != "CVE-2024-1086" {
		t.Fatalf("cves %v", rep.CVEs)
	}
	e.publish(2, "test", patchtest.KernelPatch{CVEs: []string{"CVE-2024-9999"}})
	if rep, err = e.update(false); err != nil || rep.Done || rep.Available != 1 {
		t.Fatalf("stable host and a test level: %+v %v", rep, err)
	}
	e.wantLevel(1, "1")
	if _, err := e.repo.Promote(kernelID, 2, "stable"); err != nil {
		t.Fatal(err)
	}
	if rep, err = e.update(false); err != nil || !rep.Done {
		t.Fatalf("after promote: %+v %v", rep, err)
	}
	e.wantLevel(2, "1,2")
	if strings.Join(rep.CVEs, ",") != "CVE-2024-1086,CVE-2024-9999" {
		t.Fatalf("cves after level 2: %v", rep.CVEs)
	}
	if _, err := e.repo.Revoke(kernelID, 2, "regression in nft"); err != nil {
		t.Fatal(err)
	}
	if rep, err = e.update(false); err != nil || rep.Kernel.Action != ActionDowngrade || !strings.Contains(rep.Kernel.Reason, "regression in nft") {
		t.Fatalf("after revoke: %+v %v", rep, err)
	}
	e.wantLevel(1, "1,2,1d")
	if _, err := e.repo.Revoke(kernelID, 1, "also bad"); err != nil {
		t.Fatal(err)
	}
	if rep, err = e.update(false); err != nil || rep.Kernel.Action != ActionUnload {
		t.Fatalf("after revoking every level: %+v %v", rep, err)
	}
	e.wantLevel(0, "1,2,1d,unload")
	st, err := ReadStatus(e.agent.Config.StateDir)
	if err != nil || st == nil || st.AppliedLevel != 0 || !st.Reachable || !strings.Contains(st.Result, "unload") {
		t.Fatalf("status %+v %v", st, err)
	}
	// A fresh host ignores revoked levels.
	e.kernel.level = 0
	if rep, err = e.update(false); err != nil || rep.Done {
		t.Fatalf("only revoked levels: %+v %v", rep, err)
	}
}

func TestTestChannelHost(t *testing.T) {
	e := newEnv(t, "")
	e.agent.Config.Channel = "test"
	e.publish(1, "test", patchtest.KernelPatch{})
	if _, err := e.update(false); err != nil {
		t.Fatal(err)
	}
	e.wantLevel(1, "1")
}

func TestDelayAndPins(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name   string
		cfg    string
		at     time.Duration // agent clock offset from now
		levels []int         // published to stable, in order
		want   int
	}{
		{"delay not due", "delay = \"24h\"\n", time.Hour, []int{1, 2}, 0},
		{"delay due", "delay = \"24h\"\n", 25 * time.Hour, []int{1, 2}, 2},
		{"pin level", "pin_level = 1\n", 0, []int{1, 2, 3}, 1},
		{"pin date before", "pin_date = \"2020-01-01\"\n", 0, []int{1}, 0},
		{"pin date after", fmt.Sprintf("pin_date = %q\n", now.Add(48*time.Hour).Format("2006-01-02")), 0, []int{1, 2}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tt.cfg)
			for _, l := range tt.levels {
				e.publish(l, "stable", patchtest.KernelPatch{})
			}
			e.agent.Now = func() time.Time { return time.Now().Add(tt.at) }
			rep, err := e.update(false)
			if err != nil {
				t.Fatal(err)
			}
			if l, _ := e.kernel.get(); l != tt.want {
				t.Fatalf("level %d, want %d (%s)", l, tt.want, rep.Kernel.Reason)
			}
			if tt.name == "delay not due" && (rep.NextDue == nil || !strings.Contains(rep.Kernel.Reason, "delayed")) {
				t.Fatalf("delayed level not reported: %+v", rep)
			}
		})
	}
}

func TestPinBelowAppliedDowngrades(t *testing.T) {
	e := newEnv(t, "")
	e.publish(1, "stable", patchtest.KernelPatch{})
	e.publish(2, "stable", patchtest.KernelPatch{})
	if _, err := e.update(false); err != nil {
		t.Fatal(err)
	}
	e.agent.Config.PinLevel = 1
	if _, err := e.update(false); err != nil {
		t.Fatal(err)
	}
	e.wantLevel(1, "2,1d")
}

func TestMinAgentVersion(t *testing.T) {
	e := newEnv(t, "")
	ko, _ := patchtest.KernelPatch{Name: "lf_new", Level: 1, BuildID: kernelID}.Write(t.TempDir())
	if _, err := e.repo.Publish(ko, patchrepo.PublishOptions{Channel: "stable", MinAgent: "2.0.0"}); err != nil {
		t.Fatal(err)
	}
	rep, err := e.update(false)
	if err != nil || rep.Done || !strings.Contains(rep.Kernel.Reason, "needs livefix 2.0.0") {
		t.Fatalf("%+v %v", rep, err)
	}
}

func TestApplyFailureKeepsLevel(t *testing.T) {
	e := newEnv(t, "")
	e.publish(1, "stable", patchtest.KernelPatch{})
	e.kernel.fail = errors.New("transition stalled, rolled back")
	if _, err := e.update(false); err == nil || !strings.Contains(err.Error(), "rolled back") {
		t.Fatalf("update: %v", err)
	}
	e.wantLevel(0, "")
	st, _ := ReadStatus(e.agent.Config.StateDir)
	if st == nil || !strings.Contains(st.Result, "apply to level 1 failed, level 0 kept") {
		t.Fatalf("status %+v", st)
	}
}
