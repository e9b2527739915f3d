package fleetdb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Operator roles.
const (
	RoleAdmin  = "admin"  // may publish, promote and revoke
	RoleViewer = "viewer" // reads the dashboard
)

// User is a dashboard operator.
type User struct {
	Name      string    `json:"name"`
	Role      string    `json:"role"`
	CreatedAt time.Time `json:"created_at"`
}

// MinPasswordLen is the shortest password AddUser accepts.
const MinPasswordLen = 10

// AddUser creates an operator, or with replace set changes an existing
// one's password and role.
func (s *Store) AddUser(ctx context.Context, name, password, role string, replace bool) error {
	if !ValidName(name) {
		return fmt.Errorf("user %q: %w", name, ErrBadName)
	}
	if role != RoleAdmin && role != RoleViewer {
		return fmt.Errorf("user %q: role %q: want %s or %s", name, role, RoleAdmin, RoleViewer)
	}
	if len(password) < MinPasswordLen {
		return fmt.Errorf("user %q: password too short: at least %d characters", name, MinPasswordLen)
	}
	if len(password) > 72 {
		return fmt.Errorf("user %q: password too long: bcrypt uses at most 72 bytes", name)
	}
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	if err != nil {
		return fmt.Errorf("user %q: %w", name, err)
	}
	if replace {
		res, err := s.exec(ctx, `UPDATE users SET pw_hash = ?, role = ? WHERE name = ?`, string(h), role, name)
		if err != nil {
			return fmt.Errorf("update user %q: %w", name, err)
		}
		if n, _ := res.RowsAffected(); n > 0 {
			_, err = s.exec(ctx, `DELETE FROM sessions WHERE user_name = ?`, name)
			return err
		}
	}
	_, err = s.exec(ctx, `INSERT INTO users (name, pw_hash, role, created_at) VALUES (?, ?, ?, ?)`, name, string(h), role, ms(time.Now()))
	if isUnique(err) {
		return fmt.Errorf("user %q: %w (use --replace to change the password)", name, ErrExists)
	}
	if err != nil {
		return fmt.Errorf("add user %q: %w", name, err)
	}
	return nil
}

