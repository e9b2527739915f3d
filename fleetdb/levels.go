package fleetdb

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"
)

// Level is a published live patch level for one kernel build, as the
// patch repository lists it.
type Level struct {
	BuildID       string    `json:"build_id"`
	Level         int64     `json:"level"`
	KernelRelease string    `json:"kernel_release,omitempty"`
	Channel       string    `json:"channel"`
	Summary       string    `json:"summary,omitempty"`
	CVEs          []string  `json:"cves,omitempty"`
	PublishedAt   time.Time `json:"published_at"`
	Revoked       bool      `json:"revoked,omitempty"`
}

// ReplaceLevels replaces the mirrored catalogue of published levels with
// the repository's current list, in one transaction, and recomputes the
// newest level of every host. An unchanged list writes nothing.
func (s *Store) ReplaceLevels(ctx context.Context, levels []Level) error {
	old, err := s.Levels(ctx, "")
	if err != nil {
		return err
	}
	if sameLevels(old, levels) {
		return nil
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store published levels: %w", err)
	}
	defer tx.Rollback()
	for _, q := range []string{`DELETE FROM level_cves`, `DELETE FROM levels`} {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("store published levels: %w", err)
		}
	}
	for _, l := range levels {
		rev := 0
		if l.Revoked {
			rev = 1
		}
		if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO levels (build_id, level, kernel_release, channel, summary, published_at, revoked)
			VALUES (?, ?, ?, ?, ?, ?, ?)`), l.BuildID, l.Level, l.KernelRelease, l.Channel, l.Summary, ms(l.PublishedAt), rev); err != nil {
			return fmt.Errorf("store published level %s/%d: %w", l.BuildID, l.Level, err)
		}
		seen := map[string]bool{}
		for _, c := range l.CVEs {
			c = strings.ToUpper(c)
			if seen[c] {
				continue
			}
			seen[c] = true
			if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO level_cves (cve, build_id, level) VALUES (?, ?, ?)`), c, l.BuildID, l.Level); err != nil {
				return fmt.Errorf("store published level %s/%d: %w", l.BuildID, l.Level, err)
			}
		}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE hosts SET newest = `+newestFor("hosts")); err != nil {
		return fmt.Errorf("store published levels: newest level per host: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store published levels: %w", err)
	}
	return nil
}

// sameLevels compares two catalogues as ReplaceLevels would store them.
func sameLevels(a, b []Level) bool {
	key := func(ls []Level) map[string]string {
		m := map[string]string{}
		for _, l := range ls {
			cves := map[string]bool{}
			for _, c := range l.CVEs {
				cves[strings.ToUpper(c)] = true
			}
			list := make([]string, 0, len(cves))
			for c := range cves {
				list = append(list, c)
			}
			sort.Strings(list)
			m[fmt.Sprintf("%s/%d", l.BuildID, l.Level)] = fmt.Sprintf("%s|%s|%s|%d|%v|%s",
				l.KernelRelease, l.Channel, l.Summary, ms(l.PublishedAt), l.Revoked, strings.Join(list, ","))
		}
		return m
	}
	ka, kb := key(a), key(b)
	if len(ka) != len(kb) || len(ka) != len(a) || len(kb) != len(b) {
		return false
	}
	for k, v := range ka {
		if kb[k] != v {
			return false
		}
	}
	return true
}

// Levels lists the published levels, optionally only those of the builds
// of one kernel release (release "" lists all).
func (s *Store) Levels(ctx context.Context, release string) ([]Level, error) {
	if release == "" {
		return s.levels(ctx, "")
	}
	return s.levels(ctx, ` WHERE l.kernel_release = ? OR l.build_id IN (SELECT DISTINCT build_id FROM hosts WHERE kernel_release = ?)`, release, release)
}

func (s *Store) levels(ctx context.Context, where string, args ...any) ([]Level, error) {
	rows, err := s.query(ctx, `SELECT l.build_id, l.level, l.kernel_release, l.channel, l.summary, l.published_at, l.revoked
		FROM levels l`+where+` ORDER BY l.build_id, l.level`, args...)
	if err != nil {
		return nil, fmt.Errorf("list published levels: %w", err)
	}
	var out []Level
	for rows.Next() {
		var l Level
		var pub, rev int64
		if err := rows.Scan(&l.BuildID, &l.Level, &l.KernelRelease, &l.Channel, &l.Summary, &pub, &rev); err != nil {
			rows.Close()
			return nil, err
		}
		l.PublishedAt, l.Revoked = fromMS(pub), rev != 0
		out = append(out, l)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return out, nil
	}
	// CVE ids of those levels.
	idx := map[string]int{}
	for i, l := range out {
		idx[fmt.Sprintf("%s/%d", l.BuildID, l.Level)] = i
	}
	crows, err := s.query(ctx, `SELECT cve, build_id, level FROM level_cves`)
	if err != nil {
		return nil, fmt.Errorf("list published levels: %w", err)
	}
	defer crows.Close()
	for crows.Next() {
		var c, b string
		var lv int64
		if err := crows.Scan(&c, &b, &lv); err != nil {
			return nil, err
		}
		if i, ok := idx[fmt.Sprintf("%s/%d", b, lv)]; ok {
			out[i].CVEs = append(out[i].CVEs, c)
		}
	}
	for i := range out {
		sort.Strings(out[i].CVEs)
	}
	return out, crows.Err()
}
