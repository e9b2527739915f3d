package fleetserver

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/livefix/livefix/fleetapi"
	"github.com/livefix/livefix/fleetdb"
	"github.com/livefix/livefix/internal/pgtest"
	"golang.org/x/time/rate"
)

// benchBackend opens a fleet store on SQLite or a throwaway PostgreSQL
// and returns it with a raw connection for seeding.
func benchBackend(b *testing.B, backend string) (*fleetdb.Store, *sql.DB, string) {
	b.Helper()
	dir := b.TempDir()
	dsn := ""
	if backend == "postgres" {
		dsn = pgtest.StartDurable(b).NewDatabase(b)
	}
	st, err := fleetdb.Open(context.Background(), dsn, dir)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	var raw *sql.DB
	if dsn == "" {
		raw, err = sql.Open("sqlite", "file:"+filepath.Join(dir, fleetdb.DBFile)+"?_pragma=busy_timeout(10000)&_pragma=cache_size(-32768)")
	} else {
		raw, err = sql.Open("pgx", dsn)
	}
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { raw.Close() })
	return st, raw, dir
}

func benchCred(i int) string { return fmt.Sprintf("lfh_bench%08d", i) }
func benchID(i int) string   { return fmt.Sprintf("hbench%08d", i) }

var benchReleases = []string{"6.1.0-25-amd64", "6.1.0-26-amd64", "6.1.0-27-amd64", "6.1.0-28-amd64", "6.1.0-29-amd64"}

// seed inserts n hosts (and three published levels per kernel) in bulk.
func seed(b *testing.B, st *fleetdb.Store, raw *sql.DB, postgres bool, n int) {
	b.Helper()
	ctx := context.Background()
	now := time.Now()
	ph := func(k int) string {
		if postgres {
			return "$" + strconv.Itoa(k)
		}
		return "?"
	}
	if _, err := raw.ExecContext(ctx, `INSERT INTO orgs (name, key_hash, created_at) VALUES (`+ph(1)+`, `+ph(2)+`, `+ph(3)+`)`,
		"bench", "x", now.UnixMilli()); err != nil {
		b.Fatal(err)
	}
	tx, err := raw.BeginTx(ctx, nil)
	if err != nil {
		b.Fatal(err)
	}
	const rows = 500
	for start := 0; start < n; start += rows {
		var q strings.Builder
		q.WriteString(`INSERT INTO hosts (id, org, cred_hash, registered_at, hostname, kernel_release, build_id, level, channel,
			agent_version, last_result, last_result_at, last_seen) VALUES `)
		var args []any
		for i := start; i < min(start+rows, n); i++ {
			if i > start {
				q.WriteString(", ")
			}
			q.WriteString("(")
			for k := 0; k < 13; k++ {
				if k > 0 {
					q.WriteString(", ")
				}
				q.WriteString(ph(len(args) + k + 1))
			}
			q.WriteString(")")
			sum := sha256.Sum256([]byte(benchCred(i)))
			r := i % len(benchReleases)
			ch, result := "stable", "ok"
			if i%10 == 0 {
				ch = "test"
			}
			if i%50 == 0 {
				result = "failed"
			}
			seen := now.Add(-time.Duration(i%2880) * time.Minute)
			args = append(args, benchID(i), "bench", hex.EncodeToString(sum[:]), now.UnixMilli(), fmt.Sprintf("host%06d", i),
				benchReleases[r], fmt.Sprintf("%040x", r+1), i%4, ch, "1.0.0", result, seen.UnixMilli(), seen.UnixMilli())
		}
		if _, err := tx.ExecContext(ctx, q.String(), args...); err != nil {
			b.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
	// Three levels per kernel, the third on test only; ReplaceLevels sets
	// every host's newest level.
	var levels []fleetdb.Level
	for r, rel := range benchReleases {
		for lv := 1; lv <= 3; lv++ {
			ch := "stable"
			if lv == 3 {
				ch = "test"
			}
			levels = append(levels, fleetdb.Level{BuildID: fmt.Sprintf("%040x", r+1), Level: int64(lv), KernelRelease: rel,
				Channel: ch, PublishedAt: now, CVEs: []string{fmt.Sprintf("CVE-2026-%d", 1000+lv)}})
		}
	}
	if err := st.ReplaceLevels(ctx, levels); err != nil {
		b.Fatal(err)
	}
	// Planner statistics, as autovacuum (PostgreSQL) would have them.
	if _, err := raw.ExecContext(ctx, "ANALYZE"); err != nil {
		b.Fatal(err)
	}
}

func benchServer(b *testing.B, st *fleetdb.Store, dir string) *httptest.Server {
	srv, err := New(Config{Store: st, DataDir: dir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		HostRate: rate.Inf, HostBurst: 1})
	if err != nil {
		b.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	b.Cleanup(ts.Close)
	return ts
}

func benchClient() *http.Client {
	return &http.Client{Transport: &http.Transport{MaxIdleConns: 256, MaxIdleConnsPerHost: 256}}
}

// BenchmarkCheckIns is the load generator: 512 concurrent clients post
// check-ins of distinct hosts over loopback HTTP; each op is one check-in
// acknowledged by the server (so stored: the server answers after the
// commit). Baseline: the same clients and payload against a handler that
// only decodes the JSON (the HTTP ceiling of this machine).
func BenchmarkCheckIns(b *testing.B) {
	const hosts = 20000
	body := func(i int) []byte {
		c := fleetapi.CheckIn{HostID: benchID(i), Hostname: fmt.Sprintf("host%06d", i), KernelRelease: benchReleases[0],
			BuildID: fmt.Sprintf("%040x", 1), Level: 2, AgentVersion: "1.0.0", Channel: "stable", Result: "ok", ResultAt: time.Now()}
		data, _ := json.Marshal(c)
		return data
	}
	run := func(b *testing.B, url string) {
		hc := benchClient()
		var next atomic.Int64
		b.SetParallelism(256)
		b.ResetTimer()
		start := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				i := int(next.Add(1)) % hosts
				req, _ := http.NewRequest("POST", url, bytes.NewReader(body(i)))
				req.Header.Set("Authorization", "Bearer "+benchCred(i))
				resp, err := hc.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Fatalf("check-in: %s", resp.Status)
				}
			}
		})
		b.StopTimer()
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "checkins/s")
	}
	b.Run("baseline-decode-only", func(b *testing.B) {
		ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var c fleetapi.CheckIn
			if err := fleetapi.Decode(r.Body, &c); err != nil {
				http.Error(w, err.Error(), 400)
				return
			}
			writeJSON(w, 200, fleetapi.CheckInResponse{Stored: true})
		}))
		defer ts.Close()
		run(b, ts.URL)
	})
	for _, backend := range []string{"sqlite", "postgres"} {
		b.Run(backend, func(b *testing.B) {
			st, raw, dir := benchBackend(b, backend)
			seed(b, st, raw, backend == "postgres", hosts)
			ts := benchServer(b, st, dir)
			run(b, ts.URL+fleetapi.CheckInPath)
			// Every acknowledged check-in is in the database.
			var n int
			if err := raw.QueryRow(`SELECT COUNT(*) FROM checkins`).Scan(&n); err != nil {
				b.Fatal(err)
			}
			if n < b.N {
				b.Fatalf("%d check-ins acknowledged, %d stored", b.N, n)
			}
		})
	}
}

