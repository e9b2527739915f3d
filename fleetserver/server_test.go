package fleetserver

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/livefix/livefix/fleetapi"
	"github.com/livefix/livefix/fleetdb"
	"golang.org/x/time/rate"
)

type testServer struct {
	*httptest.Server
	store *fleetdb.Store
	srv   *Server
	dir   string
	key   string
}

func newTestServer(t *testing.T, tweak func(*Config)) *testServer {
	t.Helper()
	dir := t.TempDir()
	st, err := fleetdb.Open(context.Background(), "", dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Store: st, DataDir: dir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if tweak != nil {
		tweak(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{Server: httptest.NewServer(srv.Handler()), store: st, srv: srv, dir: dir}
	t.Cleanup(func() { ts.Close(); st.Close() })
	if ts.key, err = st.AddOrg(context.Background(), "acme"); err != nil {
		t.Fatal(err)
	}
	return ts
}

func (ts *testServer) client() *fleetapi.Client {
	return &fleetapi.Client{BaseURL: ts.URL, HTTP: ts.Client()}
}

func (ts *testServer) register(t *testing.T, hostname string) fleetapi.RegisterResponse {
	t.Helper()
	r, err := ts.client().Register(context.Background(), ts.key, hostname)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func goodCheckIn(id, hostname string) fleetapi.CheckIn {
	return fleetapi.CheckIn{HostID: id, Hostname: hostname, KernelRelease: "6.1.0-57-amd64", BuildID: "abcd1234",
		Level: 1, AgentVersion: "1.0.0", Channel: "stable", Result: fleetapi.ResultOK, ResultAt: time.Now().Add(-time.Minute)}
}

func post(t *testing.T, ts *testServer, path, auth, body string) (int, string, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, ts.URL+path, strings.NewReader(body))
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func historyLen(t *testing.T, ts *testServer, id string) int {
	h, err := ts.store.History(context.Background(), id, 1000)
	if err != nil {
		t.Fatal(err)
	}
	return len(h)
}

func TestRegisterAndCheckIn(t *testing.T) {
	ts := newTestServer(t, nil)
	reg := ts.register(t, "web1")
	if !strings.HasPrefix(reg.Credential, "lfh_") || reg.Org != "acme" {
		t.Fatalf("registration %+v", reg)
	}
	resp, err := ts.client().CheckIn(context.Background(), reg.Credential, goodCheckIn(reg.HostID, "web1"))
	if err != nil || !resp.Stored || resp.NextCheckIn != "1h0m0s" {
		t.Fatalf("check-in: %+v, %v", resp, err)
	}
	h, err := ts.store.Host(context.Background(), reg.HostID)
	if err != nil || h.Level != 1 || h.KernelRelease != "6.1.0-57-amd64" || h.LastSeen.IsZero() {
		t.Fatalf("host %+v, %v", h, err)
	}
	// Wrong organisation keys and revoked ones are refused.
	if _, err := ts.client().Register(context.Background(), "lfo_nope", "web2"); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("wrong key: %v", err)
	}
	ts.store.RevokeOrg(context.Background(), "acme")
	if _, err := ts.client().Register(context.Background(), ts.key, "web2"); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("revoked key: %v", err)
	}
	// Its hosts keep checking in.
	if _, err := ts.client().CheckIn(context.Background(), reg.Credential, goodCheckIn(reg.HostID, "web1")); err != nil {
		t.Fatal(err)
	}
}

// Every bad request is refused with a clear 4xx, and nothing is stored.
func TestCheckInRefused(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.HostRate, c.HostBurst = rate.Every(time.Hour), 3 })
	reg := ts.register(t, "web1")
	other := ts.register(t, "web2")
	auth := "Bearer " + reg.Credential
	good := func(modify func(m map[string]any)) string {
		b, _ := json.Marshal(goodCheckIn(reg.HostID, "web1"))
		var m map[string]any
		json.Unmarshal(b, &m)
		if modify != nil {
			modify(m)
		}
		b, _ = json.Marshal(m)
		return string(b)
	}
	tests := []struct {
		name string
		auth string
		body string
		code int
		msg  string
	}{
		{"no credential", "", good(nil), 401, "no host credential"},
		{"wrong credential", "Bearer lfh_wrong", good(nil), 401, "wrong credential"},
		{"another host's credential", "Bearer " + other.Credential, good(nil), 401, "wrong credential"},
		{"not bearer", "Basic " + reg.Credential, good(nil), 401, "no host credential"},
		{"malformed", auth, `{"host_id":`, 400, "malformed"},
		{"unknown field", auth, good(func(m map[string]any) { m["root"] = true }), 400, "unknown field"},
		{"oversized", auth, good(func(m map[string]any) { m["error"] = strings.Repeat("x", fleetapi.MaxBodyBytes) }), 413, "larger than 65536"},
		{"build-id traversal", auth, good(func(m map[string]any) { m["build_id"] = "../../../../etc/passwd" }), 400, "build_id"},
		{"release traversal", auth, good(func(m map[string]any) { m["kernel_release"] = "../../x" }), 400, "kernel_release"},
		{"userspace traversal", auth, good(func(m map[string]any) {
			m["userspace"] = []map[string]any{{"build_id": "abcd", "level": 1, "name": "../../../lib/x"}}
		}), 400, "userspace[0].name"},
		{"bad result", auth, good(func(m map[string]any) { m["result"] = "maybe" }), 400, "result"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body, hdr := post(t, ts, fleetapi.CheckInPath, tt.auth, tt.body)
			if code != tt.code || !strings.Contains(body, tt.msg) {
				t.Fatalf("got %d %s; want %d with %q", code, body, tt.code, tt.msg)
			}
			if code == 401 && hdr.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
			var er fleetapi.ErrorResponse
			if json.Unmarshal([]byte(body), &er) != nil || er.Error == "" {
				t.Errorf("error body %q is not {\"error\": ...}", body)
			}
			if n := historyLen(t, ts, reg.HostID); n != 0 {
				t.Fatalf("%d check-ins stored after a refused request", n)
			}
		})
	}
	// Rate limit: burst 3, then 429 with Retry-After, nothing stored.
	for i := 0; i < 3; i++ {
		if code, body, _ := post(t, ts, fleetapi.CheckInPath, auth, good(nil)); code != 200 {
			t.Fatalf("check-in %d: %d %s", i, code, body)
		}
	}
	code, body, hdr := post(t, ts, fleetapi.CheckInPath, auth, good(nil))
	if code != 429 || hdr.Get("Retry-After") == "" || !strings.Contains(body, "too many") {
		t.Fatalf("4th check-in: %d %s %v", code, body, hdr)
	}
	if n := historyLen(t, ts, reg.HostID); n != 3 {
		t.Fatalf("%d check-ins stored, want 3", n)
	}
	// Another host has its own budget.
	if _, err := ts.client().CheckIn(context.Background(), other.Credential, goodCheckIn(other.HostID, "web2")); err != nil {
		t.Fatal(err)
	}
	// The agent-side client reports the limit.
	_, err := ts.client().CheckIn(context.Background(), reg.Credential, goodCheckIn(reg.HostID, "web1"))
	var se *fleetapi.StatusError
	if !asStatus(err, &se) || se.Status != 429 || se.RetryAfter <= 0 {
		t.Fatalf("client error %v", err)
	}
}

