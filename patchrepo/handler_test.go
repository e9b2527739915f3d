package patchrepo

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/livefix/livefix/internal/patchtest"
)

func TestHandler(t *testing.T) {
	r := newRepo(t)
	if _, err := r.Publish(kpatch(t, patchtest.KernelPatch{Level: 1}), PublishOptions{Channel: ChannelStable}); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(Handler(RepositoryDir(r.Dir)))
	defer srv.Close()
	get := func(path, etag string) (*http.Response, string) {
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		if etag != "" {
			req.Header.Set("If-None-Match", etag)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(b)
	}
	resp, body := get("/metadata/timestamp.json", "")
	etag := resp.Header.Get("ETag")
	if resp.StatusCode != 200 || etag == "" || len(body) == 0 {
		t.Fatalf("timestamp: %d etag %q", resp.StatusCode, etag)
	}
	if resp, _ = get("/metadata/timestamp.json", etag); resp.StatusCode != http.StatusNotModified {
		t.Fatalf("conditional GET: %d", resp.StatusCode)
	}
	if _, err := r.Refresh(); err != nil {
		t.Fatal(err)
	}
	if resp, _ = get("/metadata/timestamp.json", etag); resp.StatusCode != 200 || resp.Header.Get("ETag") == etag {
		t.Fatalf("after refresh: %d %q", resp.StatusCode, resp.Header.Get("ETag"))
	}
	for _, p := range []string{"/../settings.json", "/keys/targets", "/metadata/../../keys/root", "/", "/targets/", "/metadata/.timestamp.json.tmp"} {
		if resp, _ := get(p, ""); resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s: %d; want 404", p, resp.StatusCode)
		}
	}
	req, _ := http.NewRequest("POST", srv.URL+"/metadata/timestamp.json", nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST: %v %v", resp, err)
	}
}
