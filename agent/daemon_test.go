package agent

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/livefix/livefix/internal/patchtest"
	"github.com/livefix/livefix/patchrepo"
)

// TestDaemon runs the daemon with a short poll interval: it takes a
// promoted level on a following poll, counts its polls as 304s while
// nothing changes, keeps its level while the server is down and says so
// in the status, and takes the next level when the server is back.
func TestDaemon(t *testing.T) {
	e := newEnv(t, "")
	e.agent.Config.PollInterval.Duration = 50 * time.Millisecond
	e.agent.Config.PollJitter.Duration = 10 * time.Millisecond
	var mu sync.Mutex
	conditional := 0
	down := false
	e.setMangle(func(w http.ResponseWriter, r *http.Request) bool {
		mu.Lock()
		defer mu.Unlock()
		if down {
			http.Error(w, "maintenance", http.StatusServiceUnavailable)
			return true
		}
		if strings.HasSuffix(r.URL.Path, "/timestamp.json") && r.Header.Get("If-None-Match") != "" {
			conditional++
		}
		return false
	})
	e.publish(1, "stable", patchtest.KernelPatch{})
	e.publish(2, "test", patchtest.KernelPatch{})
	updates := make(chan *Report, 100)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- e.agent.Run(ctx, DaemonOptions{OnUpdate: func(r *Report, err error) { updates <- r }})
	}()
	waitLevel := func(level int) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			if l, _ := e.kernel.get(); l == level {
				return
			}
			select {
			case <-updates:
			case <-time.After(20 * time.Millisecond):
			case <-deadline:
				l, a := e.kernel.get()
				t.Fatalf("daemon did not reach level %d: at %d after %v", level, l, a)
			}
		}
	}
	waitLevel(1)
	time.Sleep(300 * time.Millisecond) // several polls, nothing changes
	if l, _ := e.kernel.get(); l != 1 {
		t.Fatalf("stable daemon took the test level")
	}
	mu.Lock()
	n := conditional
	mu.Unlock()
	if n < 2 {
		t.Fatalf("%d conditional polls; want several", n)
	}
	if _, err := e.repo.Promote(kernelID, 2, "stable"); err != nil {
		t.Fatal(err)
	}
	waitLevel(2)

	mu.Lock()
	down = true
	mu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, _ := ReadStatus(e.agent.Config.StateDir)
		if st != nil && !st.Reachable {
			if st.AppliedLevel != 2 || !strings.Contains(st.Result, "kept level 2") {
				t.Fatalf("status while down: %+v", st)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status never said unreachable: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.publish(3, "stable", patchtest.KernelPatch{})
	mu.Lock()
	down = false
	mu.Unlock()
	waitLevel(3)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, a := e.kernel.get(); strings.Join(a, ",") != "1,2,3" {
		t.Fatalf("applies %v", a)
	}
}

func TestRegisterTOFU(t *testing.T) {
	r, err := patchrepo.Init(t.TempDir(), patchrepo.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ko, _ := patchtest.KernelPatch{Name: "lf_a", Level: 1, BuildID: kernelID}.Write(t.TempDir())
	if _, err := r.Publish(ko, patchrepo.PublishOptions{Channel: "stable"}); err != nil {
		t.Fatal(err)
	}
	// Served below /repo/, as livefix-server serve does.
	mux := http.NewServeMux()
	mux.Handle("/repo/", http.StripPrefix("/repo", patchrepo.Handler(patchrepo.RepositoryDir(r.Dir))))
	srv := newServer(t, mux)
	etc := t.TempDir()
	cfgPath := filepath.Join(etc, "livefix", "agent.toml")
	var out bytes.Buffer
	cfg, err := Register(context.Background(), RegisterOptions{Server: srv, ConfigPath: cfgPath, StateDir: t.TempDir(), Channel: "test", Out: &out})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "TRUST ON FIRST USE") || !strings.Contains(out.String(), "1 patch levels") {
		t.Fatalf("register said:\n%s", out.String())
	}
	if cfg.Repository != srv+"/repo" || cfg.Channel != "test" {
		t.Fatalf("config %+v", cfg)
	}
	for _, p := range []string{cfgPath, filepath.Join(etc, "livefix", "root.json")} {
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", p, fi.Mode(), err)
		}
	}
	back, err := LoadConfig(cfgPath)
	if err != nil || back.Repository != cfg.Repository || back.Channel != "test" {
		t.Fatalf("reload: %+v %v", back, err)
	}
	// --key without a fleet server's enrollment: refused, clearly.
	_, err = Register(context.Background(), RegisterOptions{Server: srv, ConfigPath: cfgPath, Key: "org-123", Out: &out})
	if err == nil || !strings.Contains(err.Error(), "--key needs a fleet server") {
		t.Fatalf("register --key: %v", err)
	}
	// A root that is not the repository's: refused.
	other, _ := patchrepo.Init(t.TempDir(), patchrepo.InitOptions{})
	_, err = Register(context.Background(), RegisterOptions{Server: srv, ConfigPath: filepath.Join(etc, "x.toml"),
		RootFile: filepath.Join(patchrepo.RepositoryDir(other.Dir), "metadata", "root.json"), StateDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "does not verify against this root") {
		t.Fatalf("register with a foreign root: %v", err)
	}
	if _, err := Register(context.Background(), RegisterOptions{Server: "http://127.0.0.1:1", ConfigPath: filepath.Join(etc, "y.toml")}); err == nil {
		t.Fatal("registered with nothing listening")
	}
}

func newServer(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := &http.Server{Handler: h}
	ln, err := listen()
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}
