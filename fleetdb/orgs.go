package fleetdb

import (
	"context"
	"crypto/subtle"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Org is an organisation: its key registers hosts.
type Org struct {
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
	RevokedAt time.Time `json:"revoked_at,omitzero"`
	Hosts     int       `json:"hosts"`
}

// AddOrg creates an organisation and returns its registration key, the
// only time the key exists in clear.
func (s *Store) AddOrg(ctx context.Context, name string) (string, error) {
	if !ValidName(name) {
		return "", fmt.Errorf("organisation %q: %w", name, ErrBadName)
	}
	key := secret("lfo_")
	_, err := s.exec(ctx, `INSERT INTO orgs (name, key_hash, created_at) VALUES (?, ?, ?)`, name, digest(key), ms(time.Now()))
	if isUnique(err) {
		return "", fmt.Errorf("organisation %q: %w", name, ErrExists)
	}
	if err != nil {
		return "", fmt.Errorf("add organisation %q: %w", name, err)
	}
	return key, nil
}

// Orgs lists the organisations with their host counts.
func (s *Store) Orgs(ctx context.Context) ([]Org, error) {
	rows, err := s.query(ctx, `SELECT o.name, o.created_at, o.revoked_at,
		(SELECT COUNT(*) FROM hosts h WHERE h.org = o.name) FROM orgs o ORDER BY o.name`)
	if err != nil {
		return nil, fmt.Errorf("list organisations: %w", err)
	}
	defer rows.Close()
	var out []Org
	for rows.Next() {
		var o Org
		var c, r int64
		if err := rows.Scan(&o.Name, &c, &r, &o.Hosts); err != nil {
			return nil, err
		}
		o.CreatedAt, o.RevokedAt = fromMS(c), fromMS(r)
		out = append(out, o)
	}
	return out, rows.Err()
}

// RevokeOrg revokes the organisation's key: it registers no more hosts.
// Hosts registered with it keep their own credentials.
func (s *Store) RevokeOrg(ctx context.Context, name string) error {
	res, err := s.exec(ctx, `UPDATE orgs SET revoked_at = ? WHERE name = ? AND revoked_at = 0`, ms(time.Now()), name)
	if err != nil {
		return fmt.Errorf("revoke organisation %q: %w", name, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		var x int
		if err := s.queryRow(ctx, `SELECT 1 FROM orgs WHERE name = ?`, name).Scan(&x); errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("organisation %q: %w", name, ErrNotFound)
		}
	}
	return nil
}

// Register checks an organisation key and creates a host: it returns the
// host's id and its credential, the only time the credential exists in
// clear.
func (s *Store) Register(ctx context.Context, orgKey, hostname string) (id, credential, org string, err error) {
	err = s.queryRow(ctx, `SELECT name FROM orgs WHERE key_hash = ? AND revoked_at = 0`, digest(orgKey)).Scan(&org)
	if errors.Is(err, sql.ErrNoRows) {
		return "", "", "", ErrBadKey
	}
	if err != nil {
		return "", "", "", fmt.Errorf("register host: %w", err)
	}
	id = secret("h")[:23]
	credential = secret("lfh_")
	_, err = s.exec(ctx, `INSERT INTO hosts (id, org, cred_hash, registered_at, hostname) VALUES (?, ?, ?, ?, ?)`,
		id, org, digest(credential), ms(time.Now()), hostname)
	if err != nil {
		return "", "", "", fmt.Errorf("register host: %w", err)
	}
	return id, credential, org, nil
}

// Authenticate checks a host's credential.
func (s *Store) Authenticate(ctx context.Context, hostID, credential string) error {
	var h string
	err := s.authStmt.QueryRowContext(ctx, hostID).Scan(&h)
	if errors.Is(err, sql.ErrNoRows) {
		return ErrBadCredential
	}
	if err != nil {
		return fmt.Errorf("authenticate host: %w", err)
	}
	if subtle.ConstantTimeCompare([]byte(h), []byte(digest(credential))) != 1 {
		return ErrBadCredential
	}
	return nil
}
