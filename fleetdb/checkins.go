package fleetdb

import (
	"context"
	"crypto/subtle"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Last results a host reports.
const (
	ResultOK      = "ok"      // the last update attempt succeeded (or there was nothing to do)
	ResultFailed  = "failed"  // the last update attempt failed; the host kept its level
	ResultStalled = "stalled" // a kernel transition did not complete and was reverted
)

// UserPatch is a userspace patch applied on a host.
type UserPatch struct {
	BuildID string `json:"build_id"`
	Level   int64  `json:"level"`
	Name    string `json:"name,omitempty"`
}

// CheckIn is one report of a host's state.
type CheckIn struct {
	HostID        string      `json:"host_id"`
	At            time.Time   `json:"at"` // when the server received it
	Hostname      string      `json:"hostname"`
	KernelRelease string      `json:"kernel_release"`
	BuildID       string      `json:"build_id"`
	Level         int64       `json:"level"`
	Channel       string      `json:"channel"`
	AgentVersion  string      `json:"agent_version"`
	Userspace     []UserPatch `json:"userspace"`
	Result        string      `json:"result"`
	ResultAt      time.Time   `json:"result_at,omitzero"`
	Error         string      `json:"error,omitempty"`
}

type pending struct {
	c CheckIn
	// auth: check digest against the host's credential before storing;
	// admit, when set, is asked next (the server's rate limit).
	auth   bool
	digest string
	admit  Admit
	done   chan error
}

// Admit decides, after a check-in's credential is verified and before it
// is stored, whether the host may check in now; an error refuses the
// check-in and is returned to CheckInAs's caller unchanged. It runs on
// the store's writer: it must be quick.
type Admit func(hostID string) error

// maxBatch bounds one transaction.
const maxBatch = 512

// CheckIn records a check-in and updates the host's current state. It
// returns after the check-in is committed. The caller vouches for the
// host (tests, tools); the host API uses CheckInAs.
func (s *Store) CheckIn(ctx context.Context, c CheckIn) error {
	return s.enqueue(ctx, pending{c: c})
}

// CheckInAs records a check-in sent with a host credential: in the
// transaction that stores it, the credential is checked against the
// host's (ErrBadCredential when it is not the host's, or the host is
// unknown), then admit (nil: always) is asked; a refused check-in stores
// nothing. It returns after the check-in is committed. Checking the
// credential in the write batch costs one indexed read on the writer's
// connection (SQLite) or one query per batch (PostgreSQL), not one
// query per request.
func (s *Store) CheckInAs(ctx context.Context, credential string, c CheckIn, admit Admit) error {
	if credential == "" {
		return ErrBadCredential
	}
	return s.enqueue(ctx, pending{c: c, auth: true, digest: digest(credential), admit: admit})
}

func (s *Store) enqueue(ctx context.Context, p pending) error {
	p.done = make(chan error, 1)
	s.mu.RLock()
	if s.closing {
		s.mu.RUnlock()
		return ErrClosed
	}
	select {
	case s.queue <- p:
	case <-ctx.Done():
		s.mu.RUnlock()
		return ctx.Err()
	}
	s.mu.RUnlock()
	select {
	case err := <-p.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Store) writer(w batchWriter) {
	defer s.writers.Done()
	defer w.close()
	batch := make([]pending, 0, maxBatch)
	errs := make([]error, maxBatch)
	for p := range s.queue {
		batch = append(batch[:0], p)
	drain:
		for len(batch) < maxBatch {
			select {
			case p, ok := <-s.queue:
				if !ok {
					break drain
				}
				batch = append(batch, p)
			default:
				break drain
			}
		}
		start := time.Now()
		errs := errs[:len(batch)]
		var err error
		for try := 0; ; try++ {
			clear(errs)
			err = s.writeBatch(w, batch, errs)
			// PostgreSQL aborts one of two transactions that wait for
			// each other (another replica, the levels mirror): the
			// batch is written again, not failed.
			if err == nil || try == 3 || !retryable(err) {
				break
			}
		}
		if f := s.observer.Load(); f != nil {
			(*f)(len(batch), time.Since(start), err)
		}
		for i, p := range batch {
			if errs[i] != nil {
				p.done <- errs[i]
			} else {
				p.done <- err
			}
		}
	}
}

// retryable reports a PostgreSQL deadlock or serialization failure.
func retryable(err error) bool {
	m := err.Error()
	return strings.Contains(m, "SQLSTATE 40P01") || strings.Contains(m, "SQLSTATE 40001")
}

func userspaceJSON(u []UserPatch) string {
	if len(u) == 0 {
		return "[]"
	}
	b, _ := json.Marshal(u)
	return string(b)
}

// batchWriter writes check-in batches for one writer goroutine.
type batchWriter interface {
	// begin starts the batch's transaction.
	begin(ctx context.Context) error
	// credentials returns the stored credential digests of the hosts
	// (PostgreSQL: and locks their rows, in id order).
	credentials(ctx context.Context, ids []string) (map[string]string, error)
	// write stores the check-ins and updates their hosts.
	write(ctx context.Context, batch []*CheckIn) error
	commit() error
	rollback()
	close()
}

// writeBatch writes one batch in one transaction: errs[i] is set for a
// check-in refused on its own (credential, admit); the returned error,
// for the others, is the transaction's.
func (s *Store) writeBatch(w batchWriter, batch []pending, errs []error) error {
	// A batch belongs to nobody's request: it must not be cancelled by one
	// client going away, or the others' check-ins would fail with it.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := w.begin(ctx); err != nil {
		return fmt.Errorf("store check-ins: %w", err)
	}
	committed := false
	defer func() {
		if !committed {
			w.rollback()
		}
	}()
	ids := make([]string, len(batch))
	for i := range batch {
		ids[i] = batch[i].c.HostID
	}
	creds, err := w.credentials(ctx, ids)
	if err != nil {
		return fmt.Errorf("store check-ins: check credentials: %w", err)
	}
	rows := make([]*CheckIn, 0, len(batch))
	for i := range batch {
		p := &batch[i]
		if p.auth {
			h, ok := creds[p.c.HostID]
			if !ok || subtle.ConstantTimeCompare([]byte(h), []byte(p.digest)) != 1 {
				errs[i] = ErrBadCredential
				continue
			}
			if p.admit != nil {
				if err := p.admit(p.c.HostID); err != nil {
					errs[i] = err
					continue
				}
			}
		}
		rows = append(rows, &p.c)
	}
	if len(rows) > 0 {
		if err := w.write(ctx, rows); err != nil {
			return fmt.Errorf("store check-ins: %w", err)
		}
	}
	if err := w.commit(); err != nil {
		return fmt.Errorf("store check-ins: commit: %w", err)
	}
	committed = true
	return nil
}

const insertCheckin = `INSERT INTO checkins (host_id, at, hostname, kernel_release, build_id, level, channel,
	agent_version, userspace, result, result_at, error) VALUES `

func checkinArgs(c *CheckIn) []any {
	return []any{c.HostID, ms(c.At), c.Hostname, c.KernelRelease, c.BuildID, c.Level, c.Channel,
		c.AgentVersion, userspaceJSON(c.Userspace), c.Result, ms(c.ResultAt), c.Error}
}

const updateHostSQLite = `UPDATE hosts SET hostname = ?, kernel_release = ?, build_id = ?, level = ?,
	channel = ?, agent_version = ?, userspace = ?, last_result = ?, last_result_at = ?, last_error = ?, last_seen = ?,
	newest = COALESCE((SELECT MAX(l.level) FROM levels l WHERE l.build_id = ? AND l.revoked = 0
		AND (l.channel = 'stable' OR l.channel = ?)), 0)
	WHERE id = ? AND last_seen <= ?`

// touchHostSQLite is the update of a host whose check-in changes none of
// the indexed columns (the common case: same kernel, level, channel and
// result as last time). SQLite rewrites an index only when the UPDATE
// sets one of its columns, so this one rewrites one index (last_seen)
// instead of all of them. No row changed: the full update follows.
const touchHostSQLite = `UPDATE hosts SET agent_version = ?, userspace = ?, last_result_at = ?, last_error = ?, last_seen = ?
	WHERE id = ? AND last_seen <= ? AND hostname = ? AND kernel_release = ? AND build_id = ? AND level = ? AND channel = ?
	AND last_result = ?`

// prepare prepares the hot path's statements.
func (s *Store) prepare(ctx context.Context) error {
	var err error
	s.authStmt, err = s.db.PrepareContext(ctx, s.q(`SELECT cred_hash FROM hosts WHERE id = ?`))
	return err
}

// sqliteWriter is SQLite's one writer: a connection of its own, its
// statements prepared on it once, and its transactions begun by hand
// (BEGIN IMMEDIATE), so that no statement is prepared again per batch
// and no other connection's commits reset its page cache. SQLite runs
// in process: one statement per row costs little.
type sqliteWriter struct {
	conn                  *sql.Conn
	auth, ins, touch, upd *sql.Stmt
}

func newSQLiteWriter(ctx context.Context, db *sql.DB) (*sqliteWriter, error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	w := &sqliteWriter{conn: conn}
	for _, st := range []struct {
		p *(*sql.Stmt)
		q string
	}{
		{&w.auth, `SELECT cred_hash FROM hosts WHERE id = ?`},
		{&w.ins, insertCheckin + `(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`},
		{&w.touch, touchHostSQLite},
		{&w.upd, updateHostSQLite},
	} {
		if *st.p, err = conn.PrepareContext(ctx, st.q); err != nil {
			w.close()
			return nil, err
		}
	}
	return w, nil
}

func (w *sqliteWriter) begin(ctx context.Context) error {
	_, err := w.conn.ExecContext(ctx, `BEGIN IMMEDIATE`)
	return err
}

func (w *sqliteWriter) credentials(ctx context.Context, ids []string) (map[string]string, error) {
	m := make(map[string]string, len(ids))
	for _, id := range ids {
		var h string
		err := w.auth.QueryRowContext(ctx, id).Scan(&h)
		if errors.Is(err, sql.ErrNoRows) {
			continue
		}
		if err != nil {
			return nil, err
		}
		m[id] = h
	}
	return m, nil
}

func (w *sqliteWriter) write(ctx context.Context, batch []*CheckIn) error {
	for _, c := range batch {
		if _, err := w.ins.ExecContext(ctx, checkinArgs(c)...); err != nil {
			return err
		}
		us := userspaceJSON(c.Userspace)
		res, err := w.touch.ExecContext(ctx, c.AgentVersion, us, ms(c.ResultAt), c.Error, ms(c.At),
			c.HostID, ms(c.At), c.Hostname, c.KernelRelease, c.BuildID, c.Level, c.Channel, c.Result)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 1 {
			continue
		}
		if _, err := w.upd.ExecContext(ctx, c.Hostname, c.KernelRelease, c.BuildID, c.Level, c.Channel, c.AgentVersion,
			userspaceJSON(c.Userspace), c.Result, ms(c.ResultAt), c.Error, ms(c.At), c.BuildID, c.Channel, c.HostID, ms(c.At)); err != nil {
			return err
		}
	}
	return nil
}

func (w *sqliteWriter) commit() error {
	_, err := w.conn.ExecContext(context.Background(), `COMMIT`)
	return err
}

func (w *sqliteWriter) rollback() { w.conn.ExecContext(context.Background(), `ROLLBACK`) }

func (w *sqliteWriter) close() {
	for _, st := range []*sql.Stmt{w.auth, w.ins, w.touch, w.upd} {
		if st != nil {
			st.Close()
		}
	}
	w.conn.Close()
}

// postgresWriter is one of PostgreSQL's writers. PostgreSQL is a round
// trip away: per batch, one query for the credentials and one statement
// each for the history rows and the hosts, all with fixed text (arrays
// through unnest), so that pgx prepares them once per connection.
type postgresWriter struct {
	db *sql.DB
	tx *sql.Tx
}

func (w *postgresWriter) begin(ctx context.Context) (err error) {
	w.tx, err = w.db.BeginTx(ctx, nil)
	return err
}

func (w *postgresWriter) credentials(ctx context.Context, ids []string) (map[string]string, error) {
	// FOR UPDATE in id order: two writers (replicas) whose batches share
	// hosts lock them in the same order, so they wait for each other
	// instead of deadlocking in the UPDATE.
	rows, err := w.tx.QueryContext(ctx, `SELECT id, cred_hash FROM hosts WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE`, ids)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	m := make(map[string]string, len(ids))
	for rows.Next() {
		var id, h string
		if err := rows.Scan(&id, &h); err != nil {
			return nil, err
		}
		m[id] = h
	}
	return m, rows.Err()
}

// columns holds a batch column by column, for unnest.
type columns struct {
	id, hostname, release, buildID, channel, agent, userspace, result, errs []string
	at, level, resultAt                                                     []int64
}

func (c *columns) add(r *CheckIn) {
	c.id = append(c.id, r.HostID)
	c.at = append(c.at, ms(r.At))
	c.hostname = append(c.hostname, r.Hostname)
	c.release = append(c.release, r.KernelRelease)
	c.buildID = append(c.buildID, r.BuildID)
	c.level = append(c.level, r.Level)
	c.channel = append(c.channel, r.Channel)
	c.agent = append(c.agent, r.AgentVersion)
	c.userspace = append(c.userspace, userspaceJSON(r.Userspace))
	c.result = append(c.result, r.Result)
	c.resultAt = append(c.resultAt, ms(r.ResultAt))
	c.errs = append(c.errs, r.Error)
}

func (c *columns) args() []any {
	return []any{c.id, c.at, c.hostname, c.release, c.buildID, c.level, c.channel, c.agent, c.userspace, c.result, c.resultAt, c.errs}
}

const unnestColumns = `unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::text[],
	$8::text[], $9::text[], $10::text[], $11::bigint[], $12::text[])`

func (w *postgresWriter) write(ctx context.Context, batch []*CheckIn) error {
	var all, latest columns
	// One row per host for the update: the newest of its check-ins here.
	newest := make(map[string]*CheckIn, len(batch))
	for _, c := range batch {
		all.add(c)
		if n, ok := newest[c.HostID]; !ok || !c.At.Before(n.At) {
			newest[c.HostID] = c
		}
	}
	if _, err := w.tx.ExecContext(ctx, `INSERT INTO checkins (host_id, at, hostname, kernel_release, build_id, level, channel,
		agent_version, userspace, result, result_at, error) SELECT * FROM `+unnestColumns, all.args()...); err != nil {
		return err
	}
	for _, c := range batch {
		if newest[c.HostID] == c {
			latest.add(c)
		}
	}
	_, err := w.tx.ExecContext(ctx, `UPDATE hosts SET hostname = v.hostname, kernel_release = v.kernel_release, build_id = v.build_id,
		level = v.level, channel = v.channel, agent_version = v.agent_version, userspace = v.userspace,
		last_result = v.result, last_result_at = v.result_at, last_error = v.error, last_seen = v.at,
		newest = `+newestFor("v")+` FROM `+unnestColumns+`
		AS v (id, at, hostname, kernel_release, build_id, level, channel, agent_version, userspace, result, result_at, error)
		WHERE hosts.id = v.id AND hosts.last_seen <= v.at`, latest.args()...)
	return err
}

func (w *postgresWriter) commit() error {
	err := w.tx.Commit()
	w.tx = nil
	return err
}

func (w *postgresWriter) rollback() {
	if w.tx != nil {
		w.tx.Rollback()
		w.tx = nil
	}
}

func (w *postgresWriter) close() {}

// History returns a host's newest check-ins, newest first.
func (s *Store) History(ctx context.Context, hostID string, limit int) ([]CheckIn, error) {
	rows, err := s.query(ctx, `SELECT host_id, at, hostname, kernel_release, build_id, level, channel, agent_version,
		userspace, result, result_at, error FROM checkins WHERE host_id = ? ORDER BY at DESC, id DESC LIMIT ?`, hostID, limit)
	if err != nil {
		return nil, fmt.Errorf("host history: %w", err)
	}
	defer rows.Close()
	var out []CheckIn
	for rows.Next() {
		var c CheckIn
		var at, rat int64
		var us string
		if err := rows.Scan(&c.HostID, &at, &c.Hostname, &c.KernelRelease, &c.BuildID, &c.Level, &c.Channel,
			&c.AgentVersion, &us, &c.Result, &rat, &c.Error); err != nil {
			return nil, err
		}
		c.At, c.ResultAt = fromMS(at), fromMS(rat)
		json.Unmarshal([]byte(us), &c.Userspace)
		out = append(out, c)
	}
	return out, rows.Err()
}

// PruneHistory deletes check-ins received before the cutoff; the hosts'
// current state stays.
func (s *Store) PruneHistory(ctx context.Context, before time.Time) (int64, error) {
	res, err := s.exec(ctx, `DELETE FROM checkins WHERE at < ?`, ms(before))
	if err != nil {
		return 0, fmt.Errorf("prune check-in history: %w", err)
	}
	return res.RowsAffected()
}