// Users lists the operators.
func (s *Store) Users(ctx context.Context) ([]User, error) {
	rows, err := s.query(ctx, `SELECT name, role, created_at FROM users ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	defer rows.Close()
	var out []User
	for rows.Next() {
		var u User
		var c int64
		if err := rows.Scan(&u.Name, &u.Role, &c); err != nil {
			return nil, err
		}
		u.CreatedAt = fromMS(c)
		out = append(out, u)
	}
	return out, rows.Err()
}

// DeleteUser removes an operator and ends their sessions.
func (s *Store) DeleteUser(ctx context.Context, name string) error {
	res, err := s.exec(ctx, `DELETE FROM users WHERE name = ?`, name)
	if err != nil {
		return fmt.Errorf("delete user %q: %w", name, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("user %q: %w", name, ErrNotFound)
	}
	_, err = s.exec(ctx, `DELETE FROM sessions WHERE user_name = ?`, name)
	return err
}

// a valid bcrypt hash compared against when the user does not exist, so
// that a login for an unknown user takes as long as a wrong password.
var dummyHash, _ = bcrypt.GenerateFromPassword([]byte("livefix-no-such-user"), bcrypt.DefaultCost)

// CheckPassword returns the user if the password is theirs.
func (s *Store) CheckPassword(ctx context.Context, name, password string) (User, error) {
	var u User
	var h string
	var c int64
	err := s.queryRow(ctx, `SELECT name, role, created_at, pw_hash FROM users WHERE name = ?`, name).Scan(&u.Name, &u.Role, &c, &h)
	if errors.Is(err, sql.ErrNoRows) {
		bcrypt.CompareHashAndPassword(dummyHash, []byte(password))
		return User{}, ErrBadPassword
	}
	if err != nil {
		return User{}, fmt.Errorf("check password: %w", err)
	}
	if bcrypt.CompareHashAndPassword([]byte(h), []byte(password)) != nil {
		return User{}, ErrBadPassword
	}
	u.CreatedAt = fromMS(c)
	return u, nil
}

// Session is a logged-in operator.
type Session struct {
	User    User
	CSRF    string // the token every form of this session must carry
	Expires time.Time
}

// CreateSession starts a session for the user and returns its token.
func (s *Store) CreateSession(ctx context.Context, user string, ttl time.Duration) (string, Session, error) {
	token := secret("")
	csrf := secret("")
	now := time.Now()
	if _, err := s.exec(ctx, `INSERT INTO sessions (token_hash, user_name, csrf, created_at, expires_at) VALUES (?, ?, ?, ?, ?)`,
		digest(token), user, csrf, ms(now), ms(now.Add(ttl))); err != nil {
		return "", Session{}, fmt.Errorf("create session: %w", err)
	}
	sess, err := s.Session(ctx, token)
	return token, sess, err
}

// Session looks up a session by its token; expired sessions are not found.
func (s *Store) Session(ctx context.Context, token string) (Session, error) {
	var sess Session
	var exp, c int64
	err := s.queryRow(ctx, `SELECT u.name, u.role, u.created_at, s.csrf, s.expires_at FROM sessions s
		JOIN users u ON u.name = s.user_name WHERE s.token_hash = ? AND s.expires_at > ?`, digest(token), ms(time.Now())).
		Scan(&sess.User.Name, &sess.User.Role, &c, &sess.CSRF, &exp)
	if errors.Is(err, sql.ErrNoRows) {
		return sess, fmt.Errorf("session: %w", ErrNotFound)
	}
	if err != nil {
		return sess, fmt.Errorf("session: %w", err)
	}
	sess.User.CreatedAt, sess.Expires = fromMS(c), fromMS(exp)
	return sess, nil
}

// DeleteSession ends a session (logout) and drops expired ones.
func (s *Store) DeleteSession(ctx context.Context, token string) error {
	_, err := s.exec(ctx, `DELETE FROM sessions WHERE token_hash = ? OR expires_at < ?`, digest(token), ms(time.Now()))
	return err
}

// AuditEntry is one operator action.
type AuditEntry struct {
	At     time.Time `json:"at"`
	User   string    `json:"user"`
	Action string    `json:"action"` // publish, promote, revoke, login...
	Target string    `json:"target"`
	Detail string    `json:"detail"`
	OK     bool      `json:"ok"`
}

// Audit records an operator action.
func (s *Store) Audit(ctx context.Context, e AuditEntry) error {
	if e.At.IsZero() {
		e.At = time.Now()
	}
	ok := 0
	if e.OK {
		ok = 1
	}
	_, err := s.exec(ctx, `INSERT INTO audit (at, user_name, action, target, detail, ok) VALUES (?, ?, ?, ?, ?, ?)`,
		ms(e.At), e.User, e.Action, e.Target, e.Detail, ok)
	if err != nil {
		return fmt.Errorf("write audit log: %w", err)
	}
	return nil
}

// AuditLog returns the newest entries, newest first.
func (s *Store) AuditLog(ctx context.Context, limit int) ([]AuditEntry, error) {
	rows, err := s.query(ctx, `SELECT at, user_name, action, target, detail, ok FROM audit ORDER BY id DESC LIMIT ?`, limit)
	if err != nil {
		return nil, fmt.Errorf("read audit log: %w", err)
	}
	defer rows.Close()
	var out []AuditEntry
	for rows.Next() {
		var e AuditEntry
		var at, ok int64
		if err := rows.Scan(&at, &e.User, &e.Action, &e.Target, &e.Detail, &ok); err != nil {
			return nil, err
		}
		e.At, e.OK = fromMS(at), ok != 0
		out = append(out, e)
	}
	return out, rows.Err()
}