func asStatus(err error, se **fleetapi.StatusError) bool {
	for err != nil {
		if e, ok := err.(*fleetapi.StatusError); ok {
			*se = e
			return true
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		err = u.Unwrap()
	}
	return false
}

func TestRegisterRefused(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.RegisterRate, c.RegisterBurst = rate.Every(time.Hour), 3 })
	for _, tt := range []struct {
		body string
		code int
	}{
		{`{"key":"` + ts.key + `","hostname":"../../x"}`, 400},
		{`{"key":"` + ts.key + `","extra":1}`, 400},
		{`not json`, 400},
	} {
		if code, body, _ := post(t, ts, fleetapi.RegisterPath, "", tt.body); code != tt.code {
			t.Errorf("%s: %d %s", tt.body, code, body)
		}
	}
	orgs, _ := ts.store.Orgs(context.Background())
	if orgs[0].Hosts != 0 {
		t.Fatalf("%d hosts registered by refused requests", orgs[0].Hosts)
	}
	// The burst of 3 went to the refused requests: now 429.
	if code, _, hdr := post(t, ts, fleetapi.RegisterPath, "", `{"key":"`+ts.key+`"}`); code != 429 || hdr.Get("Retry-After") == "" {
		t.Fatalf("rate limit: %d", code)
	}
}

