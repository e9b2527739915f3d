package fleetdb

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/livefix/livefix/internal/pgtest"
)

// TestStore runs every store case against SQLite and a real PostgreSQL.
func TestStore(t *testing.T) {
	cases := []struct {
		name string
		fn   func(t *testing.T, s *Store)
	}{
		{"orgs", testOrgs},
		{"register and authenticate", testRegister},
		{"check-ins", testCheckIns},
		{"filters", testFilters},
		{"kernels and CVEs", testKernelsCVE},
		{"users and sessions", testUsers},
		{"audit", testAudit},
		{"concurrent check-ins", testConcurrentCheckIns},
		{"authenticated check-ins", testCheckInAs},
	}
	backends := []struct {
		name string
		open func(t *testing.T) *Store
	}{
		{"sqlite", func(t *testing.T) *Store { return openTest(t, "", t.TempDir()) }},
	}
	var cluster *pgtest.Cluster
	backends = append(backends, struct {
		name string
		open func(t *testing.T) *Store
	}{"postgres", func(t *testing.T) *Store { return openTest(t, cluster.NewDatabase(t), "") }})
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			if b.name == "postgres" {
				cluster = pgtest.Start(t)
			}
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) { c.fn(t, b.open(t)) })
			}
		})
	}
}

func openTest(t *testing.T, dsn, dir string) *Store {
	t.Helper()
	s, err := Open(context.Background(), dsn, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestOpenTwiceMigratesOnce(t *testing.T) {
	dir := t.TempDir()
	for i := 0; i < 2; i++ {
		s := openTest(t, "", dir)
		v, err := s.SchemaVersion(context.Background())
		if err != nil || v != 3 {
			t.Fatalf("schema version %d, %v; want 3", v, err)
		}
		s.Close()
	}
	if _, err := filepath.Glob(filepath.Join(dir, DBFile)); err != nil {
		t.Fatal(err)
	}
}

func TestOpenBadDSN(t *testing.T) {
	if _, err := Open(context.Background(), "mysql://x:secret@h/db", ""); err == nil || !contains(err.Error(), "postgres://") || contains(err.Error(), "secret") {
		t.Fatalf("err = %v; want a message naming postgres:// without the password", err)
	}
}

func contains(s, sub string) bool {
	return len(sub) == 0 || (len(s) >= len(sub) && indexOf(s, sub) >= 0)
}
func indexOf(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return i
		}
	}
	return -1
}

