package fleetdb

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Host is a host's current state: its latest check-in.
type Host struct {
	ID            string      `json:"id"`
	Org           string      `json:"org"`
	RegisteredAt  time.Time   `json:"registered_at"`
	Hostname      string      `json:"hostname"`
	KernelRelease string      `json:"kernel_release"`
	BuildID       string      `json:"build_id"`
	Level         int64       `json:"level"`
	Newest        int64       `json:"newest_level"` // newest level published for its kernel and channel
	Channel       string      `json:"channel"`
	AgentVersion  string      `json:"agent_version"`
	Userspace     []UserPatch `json:"userspace"`
	LastResult    string      `json:"last_result"`
	LastResultAt  time.Time   `json:"last_result_at,omitzero"`
	LastError     string      `json:"last_error,omitempty"`
	LastSeen      time.Time   `json:"last_seen,omitzero"`
}

// Behind reports whether a newer level is published for the host.
func (h Host) Behind() bool { return h.Level < h.Newest }

// UnseenAfter is how long without a check-in makes a host "not seen".
const UnseenAfter = 24 * time.Hour

// Filter selects hosts; set fields combine with AND.
type Filter struct {
	Behind  bool   // a newer level is published for its kernel and channel
	Failed  bool   // last result failed
	Stalled bool   // last result stalled
	Unseen  bool   // no check-in for UnseenAfter
	Kernel  string // kernel release, exactly
	Channel string
	Search  string // hostname or host id prefix
	Org     string
	Now     time.Time // for Unseen; zero: time.Now()
	Limit   int       // default 100, at most 1000
	Offset  int
	// SkipCount leaves HostPage.Total at 0: the caller has the count
	// (the dashboard's cached summary), and counting up to CountLimit
	// matches costs far more than the page (a PostgreSQL profile with
	// 100,000 hosts: 83 ms for the count, 0.2 ms for the page).
	SkipCount bool
}

// HostPage is one page of hosts and the number of hosts that match.
type HostPage struct {
	Hosts []Host `json:"hosts"`
	Total int    `json:"total"`
	// More is set when more than CountLimit hosts match: Total is then
	// CountLimit (counting them all would cost more than the page).
	More bool `json:"more,omitempty"`
}

// CountLimit bounds how far Hosts counts the matching hosts.
const CountLimit = 10000

// newestFor is the newest published, unrevoked level a host may take
// (a stable host takes stable levels; a test host takes test and stable),
// for the host table's newest column; T names the row holding build_id
// and channel.
func newestFor(t string) string {
	return `COALESCE((SELECT MAX(l.level) FROM levels l WHERE l.build_id = ` + t + `.build_id AND l.revoked = 0
	AND (l.channel = 'stable' OR l.channel = ` + t + `.channel)), 0)`
}

const hostColumns = `h.id, h.org, h.registered_at, h.hostname, h.kernel_release, h.build_id, h.level, h.newest,
	h.channel, h.agent_version, h.userspace, h.last_result, h.last_result_at, h.last_error, h.last_seen`

func scanHost(sc interface{ Scan(...any) error }) (Host, error) {
	var h Host
	var reg, rat, seen int64
	var us string
	err := sc.Scan(&h.ID, &h.Org, &reg, &h.Hostname, &h.KernelRelease, &h.BuildID, &h.Level, &h.Newest,
		&h.Channel, &h.AgentVersion, &us, &h.LastResult, &rat, &h.LastError, &seen)
	if err != nil {
		return h, err
	}
	h.RegisteredAt, h.LastResultAt, h.LastSeen = fromMS(reg), fromMS(rat), fromMS(seen)
	json.Unmarshal([]byte(us), &h.Userspace)
	return h, nil
}

func (f Filter) where() (string, []any) {
	var conds []string
	var args []any
	if f.Behind {
		conds = append(conds, "h.level < h.newest")
	}
	if f.Failed {
		conds = append(conds, "h.last_result = ?")
		args = append(args, ResultFailed)
	}
	if f.Stalled {
		conds = append(conds, "h.last_result = ?")
		args = append(args, ResultStalled)
	}
	if f.Unseen {
		now := f.Now
		if now.IsZero() {
			now = time.Now()
		}
		conds = append(conds, "h.last_seen < ?")
		args = append(args, ms(now.Add(-UnseenAfter)))
	}
	if f.Kernel != "" {
		conds = append(conds, "h.kernel_release = ?")
		args = append(args, f.Kernel)
	}
	if f.Channel != "" {
		conds = append(conds, "h.channel = ?")
		args = append(args, f.Channel)
	}
	if f.Org != "" {
		conds = append(conds, "h.org = ?")
		args = append(args, f.Org)
	}
	if f.Search != "" {
		// A prefix range keeps the hostname index usable; no LIKE escaping.
		conds = append(conds, "((h.hostname >= ? AND h.hostname < ?) OR h.id = ?)")
		args = append(args, f.Search, f.Search+"\U0010FFFF", f.Search)
	}
	if len(conds) == 0 {
		return "", nil
	}
	return " WHERE " + strings.Join(conds, " AND "), args
}