func TestRepositoryFiles(t *testing.T) {
	ts := newTestServer(t, nil)
	meta := filepath.Join(ts.dir, "repository", "metadata")
	os.MkdirAll(meta, 0o755)
	os.WriteFile(filepath.Join(meta, "timestamp.json"), []byte(`{"signed":{}}`), 0o644)
	os.WriteFile(filepath.Join(meta, ".secret"), []byte("x"), 0o644)
	for _, tt := range []struct {
		path string
		code int
	}{
		{"/repo/metadata/timestamp.json", 200},
		{"/repo/metadata/nope.json", 404},
		{"/repo/metadata/", 404},
		{"/repo/metadata/.secret", 400},
		{"/repo/%2e%2e/fleet.db", 400},
		{"/repo/metadata/..%2f..%2ffleet.db", 400},
		{"/repo/../fleet.db", 404}, // cleaned by the mux to /fleet.db: not a route
	} {
		req, _ := http.NewRequest("GET", ts.URL+tt.path, nil)
		req.URL.RawPath = tt.path
		req.URL.Path, _ = url.PathUnescape(tt.path)
		resp, err := ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.code && !(tt.code == 404 && resp.StatusCode == 400) {
			t.Errorf("%s: %d %s, want %d", tt.path, resp.StatusCode, b, tt.code)
		}
		if strings.Contains(string(b), "SQLite") {
			t.Errorf("%s leaked the database", tt.path)
		}
	}
}

