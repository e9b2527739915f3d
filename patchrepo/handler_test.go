package patchrepo

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

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

// TestHandlerRevalidate: with Revalidate, a poll (If-None-Match) is
// answered from memory until the revalidation time has passed, while a
// request without If-None-Match always sees the current file.
func TestHandlerRevalidate(t *testing.T) {
	r := newRepo(t)
	h := NewHandler(RepositoryDir(r.Dir), HandlerOptions{Revalidate: time.Second}).(*handler)
	var clock int64
	h.now = func() int64 { return clock }
	get := func(etag string) (int, string) {
		req := httptest.NewRequest("GET", "/metadata/timestamp.json", nil)
		if etag != "" {
			req.Header.Set("If-None-Match", etag)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w.Code, w.Header().Get("ETag")
	}
	code, etag := get("")
	if code != http.StatusOK || etag == "" {
		t.Fatalf("GET: %d %q", code, etag)
	}
	if _, err := r.Refresh(); err != nil {
		t.Fatal(err)
	}
	clock += int64(time.Second) - 1
	if code, _ := get(etag); code != http.StatusNotModified {
		t.Fatalf("poll within the revalidation time: %d; want 304 from memory", code)
	}
	clock++
	code, newTag := get(etag)
	if code != http.StatusOK || newTag == etag {
		t.Fatalf("poll after the revalidation time: %d %q; want 200 and a new ETag", code, newTag)
	}
	if _, err := r.Refresh(); err != nil {
		t.Fatal(err)
	}
	if code, tag := get(""); code != http.StatusOK || tag == newTag {
		t.Fatalf("unconditional GET right after a change: %d %q; want the new file", code, tag)
	}
	if code, _ := get(newTag); code != http.StatusOK {
		t.Fatalf("poll after an unconditional GET saw the change: %d; want 200", code)
	}
}

// BenchmarkHandlerNotModified is the handler's cost of one conditional
// request for timestamp.json answered 304 (the agents' poll), without
// the HTTP server's own parsing and writing.
func BenchmarkHandlerNotModified(b *testing.B) {
	r, err := Init(b.TempDir(), InitOptions{})
	if err != nil {
		b.Fatal(err)
	}
	for _, rv := range []time.Duration{0, time.Second} {
		b.Run("revalidate="+rv.String(), func(b *testing.B) {
			benchNotModified(b, NewHandler(RepositoryDir(r.Dir), HandlerOptions{Revalidate: rv}))
		})
	}
}

func benchNotModified(b *testing.B, h http.Handler) {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metadata/timestamp.json", nil))
	etag := rec.Header().Get("ETag")
	req := httptest.NewRequest("GET", "/metadata/timestamp.json", nil)
	req.Header.Set("If-None-Match", etag)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		w := &headerWriter{h: http.Header{}}
		h.ServeHTTP(w, req)
		if w.code != http.StatusNotModified {
			b.Fatalf("status %d", w.code)
		}
	}
}

// headerWriter is the least ResponseWriter: headers and status.
type headerWriter struct {
	h    http.Header
	code int
}

func (w *headerWriter) Header() http.Header         { return w.h }
func (w *headerWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *headerWriter) WriteHeader(code int)        { w.code = code }
