package fleetserver

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
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
	st, raw, dir, _ := benchBackendCluster(b, backend)
	return st, raw, dir
}

// benchBackendCluster is benchBackend that also returns the PostgreSQL
// cluster (nil for SQLite).
func benchBackendCluster(b *testing.B, backend string) (*fleetdb.Store, *sql.DB, string, *pgtest.Cluster) {
	b.Helper()
	dir := b.TempDir()
	dsn := ""
	var cluster *pgtest.Cluster
	if backend == "postgres" {
		cluster = pgtest.StartDurable(b)
		dsn = cluster.NewDatabase(b)
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
	return st, raw, dir, cluster
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

// loadgen is the benchmarks' load generator, kept lean so that it takes
// little of the machine from the server it measures: conns keep-alive
// connections, each sending one prebuilt request at a time and reading
// the answer with a minimal HTTP/1.1 parser. It sends requests 0..n-1
// (req(i)) and fails the benchmark on any answer but 200 whose body has
// "stored":true. It returns the wall time and the process's CPU time
// (server and generator: they share the process).
func loadgen(b *testing.B, addr string, conns, n int, req func(i int) []byte) (wall, cpu time.Duration) {
	b.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, conns)
	cpu0 := processCPU()
	start := time.Now()
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				errc <- err
				return
			}
			defer c.Close()
			br := bufio.NewReaderSize(c, 4096)
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if _, err := c.Write(req(i)); err != nil {
					errc <- err
					return
				}
				code, body, err := readResponse(br)
				if err == nil && (code != 200 || !bytes.Contains(body, []byte(`"stored":true`))) {
					err = fmt.Errorf("check-in %d: %d %s", i, code, body)
				}
				if err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	wall, cpu = time.Since(start), processCPU()-cpu0
	close(errc)
	if err := <-errc; err != nil {
		b.Fatal(err)
	}
	return wall, cpu
}

// readResponse reads one HTTP/1.1 response with a Content-Length.
func readResponse(br *bufio.Reader) (int, []byte, error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		return 0, nil, err
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.1 ")) {
		return 0, nil, fmt.Errorf("bad status line %q", line)
	}
	code, err := strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, nil, fmt.Errorf("bad status line %q", line)
	}
	length := -1
	for {
		line, err = br.ReadSlice('\n')
		if err != nil {
			return 0, nil, err
		}
		if len(line) <= 2 {
			break
		}
		if k, v, ok := bytes.Cut(line, []byte(":")); ok && bytes.EqualFold(k, []byte("Content-Length")) {
			length, _ = strconv.Atoi(string(bytes.TrimSpace(v)))
		}
	}
	if length < 0 {
		return 0, nil, errors.New("response without Content-Length")
	}
	body := make([]byte, length)
	_, err = io.ReadFull(br, body)
	return code, body, err
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkCheckIns measures persisted check-ins per second end to end:
// the lean load generator posts check-ins of 20,000 distinct hosts over
// 256 keep-alive loopback connections to the real server handler (nine
// in ten repeat the host's state, one in ten reports a new level); each
// op is one check-in answered 200 by the server, which answers only
// after the check-in's credential was checked and its transaction
// committed (SQLite synchronous=FULL; PostgreSQL with fsync on). After
// the run every acknowledged check-in must be in the database.
// Baseline: the same generator and requests against a handler that only
// decodes and validates the JSON (this machine's HTTP ceiling).
// Metrics: checkins/s; cpu-us/checkin, the CPU time of the whole test
// process (server, database driver and generator) per check-in; and for
// PostgreSQL pg-cpu-us/checkin, its server processes' CPU time per
// check-in. On a machine of C cores the sum bounds the rate at
// C/(sum) check-ins per second whatever else runs.
func BenchmarkCheckIns(b *testing.B) {
	const hosts, conns = 20000, 256
	reqs := make([][]byte, hosts)
	for i := range reqs {
		// A host checks in with the state seed gave it (as most hourly
		// check-ins repeat the last one), except every tenth, which
		// reports a new level (as after an update).
		r := i % len(benchReleases)
		ch, result := "stable", "ok"
		if i%10 == 0 {
			ch = "test"
		}
		if i%50 == 0 {
			result = "failed"
		}
		level := int64(i % 4)
		if i%10 == 5 {
			level++
		}
		c := fleetapi.CheckIn{HostID: benchID(i), Hostname: fmt.Sprintf("host%06d", i), KernelRelease: benchReleases[r],
			BuildID: fmt.Sprintf("%040x", r+1), Level: level, AgentVersion: "1.0.0", Channel: ch, Result: result, ResultAt: time.Now()}
		body, _ := json.Marshal(c)
		reqs[i] = fmt.Appendf(nil, "POST %s HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
			fleetapi.CheckInPath, benchCred(i), len(body), body)
	}
	run := func(b *testing.B, ts *httptest.Server, cluster *pgtest.Cluster) {
		var pg0 time.Duration
		if cluster != nil {
			pg0, _ = cluster.CPU()
		}
		b.ResetTimer()
		wall, cpu := loadgen(b, ts.Listener.Addr().String(), conns, b.N, func(i int) []byte { return reqs[i%hosts] })
		b.StopTimer()
		b.ReportMetric(float64(b.N)/wall.Seconds(), "checkins/s")
		b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-us/checkin")
		if cluster != nil {
			pg1, err := cluster.CPU()
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64((pg1-pg0).Microseconds())/float64(b.N), "pg-cpu-us/checkin")
		}
	}
	b.Run("baseline-decode-only", func(b *testing.B) {
		ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var c fleetapi.CheckIn
			if err := fleetapi.Decode(r.Body, &c); err != nil {
				http.Error(w, err.Error(), 400)
				return
			}
			if err := c.Validate(time.Now()); err != nil {
				http.Error(w, err.Error(), 400)
				return
			}
			writeJSON(w, 200, fleetapi.CheckInResponse{Stored: true})
		}))
		defer ts.Close()
		run(b, ts, nil)
	})
	for _, backend := range []string{"sqlite", "postgres"} {
		b.Run(backend, func(b *testing.B) {
			st, raw, dir, cluster := benchBackendCluster(b, backend)
			seed(b, st, raw, backend == "postgres", hosts)
			ts := benchServer(b, st, dir)
			run(b, ts, cluster)
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
