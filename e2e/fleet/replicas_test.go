package fleet

import (
	"context"
	"fmt"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/livefix/livefix/fleetapi"
	"github.com/livefix/livefix/fleetdb"
	"github.com/livefix/livefix/internal/patchtest"
	"github.com/livefix/livefix/internal/pgtest"
)

const buildID = "0123456789abcdef0123456789abcdef01234567"

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// publishTwo sets up a repository in data with level 1 on stable and
// level 2 on test for buildID, through the CLI.
func publishTwo(t *testing.T, data string) {
	run(t, "", "livefix-server", "keys", "init", "--data", data)
	src := t.TempDir()
	for lv, ch := range []string{"", "stable", "test"} {
		if lv == 0 {
			continue
		}
		ko, err := patchtest.KernelPatch{Name: fmt.Sprintf("lp%d", lv), Level: lv, BuildID: buildID,
			CVEs: []string{fmt.Sprintf("CVE-2026-%d", 1000+lv)}}.Write(src)
		if err != nil {
			t.Fatal(err)
		}
		run(t, "", "livefix-server", "publish", ko, "--channel", ch, "--data", data)
	}
}

// login logs in through the dashboard form and returns the client.
func login(t *testing.T, base, user, password string) *http.Client {
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	page := get(t, c, base+"/login")
	m := csrfRE.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("login page without CSRF token:\n%s", page)
	}
	code, p := postForm(t, c, base+"/login", url.Values{"csrf": {m[1]}, "user": {user}, "password": {password}, "next": {"/fleet"}})
	if code != 200 || !strings.Contains(p, "Fleet") {
		t.Fatalf("login: %d\n%s", code, p)
	}
	return c
}

// Two serve processes share one PostgreSQL database and one repository
// directory, as replicas behind a load balancer: a host registers on one
// and checks in on the other, an operator's session works on both, and a
// promotion made through one is seen by the other.
func TestReplicasSharePostgres(t *testing.T) {
	dsn := pgtest.Start(t).NewDatabase(t)
	data := t.TempDir()
	publishTwo(t, data)
	key := orgKey(t, run(t, "", "livefix-server", "org", "add", "acme", "--data", data, "--db", dsn))
	run(t, "alice's password\n", "livefix-server", "user", "add", "alice", "--role", "admin", "--password-file", "-", "--data", data, "--db", dsn)
	if out := run(t, "", "livefix-server", "org", "list", "--data", data, "--db", dsn); !strings.Contains(out, "acme") {
		t.Fatalf("org list: %s", out)
	}
	a := serve(t, "--data", data, "--db", dsn, "--sync-interval", "1s")
	b := serve(t, "--data", data, "--db", dsn, "--sync-interval", "1s")
	ctx := context.Background()

	// Hosts register on one replica and check in on both, concurrently.
	type host struct{ id, cred string }
	var hosts []host
	for i := 0; i < 10; i++ {
		r, err := (&fleetapi.Client{BaseURL: []string{a, b}[i%2]}).Register(ctx, key, fmt.Sprintf("web%02d", i))
		if err != nil {
			t.Fatal(err)
		}
		hosts = append(hosts, host{r.HostID, r.Credential})
	}
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for i := 0; i < 10; i++ {
		for j := 0; j < 5; j++ {
			wg.Add(1)
			go func(i, j int) {
				defer wg.Done()
				c := fleetapi.CheckIn{HostID: hosts[i].id, Hostname: fmt.Sprintf("web%02d", i), KernelRelease: patchtest.Release,
					BuildID: buildID, Level: 1, AgentVersion: "1.0.0", Channel: "stable", Result: fleetapi.ResultOK, ResultAt: time.Now()}
				if i == 3 {
					c.Result, c.Error = fleetapi.ResultFailed, "load lp1.ko: operation not permitted"
				}
				if _, err := (&fleetapi.Client{BaseURL: []string{a, b}[(i+j)%2]}).CheckIn(ctx, hosts[i].cred, c); err != nil {
					errs <- err
				}
			}(i, j)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	st, err := fleetdb.Open(ctx, dsn, "")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, h := range hosts {
		if hist, err := st.History(ctx, h.id, 100); err != nil || len(hist) != 5 {
			t.Fatalf("host %s: %d check-ins stored, want 5 (%v)", h.id, len(hist), err)
		}
	}

	// One session, both replicas (the load balancer needs no stickiness).
	c := login(t, a, "alice", "alice's password")
	fleet := get(t, c, b+"/fleet?failed=1")
	if !strings.Contains(fleet, ">web03<") || strings.Contains(fleet, ">web04<") {
		t.Fatalf("replica b's fleet page (failed) does not list exactly web03:\n%s", fleet)
	}
	if p := get(t, c, b+"/fleet?behind=1"); !strings.Contains(p, "No host matches") {
		t.Fatalf("stable hosts at level 1 shown behind before the promotion:\n%s", p)
	}
	// Promote level 2 through replica b; replica a sees it.
	levels := get(t, c, b+"/levels")
	tok := csrfRE.FindStringSubmatch(levels)[1]
	if _, p := postForm(t, c, b+"/levels/promote", url.Values{"csrf": {tok}, "build_id": {buildID}, "level": {"2"}, "channel": {"stable"}}); !strings.Contains(p, "promote "+buildID+"/2: done") {
		t.Fatalf("promote through b:\n%s", p)
	}
	if out := run(t, "", "livefix-server", "list", "--data", data, "--json"); !strings.Contains(out, `"level": 2`) && !strings.Contains(out, `"level":2`) {
		t.Fatalf("list after promote: %s", out)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		p := get(t, c, a+"/fleet?behind=1")
		if strings.Contains(p, "10 of 10 hosts") || strings.Contains(p, "1–10 of 10 hosts") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica a does not show the 10 hosts behind level 2 after the promotion on b:\n%s", p)
		}
		time.Sleep(500 * time.Millisecond)
	}
	audit := get(t, c, a+"/audit")
	if !strings.Contains(audit, "promote") || !strings.Contains(audit, "alice") {
		t.Fatalf("audit log on a lacks the promotion on b:\n%s", audit)
	}
	// Both serve the one repository.
	ta := get(t, nil, a+"/repo/metadata/timestamp.json")
	tb := get(t, nil, b+"/repo/metadata/timestamp.json")
	if ta != tb || !strings.Contains(ta, "timestamp") {
		t.Fatalf("replicas serve different timestamps:\n%s\n%s", ta, tb)
	}
	// Logging out on one ends the session on both.
	tok = csrfRE.FindStringSubmatch(get(t, c, a+"/fleet"))[1]
	postForm(t, c, a+"/logout", url.Values{"csrf": {tok}})
	if p := get(t, c, b+"/fleet"); !strings.Contains(p, `action="/login"`) {
		t.Fatal("session still valid on b after logout on a")
	}
}