// BenchmarkFleetPage renders the dashboard's fleet page (first page, and
// filtered) for a logged-in operator with 100,000 hosts in the database.
// Baseline: the login page (templates and HTTP, no fleet query).
func BenchmarkFleetPage(b *testing.B) {
	const hosts = 100000
	for _, backend := range []string{"sqlite", "postgres"} {
		b.Run(backend, func(b *testing.B) {
			st, raw, dir := benchBackend(b, backend)
			seed(b, st, raw, backend == "postgres", hosts)
			if err := st.AddUser(context.Background(), "bench", "bench password", fleetdb.RoleViewer, false); err != nil {
				b.Fatal(err)
			}
			ts := benchServer(b, st, dir)
			jar, _ := cookiejar.New(nil)
			hc := &http.Client{Jar: jar}
			resp, err := hc.Get(ts.URL + "/login")
			if err != nil {
				b.Fatal(err)
			}
			page, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			tok := csrfRE.FindSubmatch(page)
			resp, err = hc.PostForm(ts.URL+"/login", url.Values{"csrf": {string(tok[1])}, "user": {"bench"}, "password": {"bench password"}})
			if err != nil || resp.StatusCode != 200 {
				b.Fatalf("login: %v %v", resp, err)
			}
			resp.Body.Close()
			for _, path := range []string{"/login", "/fleet", "/fleet?behind=1", "/fleet?failed=1&kernel=6.1.0-27-amd64", "/fleet?unseen=1&channel=test&page=3"} {
				b.Run(strings.NewReplacer("/", "", "?", " ", "&", " ").Replace(path), func(b *testing.B) {
					for i := 0; i < b.N; i++ {
						resp, err := hc.Get(ts.URL + path)
						if err != nil {
							b.Fatal(err)
						}
						body, _ := io.ReadAll(resp.Body)
						resp.Body.Close()
						if resp.StatusCode != 200 || (path != "/login" && !bytes.Contains(body, []byte("100000 hosts"))) {
							b.Fatalf("%s: %s", path, resp.Status)
						}
					}
				})
			}
		})
	}
}