func TestMetrics(t *testing.T) {
	ts := newTestServer(t, nil)
	reg := ts.register(t, "web1")
	c := goodCheckIn(reg.HostID, "web1")
	c.Result = fleetapi.ResultFailed
	ts.client().CheckIn(context.Background(), reg.Credential, c)
	post(t, ts, fleetapi.CheckInPath, "", "{}")
	resp, err := ts.Client().Get(ts.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`livefix_checkins_total{result="failed"} 1`,
		`livefix_registrations_total 1`,
		`livefix_api_rejected_total{reason="unauthorized"} 1`,
		`livefix_fleet_hosts{state="all"} 1`,
		`livefix_fleet_hosts{state="failed"} 1`,
		`livefix_checkin_batch_size_count 1`,
		`livefix_http_requests_total{code="200",route="/api/v1/checkin"} 1`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// browser is a cookie-keeping HTTP client, as a browser without JavaScript.
type browser struct {
	t  *testing.T
	c  *http.Client
	ts *testServer
}

func newBrowser(t *testing.T, ts *testServer) *browser {
	jar, _ := cookiejar.New(nil)
	c := ts.Client()
	c.Jar = jar
	return &browser{t: t, c: c, ts: ts}
}

func (b *browser) get(path string) (int, string) {
	b.t.Helper()
	resp, err := b.c.Get(b.ts.URL + path)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func (b *browser) post(path string, form url.Values) (int, string) {
	b.t.Helper()
	resp, err := b.c.PostForm(b.ts.URL+path, form)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func csrfOf(t *testing.T, page string) string {
	t.Helper()
	m := csrfRE.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no CSRF token in page:\n%s", page)
	}
	return m[1]
}

func (b *browser) login(user, password string) (int, string) {
	_, page := b.get("/login?next=/fleet")
	return b.post("/login", url.Values{"csrf": {csrfOf(b.t, page)}, "user": {user}, "password": {password}, "next": {"/fleet"}})
}

func TestDashboard(t *testing.T) {
	ts := newTestServer(t, nil)
	ctx := context.Background()
	ts.store.AddUser(ctx, "alice", "alice password", fleetdb.RoleAdmin, false)
	ts.store.AddUser(ctx, "victor", "victor password", fleetdb.RoleViewer, false)
	now := time.Now()
	ts.store.ReplaceLevels(ctx, []fleetdb.Level{
		{BuildID: "abcd1234", Level: 1, KernelRelease: "6.1.0-57-amd64", Channel: "stable", PublishedAt: now, CVEs: []string{"CVE-2024-1086"}},
		{BuildID: "abcd1234", Level: 2, KernelRelease: "6.1.0-57-amd64", Channel: "test", PublishedAt: now, Summary: "fix <b>x</b>"},
	})
	for i, lv := range []int64{1, 0, 1} {
		reg := ts.register(t, fmt.Sprintf("web%d", i))
		c := goodCheckIn(reg.HostID, fmt.Sprintf("web%d", i))
		c.Level = lv
		if i == 1 {
			c.Result, c.Error = fleetapi.ResultFailed, "transition stalled <script>"
		}
		if i == 2 {
			c.Channel = "test"
		}
		if _, err := ts.client().CheckIn(ctx, reg.Credential, c); err != nil {
			t.Fatal(err)
		}
	}

	anon := newBrowser(t, ts)
	if code, _ := anon.get("/fleet"); code != 200 { // redirected to the login page
		t.Fatalf("anonymous /fleet: %d", code)
	}
	if _, page := anon.get("/fleet"); !strings.Contains(page, `action="/login"`) {
		t.Fatal("anonymous /fleet is not the login page")
	}
	if code, _ := anon.post("/login", url.Values{"user": {"alice"}, "password": {"alice password"}}); code != 403 {
		t.Fatalf("login without CSRF: %d", code)
	}
	if code, page := anon.login("alice", "wrong password"); code != 401 || !strings.Contains(page, "wrong password") {
		t.Fatalf("wrong password: %d", code)
	}

	alice := newBrowser(t, ts)
	if code, page := alice.login("alice", "alice password"); code != 200 || !strings.Contains(page, "3 hosts") {
		t.Fatalf("login: %d\n%s", code, page)
	}
	for _, tt := range []struct {
		path      string
		want, not []string
	}{
		{"/fleet?failed=1", []string{"web1", "1 failed"}, []string{">web0<", ">web2<"}},
		{"/fleet?behind=1", []string{">web1<", ">web2<"}, []string{">web0<"}},
		{"/fleet?channel=test", []string{">web2<"}, []string{">web0<", ">web1<"}},
		{"/fleet?kernel=6.1.0-57-amd64", []string{">web0<", ">web1<", ">web2<"}, nil},
		{"/fleet?q=web0", []string{">web0<"}, []string{">web1<"}},
		{"/kernels", []string{"6.1.0-57-amd64", "abcd1234"}, nil},
		{"/kernels/6.1.0-57-amd64", []string{"CVE-2024-1086", "fix &lt;b&gt;x&lt;/b&gt;"}, []string{"<b>x</b>"}},
		{"/cve?id=cve-2024-1086", []string{"Protected: 2", "Exposed (fix published, not applied): 1"}, nil},
		{"/levels", []string{"Promote to stable", "no patch repository"}, nil},
	} {
		code, page := alice.get(tt.path)
		if code != 200 {
			t.Errorf("%s: %d", tt.path, code)
		}
		for _, w := range tt.want {
			if !strings.Contains(page, w) {
				t.Errorf("%s lacks %q", tt.path, w)
			}
		}
		for _, w := range tt.not {
			if strings.Contains(page, w) {
				t.Errorf("%s has %q", tt.path, w)
			}
		}
	}
	// The list's total comes from the cached summary for a single state;
	// a host that failed since it was counted is listed and counted.
	if _, p := alice.get("/fleet?failed=1"); !strings.Contains(p, "1–1 of 1 hosts") {
		t.Errorf("/fleet?failed=1 does not count 1 host")
	}
	late := ts.register(t, "web3")
	lc := goodCheckIn(late.HostID, "web3")
	lc.Result = fleetapi.ResultFailed
	if _, err := ts.client().CheckIn(ctx, late.Credential, lc); err != nil {
		t.Fatal(err)
	}
	if _, p := alice.get("/fleet?failed=1"); !strings.Contains(p, ">web3<") || !strings.Contains(p, "1–2 of 2 hosts") {
		t.Errorf("/fleet?failed=1 after a new failure within the summary's lifetime: want web3 listed and 2 hosts counted")
	}
	page, _ := ts.store.Hosts(ctx, fleetdb.Filter{Failed: true})
	failed := page.Hosts[0]
	code, hp := alice.get("/hosts/" + failed.ID)
	if code != 200 || !strings.Contains(hp, "transition stalled &lt;script&gt;") || strings.Contains(hp, "<script>") {
		t.Fatalf("host page %d: error not shown escaped", code)
	}
	if code, _ := alice.get("/hosts/nope"); code != 404 {
		t.Fatalf("unknown host: %d", code)
	}
	if code, _ := alice.get("/kernels/..%2f..%2fetc"); code != 400 {
		t.Fatalf("traversal in kernel release: %d", code)
	}
	if code, _ := alice.get("/cve?id=../../x"); code != 400 {
		t.Fatalf("bad CVE id: %d", code)
	}

	// Forms need the session's CSRF token.
	_, lp := alice.get("/levels")
	tok := csrfOf(t, lp)
	form := url.Values{"build_id": {"abcd1234"}, "level": {"2"}, "channel": {"stable"}}
	if code, _ := alice.post("/levels/promote", form); code != 403 {
		t.Fatalf("promote without CSRF: %d", code)
	}
	form.Set("csrf", "wrong")
	if code, _ := alice.post("/levels/promote", form); code != 403 {
		t.Fatalf("promote with a wrong CSRF token: %d", code)
	}
	form.Set("csrf", tok)
	form.Set("build_id", "../../etc")
	code, res := alice.post("/levels/promote", form)
	if code != 200 || !strings.Contains(res, "invalid build-id") {
		t.Fatalf("promote with a traversal build-id: %d", code)
	}
	form.Set("build_id", "abcd1234")
	code, res = alice.post("/levels/promote", form)
	if code != 200 || !strings.Contains(res, "no patch repository") {
		t.Fatalf("promote without a repository: %d %s", code, res)
	}
	log, _ := ts.store.AuditLog(ctx, 10)
	if len(log) < 2 || log[0].Action != "promote" || log[0].OK || log[0].User != "alice" || log[0].Target != "abcd1234/2" {
		t.Fatalf("audit log %+v", log)
	}
	if _, ap := alice.get("/audit"); !strings.Contains(ap, "promote") || !strings.Contains(ap, "login") {
		t.Fatal("audit page lacks the actions")
	}

	// A viewer reads but may not change anything.
	victor := newBrowser(t, ts)
	victor.login("victor", "victor password")
	_, vp := victor.get("/levels")
	if strings.Contains(vp, "Promote to stable") {
		t.Fatal("viewer sees admin actions")
	}
	form.Set("csrf", csrfOf(t, vp))
	if code, _ := victor.post("/levels/promote", form); code != 403 {
		t.Fatalf("viewer promote: %d", code)
	}
	// Logout ends the session.
	victor.post("/logout", url.Values{"csrf": {csrfOf(t, vp)}})
	if _, p := victor.get("/fleet"); !strings.Contains(p, `action="/login"`) {
		t.Fatal("still logged in after logout")
	}
	// Open redirects are refused.
	if localPath("//evil.example/x") != "/fleet" || localPath("https://evil/") != "/fleet" || localPath("/hosts/x") != "/hosts/x" {
		t.Fatal("localPath lets a redirect leave the server")
	}
}