func testOrgs(t *testing.T, s *Store) {
	ctx := context.Background()
	key, err := s.AddOrg(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if len(key) < 40 {
		t.Fatalf("short key %q", key)
	}
	if _, err := s.AddOrg(ctx, "acme"); !errors.Is(err, ErrExists) {
		t.Fatalf("second add: %v, want ErrExists", err)
	}
	for _, bad := range []string{"", "../x", "A", "a b", "a/b"} {
		if _, err := s.AddOrg(ctx, bad); !errors.Is(err, ErrBadName) {
			t.Errorf("AddOrg(%q) = %v, want ErrBadName", bad, err)
		}
	}
	var stored string
	s.queryRow(ctx, `SELECT key_hash FROM orgs WHERE name = ?`, "acme").Scan(&stored)
	if stored == key || stored != digest(key) {
		t.Fatalf("stored key %q: want the SHA-256 digest only", stored)
	}
	if err := s.RevokeOrg(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeOrg(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("revoke unknown: %v", err)
	}
	orgs, err := s.Orgs(ctx)
	if err != nil || len(orgs) != 1 || orgs[0].RevokedAt.IsZero() {
		t.Fatalf("orgs = %+v, %v", orgs, err)
	}
	if _, _, _, err := s.Register(ctx, key, "h1"); !errors.Is(err, ErrBadKey) {
		t.Fatalf("register with a revoked key: %v", err)
	}
}

func register(t *testing.T, s *Store, n int) (ids, creds []string) {
	t.Helper()
	ctx := context.Background()
	key, err := s.AddOrg(ctx, fmt.Sprintf("org%d", time.Now().UnixNano()%1e9))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		id, cred, _, err := s.Register(ctx, key, fmt.Sprintf("host%03d", i))
		if err != nil {
			t.Fatal(err)
		}
		ids, creds = append(ids, id), append(creds, cred)
	}
	return ids, creds
}

func testRegister(t *testing.T, s *Store) {
	ctx := context.Background()
	ids, creds := register(t, s, 2)
	if ids[0] == ids[1] || creds[0] == creds[1] {
		t.Fatal("two hosts share an id or credential")
	}
	if err := s.Authenticate(ctx, ids[0], creds[0]); err != nil {
		t.Fatal(err)
	}
	for _, tc := range [][2]string{{ids[0], creds[1]}, {ids[0], ""}, {"nope", creds[0]}} {
		if err := s.Authenticate(ctx, tc[0], tc[1]); !errors.Is(err, ErrBadCredential) {
			t.Errorf("Authenticate(%q, %q) = %v", tc[0], tc[1], err)
		}
	}
	if _, _, _, err := s.Register(ctx, "lfo_wrong", "x"); !errors.Is(err, ErrBadKey) {
		t.Fatalf("wrong key: %v", err)
	}
}

func checkin(id string, at time.Time, level int64, result string) CheckIn {
	return CheckIn{HostID: id, At: at, Hostname: "h-" + id, KernelRelease: "6.1.0-57-amd64", BuildID: "abcd",
		Level: level, Channel: "stable", AgentVersion: "1.0", Result: result, ResultAt: at,
		Userspace: []UserPatch{{BuildID: "beef", Level: 1, Name: "libc"}}}
}

func testCheckIns(t *testing.T, s *Store) {
	ctx := context.Background()
	ids, _ := register(t, s, 1)
	t0 := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	for i, c := range []CheckIn{checkin(ids[0], t0, 1, ResultOK), checkin(ids[0], t0.Add(time.Minute), 2, ResultFailed)} {
		c.Error = fmt.Sprintf("e%d", i)
		if err := s.CheckIn(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	// An older check-in arriving late (another replica) is history only.
	if err := s.CheckIn(ctx, checkin(ids[0], t0.Add(-time.Minute), 0, ResultOK)); err != nil {
		t.Fatal(err)
	}
	h, err := s.Host(ctx, ids[0])
	if err != nil {
		t.Fatal(err)
	}
	if h.Level != 2 || h.LastResult != ResultFailed || h.LastError != "e1" || !h.LastSeen.Equal(t0.Add(time.Minute)) ||
		len(h.Userspace) != 1 || h.Userspace[0].Name != "libc" || h.KernelRelease != "6.1.0-57-amd64" {
		t.Fatalf("host = %+v", h)
	}
	// The same state again (the common case, which takes the update
	// that leaves the indexed columns alone): the rest still changes.
	same := checkin(ids[0], t0.Add(2*time.Minute), 2, ResultFailed)
	same.Error, same.AgentVersion = "e2", "1.1"
	if err := s.CheckIn(ctx, same); err != nil {
		t.Fatal(err)
	}
	if h, err = s.Host(ctx, ids[0]); err != nil || h.Level != 2 || h.LastError != "e2" || h.AgentVersion != "1.1" ||
		!h.LastSeen.Equal(t0.Add(2*time.Minute)) || !h.LastResultAt.Equal(t0.Add(2*time.Minute)) {
		t.Fatalf("host after the same state again = %+v, %v", h, err)
	}
	hist, err := s.History(ctx, ids[0], 10)
	if err != nil || len(hist) != 4 || hist[1].Level != 2 || hist[3].Level != 0 {
		t.Fatalf("history = %+v, %v", hist, err)
	}
	if _, err := s.Host(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown host: %v", err)
	}
	n, err := s.PruneHistory(ctx, t0.Add(30*time.Second))
	if err != nil || n != 2 {
		t.Fatalf("pruned %d, %v; want 2", n, err)
	}
}

func testFilters(t *testing.T, s *Store) {
	ctx := context.Background()
	ids, _ := register(t, s, 6)
	now := time.Now()
	if err := s.ReplaceLevels(ctx, []Level{
		{BuildID: "abcd", Level: 1, Channel: "stable", PublishedAt: now},
		{BuildID: "abcd", Level: 2, Channel: "stable", PublishedAt: now},
		{BuildID: "abcd", Level: 3, Channel: "test", PublishedAt: now},
		{BuildID: "abcd", Level: 4, Channel: "stable", PublishedAt: now, Revoked: true},
	}); err != nil {
		t.Fatal(err)
	}
	cs := []CheckIn{
		checkin(ids[0], now, 2, ResultOK),                         // stable, newest: not behind
		checkin(ids[1], now, 1, ResultFailed),                     // behind, failed
		checkin(ids[2], now, 2, ResultOK),                         // test channel: behind (3)
		checkin(ids[3], now.Add(-48*time.Hour), 0, ResultStalled), // unseen, stalled, behind
		checkin(ids[4], now, 3, ResultOK),                         // test channel at 3
	}
	cs[2].Channel, cs[4].Channel = "test", "test"
	cs[4].KernelRelease = "6.1.0-58-amd64"
	for _, c := range cs {
		if err := s.CheckIn(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	// ids[5] never checked in: not seen, level 0, no kernel.
	tests := []struct {
		name string
		f    Filter
		want []string
	}{
		{"all", Filter{}, ids},
		{"behind", Filter{Behind: true}, []string{ids[1], ids[2], ids[3]}},
		{"failed", Filter{Failed: true}, []string{ids[1]}},
		{"stalled", Filter{Stalled: true}, []string{ids[3]}},
		{"unseen", Filter{Unseen: true}, []string{ids[3], ids[5]}},
		{"kernel", Filter{Kernel: "6.1.0-58-amd64"}, []string{ids[4]}},
		{"channel", Filter{Channel: "test"}, []string{ids[2], ids[4]}},
		{"channel and behind", Filter{Channel: "test", Behind: true}, []string{ids[2]}},
		{"search", Filter{Search: "h-" + ids[4][:5]}, []string{ids[4]}},
		{"search id", Filter{Search: ids[5]}, []string{ids[5]}},
	}
	for _, tt := range tests {
		page, err := s.Hosts(ctx, tt.f)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		got := map[string]bool{}
		for _, h := range page.Hosts {
			got[h.ID] = true
		}
		if page.Total != len(tt.want) || len(got) != len(tt.want) {
			t.Errorf("%s: total %d, hosts %v; want %v", tt.name, page.Total, got, tt.want)
			continue
		}
		for _, id := range tt.want {
			if !got[id] {
				t.Errorf("%s: %s missing; got %v", tt.name, id, got)
			}
		}
	}
	page, _ := s.Hosts(ctx, Filter{Limit: 2, Offset: 2})
	if len(page.Hosts) != 2 || page.Total != 6 {
		t.Errorf("paging: %d hosts of %d", len(page.Hosts), page.Total)
	}
	h, _ := s.Host(ctx, ids[2])
	if h.Newest != 3 || !h.Behind() {
		t.Errorf("test host newest %d", h.Newest)
	}
	sum, err := s.Summarise(ctx, now)
	if err != nil || sum != (Summary{Hosts: 6, Behind: 3, Failed: 1, Stalled: 1, Unseen: 2}) {
		t.Errorf("summary %+v, %v", sum, err)
	}
}

func testKernelsCVE(t *testing.T, s *Store) {
	ctx := context.Background()
	ids, _ := register(t, s, 3)
	now := time.Now()
	if err := s.ReplaceLevels(ctx, []Level{
		{BuildID: "abcd", Level: 1, KernelRelease: "6.1.0-57-amd64", Channel: "stable", PublishedAt: now, CVEs: []string{"CVE-2024-1"}},
		{BuildID: "abcd", Level: 2, KernelRelease: "6.1.0-57-amd64", Channel: "stable", PublishedAt: now, CVEs: []string{"cve-2024-2", "CVE-2024-1"}},
	}); err != nil {
		t.Fatal(err)
	}
	for i, lv := range []int64{0, 1, 2} {
		if err := s.CheckIn(ctx, checkin(ids[i], now, lv, ResultOK)); err != nil {
			t.Fatal(err)
		}
	}
	ks, err := s.Kernels(ctx)
	if err != nil || len(ks) != 1 || ks[0].Hosts != 3 || ks[0].BuildID != "abcd" {
		t.Fatalf("kernels %+v, %v", ks, err)
	}
	lc, err := s.KernelLevels(ctx, "6.1.0-57-amd64")
	if err != nil || len(lc) != 3 || lc[2].Level != 2 || lc[2].Hosts != 1 {
		t.Fatalf("levels %+v, %v", lc, err)
	}
	lv, err := s.Levels(ctx, "6.1.0-57-amd64")
	if err != nil || len(lv) != 2 || len(lv[1].CVEs) != 2 || lv[1].CVEs[1] != "CVE-2024-2" {
		t.Fatalf("published %+v, %v", lv, err)
	}
	for _, tt := range []struct {
		cve                string
		protected, exposed int
	}{{"CVE-2024-1", 2, 1}, {"CVE-2024-2", 1, 2}, {"CVE-1999-0", 0, 0}} {
		r, err := s.CVE(ctx, tt.cve, 100)
		if err != nil || len(r.Protected) != tt.protected || len(r.Exposed) != tt.exposed {
			t.Errorf("%s: protected %d exposed %d, %v; want %d %d", tt.cve, len(r.Protected), len(r.Exposed), err, tt.protected, tt.exposed)
		}
	}
}

func testUsers(t *testing.T, s *Store) {
	ctx := context.Background()
	if err := s.AddUser(ctx, "alice", "short", RoleAdmin, false); err == nil {
		t.Fatal("short password accepted")
	}
	if err := s.AddUser(ctx, "alice", "correct horse", "root", false); err == nil {
		t.Fatal("bad role accepted")
	}
	if err := s.AddUser(ctx, "alice", "correct horse", RoleAdmin, false); err != nil {
		t.Fatal(err)
	}
	if err := s.AddUser(ctx, "alice", "correct horse", RoleAdmin, false); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate: %v", err)
	}
	if _, err := s.CheckPassword(ctx, "alice", "wrong horse!"); !errors.Is(err, ErrBadPassword) {
		t.Fatalf("wrong password: %v", err)
	}
	if _, err := s.CheckPassword(ctx, "bob", "correct horse"); !errors.Is(err, ErrBadPassword) {
		t.Fatalf("unknown user: %v", err)
	}
	u, err := s.CheckPassword(ctx, "alice", "correct horse")
	if err != nil || u.Role != RoleAdmin {
		t.Fatalf("%+v %v", u, err)
	}
	tok, sess, err := s.CreateSession(ctx, "alice", time.Hour)
	if err != nil || sess.CSRF == "" || sess.User.Name != "alice" {
		t.Fatalf("%+v %v", sess, err)
	}
	if got, err := s.Session(ctx, tok); err != nil || got.CSRF != sess.CSRF {
		t.Fatalf("%+v %v", got, err)
	}
	if _, err := s.Session(ctx, tok+"x"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("wrong token: %v", err)
	}
	old, _, _ := s.CreateSession(ctx, "alice", -time.Second)
	if _, err := s.Session(ctx, old); !errors.Is(err, ErrNotFound) {
		t.Fatalf("expired session: %v", err)
	}
	if err := s.DeleteSession(ctx, tok); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Session(ctx, tok); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after logout: %v", err)
	}
	// A password change ends the user's sessions.
	tok, _, _ = s.CreateSession(ctx, "alice", time.Hour)
	if err := s.AddUser(ctx, "alice", "another horse", RoleViewer, true); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Session(ctx, tok); !errors.Is(err, ErrNotFound) {
		t.Fatalf("session survived a password change: %v", err)
	}
}

func testAudit(t *testing.T, s *Store) {
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		if err := s.Audit(ctx, AuditEntry{User: "alice", Action: "promote", Target: fmt.Sprintf("abcd/%d", i), OK: i != 1}); err != nil {
			t.Fatal(err)
		}
	}
	log, err := s.AuditLog(ctx, 2)
	if err != nil || len(log) != 2 || log[0].Target != "abcd/2" || log[1].OK {
		t.Fatalf("%+v %v", log, err)
	}
}

// Many concurrent check-ins are batched, every acknowledged one is stored.
func testConcurrentCheckIns(t *testing.T, s *Store) {
	ctx := context.Background()
	ids, _ := register(t, s, 50)
	var wg sync.WaitGroup
	errs := make(chan error, 1000)
	now := time.Now()
	for i := 0; i < 1000; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c := checkin(ids[i%50], now.Add(time.Duration(i)*time.Millisecond), int64(i), ResultOK)
			if err := s.CheckIn(ctx, c); err != nil {
				errs <- err
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var n int
	s.queryRow(ctx, `SELECT COUNT(*) FROM checkins`).Scan(&n)
	if n != 1000 {
		t.Fatalf("%d check-ins stored, want 1000", n)
	}
	for i := 0; i < 50; i++ {
		h, _ := s.Host(ctx, ids[i])
		if h.Level != int64(950+i) {
			t.Fatalf("host %d at level %d, want the newest check-in's %d", i, h.Level, 950+i)
		}
	}
}

// testCheckInAs sends good, wrong-credential, unknown-host and refused
// (admit) check-ins concurrently, so that they share write batches: each
// gets its own answer and only the good ones are stored.
func testCheckInAs(t *testing.T, s *Store) {
	ctx := context.Background()
	ids, creds := register(t, s, 4)
	errRefused := errors.New("refused by admit")
	admitted := map[string]int{}
	var mu sync.Mutex
	admit := func(id string) error {
		mu.Lock()
		defer mu.Unlock()
		admitted[id]++
		if id == ids[3] {
			return errRefused
		}
		return nil
	}
	type try struct {
		id, cred string
		want     error
	}
	var tries []try
	for round := 0; round < 20; round++ {
		tries = append(tries,
			try{ids[0], creds[0], nil},
			try{ids[1], creds[1], nil},
			try{ids[1], creds[0], ErrBadCredential},           // another host's credential
			try{ids[2], creds[2] + "x", ErrBadCredential},     // wrong
			try{"hunknown000000", creds[0], ErrBadCredential}, // unknown host
			try{ids[2], "", ErrBadCredential},                 // none
			try{ids[3], creds[3], errRefused},                 // admit says no
		)
	}
	var wg sync.WaitGroup
	errs := make([]error, len(tries))
	for i, tr := range tries {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.CheckInAs(ctx, tr.cred, checkin(tr.id, time.Now(), 1, ResultOK), admit)
		}()
	}
	wg.Wait()
	for i, tr := range tries {
		if !errors.Is(errs[i], tr.want) || (tr.want == nil && errs[i] != nil) {
			t.Errorf("check-in %d of %s: %v, want %v", i, tr.id, errs[i], tr.want)
		}
	}
	for _, id := range []string{ids[2], "hunknown000000"} {
		if admitted[id] != 0 {
			t.Errorf("admit asked about %s, whose credential was wrong", id)
		}
	}
	if admitted[ids[0]] != 20 || admitted[ids[3]] != 20 {
		t.Errorf("admit asked %d and %d times, want 20", admitted[ids[0]], admitted[ids[3]])
	}
	for i, want := range []int{20, 20, 0, 0} {
		var n int
		if err := s.queryRow(ctx, `SELECT COUNT(*) FROM checkins WHERE host_id = ?`, ids[i]).Scan(&n); err != nil || n != want {
			t.Errorf("host %d: %d check-ins stored (%v), want %d", i, n, err, want)
		}
		h, err := s.Host(ctx, ids[i])
		if err != nil {
			t.Fatal(err)
		}
		if seen := !h.LastSeen.IsZero(); seen != (want > 0) {
			t.Errorf("host %d: last seen %v after %d stored check-ins", i, h.LastSeen, want)
		}
	}
}

// TestPostgresWriterLocksHosts: a PostgreSQL writer locks its batch's
// hosts (in id order) when it reads their credentials, before any
// UPDATE, so that two replicas' writers whose batches share hosts wait
// for each other instead of deadlocking inside their UPDATEs (which
// TestReplicasSharePostgres in e2e/fleet ran into).
func TestPostgresWriterLocksHosts(t *testing.T) {
	s := openTest(t, pgtest.Start(t).NewDatabase(t), "")
	ctx := context.Background()
	ids, _ := register(t, s, 3)
	w := &postgresWriter{db: s.db}
	if err := w.begin(ctx); err != nil {
		t.Fatal(err)
	}
	defer w.rollback()
	creds, err := w.credentials(ctx, []string{ids[2], ids[0]})
	if err != nil || len(creds) != 2 {
		t.Fatalf("credentials: %v, %v", creds, err)
	}
	other, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Rollback()
	for i, locked := range []bool{true, false, true} {
		_, err := other.ExecContext(ctx, `SAVEPOINT p; SELECT 1 FROM hosts WHERE id = '`+ids[i]+`' FOR UPDATE NOWAIT`)
		if got := err != nil && contains(err.Error(), "55P03"); got != locked {
			t.Errorf("host %d: locked by the writer %v (%v), want %v", i, got, err, locked)
		}
		other.ExecContext(ctx, `ROLLBACK TO SAVEPOINT p`)
	}
}
