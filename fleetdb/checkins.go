package fleetdb

import (
	"context"
	"database/sql"
	"encoding/json"
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
	c    CheckIn
	done chan error
}

// maxBatch bounds one transaction (and PostgreSQL's 65535 parameters).
const maxBatch = 512

// CheckIn records a check-in and updates the host's current state. It
// returns after the check-in is committed.
func (s *Store) CheckIn(ctx context.Context, c CheckIn) error {
	p := pending{c: c, done: make(chan error, 1)}
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

func (s *Store) writer() {
	defer s.writers.Done()
	batch := make([]pending, 0, maxBatch)
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
		err := s.writeBatch(batch)
		if f := s.observer.Load(); f != nil {
			(*f)(len(batch), time.Since(start), err)
		}
		for _, p := range batch {
			p.done <- err
		}
	}
}

func userspaceJSON(u []UserPatch) string {
	if len(u) == 0 {
		return "[]"
	}
	b, _ := json.Marshal(u)
	return string(b)
}

func (s *Store) writeBatch(batch []pending) error {
	// A batch belongs to nobody's request: it must not be cancelled by one
	// client going away, or the others' check-ins would fail with it.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store check-ins: %w", err)
	}
	defer tx.Rollback()
	if s.dialect == Postgres {
		err = s.writeBatchPostgres(ctx, tx, batch)
	} else {
		err = s.writeBatchSQLite(ctx, tx, batch)
	}
	if err != nil {
		return fmt.Errorf("store check-ins: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store check-ins: commit: %w", err)
	}
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

// prepare prepares the hot path's statements.
func (s *Store) prepare(ctx context.Context) error {
	var err error
	if s.authStmt, err = s.db.PrepareContext(ctx, s.q(`SELECT cred_hash FROM hosts WHERE id = ?`)); err != nil {
		return err
	}
	if s.dialect != SQLite {
		return nil
	}
	if s.insStmt, err = s.db.PrepareContext(ctx, insertCheckin+`(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`); err != nil {
		return err
	}
	s.updStmt, err = s.db.PrepareContext(ctx, updateHostSQLite)
	return err
}

// SQLite runs in process: one prepared statement per row costs little.
func (s *Store) writeBatchSQLite(ctx context.Context, tx *sql.Tx, batch []pending) error {
	ins := tx.StmtContext(ctx, s.insStmt)
	defer ins.Close()
	upd := tx.StmtContext(ctx, s.updStmt)
	defer upd.Close()
	for i := range batch {
		c := &batch[i].c
		if _, err := ins.ExecContext(ctx, checkinArgs(c)...); err != nil {
			return err
		}
		if _, err := upd.ExecContext(ctx, c.Hostname, c.KernelRelease, c.BuildID, c.Level, c.Channel, c.AgentVersion,
			userspaceJSON(c.Userspace), c.Result, ms(c.ResultAt), c.Error, ms(c.At), c.BuildID, c.Channel, c.HostID, ms(c.At)); err != nil {
			return err
		}
	}
	return nil
}

// PostgreSQL is a round trip away: one multi-row INSERT and one
// UPDATE ... FROM (VALUES ...) per batch.
func (s *Store) writeBatchPostgres(ctx context.Context, tx *sql.Tx, batch []pending) error {
	var b strings.Builder
	b.WriteString(insertCheckin)
	args := make([]any, 0, len(batch)*12)
	for i := range batch {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
		args = append(args, checkinArgs(&batch[i].c)...)
	}
	if _, err := tx.ExecContext(ctx, s.q(b.String()), args...); err != nil {
		return err
	}
	// One row per host: the newest of its check-ins in this batch.
	latest := make(map[string]int, len(batch))
	for i := range batch {
		c := &batch[i].c
		if j, ok := latest[c.HostID]; !ok || !c.At.Before(batch[j].c.At) {
			latest[c.HostID] = i
		}
	}
	b.Reset()
	args = args[:0]
	b.WriteString(`UPDATE hosts SET hostname = v.hostname, kernel_release = v.kernel_release, build_id = v.build_id,
		level = v.level, channel = v.channel, agent_version = v.agent_version, userspace = v.userspace,
		last_result = v.result, last_result_at = v.result_at, last_error = v.error, last_seen = v.at,
		newest = ` + newestFor("v") + ` FROM (VALUES `)
	n := 0
	for i := range batch {
		c := &batch[i].c
		if latest[c.HostID] != i {
			continue
		}
		if n > 0 {
			b.WriteString(", ")
		}
		n++
		b.WriteString("(?::text, ?::bigint, ?::text, ?::text, ?::text, ?::bigint, ?::text, ?::text, ?::text, ?::text, ?::bigint, ?::text)")
		args = append(args, checkinArgs(c)...)
	}
	b.WriteString(`) AS v (id, at, hostname, kernel_release, build_id, level, channel, agent_version, userspace, result, result_at, error)
		WHERE hosts.id = v.id AND hosts.last_seen <= v.at`)
	_, err := tx.ExecContext(ctx, s.q(b.String()), args...)
	return err
}

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