// Hosts returns one page of the hosts matching the filter, ordered by
// hostname, and how many match in all.
func (s *Store) Hosts(ctx context.Context, f Filter) (HostPage, error) {
	if f.Limit <= 0 {
		f.Limit = 100
	}
	f.Limit = min(f.Limit, 1000)
	where, args := f.where()
	var page HostPage
	count := `SELECT COUNT(*) FROM hosts h` + where
	if where != "" {
		count = `SELECT COUNT(*) FROM (SELECT 1 FROM hosts h` + where + ` LIMIT ` + fmt.Sprint(CountLimit+1) + `) AS m`
	}
	if !f.SkipCount {
		if err := s.queryRow(ctx, count, args...).Scan(&page.Total); err != nil {
			return page, fmt.Errorf("count hosts: %w", err)
		}
		if page.Total > CountLimit {
			page.Total, page.More = CountLimit, true
		}
	}
	rows, err := s.query(ctx, `SELECT `+hostColumns+` FROM hosts h`+where+` ORDER BY h.hostname, h.id LIMIT ? OFFSET ?`,
		append(args, f.Limit, f.Offset)...)
	if err != nil {
		return page, fmt.Errorf("list hosts: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		h, err := scanHost(rows)
		if err != nil {
			return page, fmt.Errorf("list hosts: %w", err)
		}
		page.Hosts = append(page.Hosts, h)
	}
	return page, rows.Err()
}

// Host returns one host.
func (s *Store) Host(ctx context.Context, id string) (Host, error) {
	h, err := scanHost(s.queryRow(ctx, `SELECT `+hostColumns+` FROM hosts h WHERE h.id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return h, fmt.Errorf("host %q: %w", id, ErrNotFound)
	}
	return h, err
}

// Summary counts the fleet for the dashboard's filter bar.
type Summary struct {
	Hosts, Behind, Failed, Stalled, Unseen int
}

// Summarise counts all hosts and those in each state.
func (s *Store) Summarise(ctx context.Context, now time.Time) (Summary, error) {
	var sum Summary
	// One indexed count each rather than one scan of every host.
	err := s.queryRow(ctx, `SELECT
		(SELECT COUNT(*) FROM hosts),
		(SELECT COUNT(*) FROM hosts WHERE level < newest),
		(SELECT COUNT(*) FROM hosts WHERE last_result = ?),
		(SELECT COUNT(*) FROM hosts WHERE last_result = ?),
		(SELECT COUNT(*) FROM hosts WHERE last_seen < ?)`,
		ResultFailed, ResultStalled, ms(now.Add(-UnseenAfter))).Scan(&sum.Hosts, &sum.Behind, &sum.Failed, &sum.Stalled, &sum.Unseen)
	if err != nil {
		return sum, fmt.Errorf("summarise fleet: %w", err)
	}
	return sum, nil
}

// Kernel is a kernel build seen in the fleet or published to.
type Kernel struct {
	Release string `json:"release"`
	BuildID string `json:"build_id"`
	Hosts   int    `json:"hosts"`
}

// Kernels lists the kernel builds the fleet runs, most hosts first.
func (s *Store) Kernels(ctx context.Context) ([]Kernel, error) {
	rows, err := s.query(ctx, `SELECT kernel_release, build_id, COUNT(*) FROM hosts GROUP BY kernel_release, build_id
		ORDER BY COUNT(*) DESC, kernel_release, build_id`)
	if err != nil {
		return nil, fmt.Errorf("list kernels: %w", err)
	}
	defer rows.Close()
	var out []Kernel
	for rows.Next() {
		var k Kernel
		if err := rows.Scan(&k.Release, &k.BuildID, &k.Hosts); err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, rows.Err()
}

// LevelCount is how many hosts of a kernel build run a level.
type LevelCount struct {
	BuildID string
	Level   int64
	Hosts   int
}

// KernelLevels counts the hosts of a kernel release per build and level.
func (s *Store) KernelLevels(ctx context.Context, release string) ([]LevelCount, error) {
	rows, err := s.query(ctx, `SELECT build_id, level, COUNT(*) FROM hosts WHERE kernel_release = ?
		GROUP BY build_id, level ORDER BY build_id, level`, release)
	if err != nil {
		return nil, fmt.Errorf("count levels of %s: %w", release, err)
	}
	defer rows.Close()
	var out []LevelCount
	for rows.Next() {
		var c LevelCount
		if err := rows.Scan(&c.BuildID, &c.Level, &c.Hosts); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// CVEReport says, for one CVE id, which hosts a published live patch
// protects and which run a kernel with a fix published but not applied.
// Hosts whose kernel has no live patch for the CVE are in neither list:
// the fleet server cannot tell whether they are affected.
type CVEReport struct {
	CVE       string
	Fixes     []Level // the levels that fix it, per kernel build
	Protected []Host
	Exposed   []Host
}

// CVE builds the report for one CVE id (at most limit hosts per list).
func (s *Store) CVE(ctx context.Context, cve string, limit int) (CVEReport, error) {
	r := CVEReport{CVE: cve}
	var err error
	r.Fixes, err = s.levels(ctx, ` WHERE EXISTS (SELECT 1 FROM level_cves c WHERE c.cve = ? AND c.build_id = l.build_id AND c.level = l.level)`, cve)
	if err != nil {
		return r, err
	}
	// The lowest level fixing the CVE for each build: levels are cumulative.
	fix := `(SELECT MIN(c.level) FROM level_cves c WHERE c.cve = ? AND c.build_id = h.build_id)`
	for _, q := range []struct {
		cond string
		out  *[]Host
	}{{"h.level >= " + fix, &r.Protected}, {"h.level < " + fix, &r.Exposed}} {
		rows, err := s.query(ctx, `SELECT `+hostColumns+` FROM hosts h WHERE `+q.cond+` ORDER BY h.hostname, h.id LIMIT ?`, cve, limit)
		if err != nil {
			return r, fmt.Errorf("hosts for %s: %w", cve, err)
		}
		for rows.Next() {
			h, err := scanHost(rows)
			if err != nil {
				rows.Close()
				return r, err
			}
			*q.out = append(*q.out, h)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return r, err
		}
	}
	return r, nil
}
