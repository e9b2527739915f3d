package agent

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/livefix/livefix/internal/patchtest"
	"github.com/livefix/livefix/patchrepo"
)

// TestProxyFromEnvironment checks that the agent goes through the proxy
// the environment names (HTTP_PROXY for http:// repositories; HTTPS_PROXY
// is the same code path for https://). Go reads the proxy variables once
// per process, so the agent runs in a child process of the test.
func TestProxyFromEnvironment(t *testing.T) {
	if os.Getenv("LIVEFIX_PROXY_CHILD") != "" {
		proxyChild(t)
		return
	}
	r, err := patchrepo.Init(t.TempDir(), patchrepo.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ko, _ := patchtest.KernelPatch{Name: "lf_p_l1", Level: 1, BuildID: kernelID}.Write(t.TempDir())
	if _, err := r.Publish(ko, patchrepo.PublishOptions{Channel: "stable"}); err != nil {
		t.Fatal(err)
	}
	h := patchrepo.Handler(patchrepo.RepositoryDir(r.Dir))
	var proxied atomic.Int64
	// A forward proxy that knows one origin, repo.invalid, which does not
	// resolve: the agent can only reach it through the proxy.
	proxy := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Host != "repo.invalid" {
			http.Error(w, "unknown origin "+req.URL.Host, http.StatusBadGateway)
			return
		}
		proxied.Add(1)
		h.ServeHTTP(w, req)
	}))
	cmd := exec.Command(os.Args[0], "-test.run=^TestProxyFromEnvironment$", "-test.count=1")
	cmd.Env = append(os.Environ(), "LIVEFIX_PROXY_CHILD=1", "HTTP_PROXY="+proxy, "HTTPS_PROXY="+proxy, "NO_PROXY=",
		"LIVEFIX_PROXY_ROOT="+filepath.Join(patchrepo.RepositoryDir(r.Dir), "metadata", "1.root.json"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("agent behind the proxy: %v\n%s", err, out)
	}
	if proxied.Load() < 4 {
		t.Fatalf("%d requests went through the proxy", proxied.Load())
	}
}

func proxyChild(t *testing.T) {
	cfg := &Config{Repository: "http://repo.invalid", Root: os.Getenv("LIVEFIX_PROXY_ROOT"), StateDir: t.TempDir()}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	k := &fakeKernel{id: kernelID}
	a := &Agent{Config: cfg, Kernel: k, Version: "1.0.0"}
	if changed, err := a.Poll(context.Background()); err != nil || !changed {
		t.Fatalf("poll: %v %v", changed, err)
	}
	rep, err := a.Update(context.Background(), UpdateOptions{})
	if err != nil || !rep.Done || k.level != 1 {
		t.Fatalf("update: %+v %v", rep, err)
	}
}
