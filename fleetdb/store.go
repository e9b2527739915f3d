package fleetdb

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
	_ "modernc.org/sqlite" // database/sql driver "sqlite"
)

//go:embed migrations
var migrations embed.FS

// Errors callers branch on.
var (
	ErrNotFound      = errors.New("not found")
	ErrExists        = errors.New("already exists")
	ErrBadKey        = errors.New("unknown or revoked organisation key")
	ErrBadCredential = errors.New("unknown host or wrong credential")
	ErrBadPassword   = errors.New("unknown user or wrong password")
	ErrBadName       = errors.New("invalid name: use 1-63 of a-z 0-9 . _ - starting with a letter or digit")
	ErrClosed        = errors.New("store closed")
)

// Dialect names the back end.
type Dialect string

const (
	SQLite   Dialect = "sqlite"
	Postgres Dialect = "postgres"
)

// DBFile is the SQLite database's file name inside the data directory.
const DBFile = "fleet.db"

// Store is an open fleet database. It is safe for concurrent use.
type Store struct {
	db      *sql.DB
	dialect Dialect

	mu      sync.RWMutex // guards closing against CheckIn's send
	closing bool
	queue   chan pending
	writers sync.WaitGroup

	observer atomic.Pointer[BatchObserver]

	// Authenticate's statement, prepared once.
	authStmt *sql.Stmt
}

// BatchObserver is told every check-in batch's size and write time.
type BatchObserver func(n int, d time.Duration, err error)

// ObserveBatches sets the function told about every check-in batch (metrics).
func (s *Store) ObserveBatches(f BatchObserver) { s.observer.Store(&f) }

// Open opens (creating and migrating as needed) the store: dsn "" means
// SQLite in dataDir/fleet.db; "postgres://..." or "postgresql://..." a
// PostgreSQL database.
func Open(ctx context.Context, dsn, dataDir string) (*Store, error) {
	s := &Store{}
	var err error
	switch {
	case dsn == "":
		if dataDir == "" {
			return nil, errors.New("open fleet database: no --data directory and no --db DSN")
		}
		if err := os.MkdirAll(dataDir, 0o750); err != nil {
			return nil, fmt.Errorf("open fleet database: %w", err)
		}
		s.dialect = SQLite
		path := filepath.Join(dataDir, DBFile)
		// _txlock=immediate: a write transaction takes the write lock at
		// BEGIN, so two writers wait (busy_timeout) instead of failing
		// with SQLITE_BUSY at their first write. synchronous(FULL): a
		// committed, acknowledged check-in survives a power cut too.
		s.db, err = sql.Open("sqlite", "file:"+path+"?_txlock=immediate"+
			"&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=busy_timeout(10000)&_pragma=foreign_keys(1)&_pragma=cache_size(-32768)&_pragma=temp_store(MEMORY)")
		if err == nil {
			s.db.SetMaxOpenConns(8)
		}
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		s.dialect = Postgres
		s.db, err = sql.Open("pgx", dsn)
		if err == nil {
			s.db.SetMaxOpenConns(32)
			s.db.SetMaxIdleConns(32)
		}
	default:
		return nil, fmt.Errorf("open fleet database: --db %q: want a postgres://USER@HOST/DB URL, or no --db for SQLite in the data directory", redact(dsn))
	}
	if err != nil {
		return nil, fmt.Errorf("open fleet database: %w", err)
	}
	if err := s.db.PingContext(ctx); err != nil {
		s.db.Close()
		return nil, fmt.Errorf("open fleet database %s: %w", s.describe(dsn, dataDir), err)
	}
	if err := s.migrate(ctx); err != nil {
		s.db.Close()
		return nil, fmt.Errorf("migrate fleet database %s: %w", s.describe(dsn, dataDir), err)
	}
	if err := s.prepare(ctx); err != nil {
		s.db.Close()
		return nil, fmt.Errorf("open fleet database %s: %w", s.describe(dsn, dataDir), err)
	}
	s.queue = make(chan pending, 4096)
	var writers []batchWriter
	if s.dialect == Postgres {
		// One writer: while its commit waits for the WAL flush the
		// queue fills, so batches grow with the load and PostgreSQL
		// runs few large statements. Measured (BenchmarkCheckIns):
		// PostgreSQL's CPU per check-in 61 us with one writer, 84 us
		// with two, 128 us with four.
		writers = append(writers, &postgresWriter{db: s.db})
	} else {
		// SQLite has one writer at a time anyway.
		w, err := newSQLiteWriter(ctx, s.db)
		if err != nil {
			s.authStmt.Close()
			s.db.Close()
			return nil, fmt.Errorf("open fleet database %s: %w", s.describe(dsn, dataDir), err)
		}
		writers = append(writers, w)
	}
	for _, w := range writers {
		s.writers.Add(1)
		go s.writer(w)
	}
	return s, nil
}

func (s *Store) describe(dsn, dataDir string) string {
	if s.dialect == SQLite {
		return filepath.Join(dataDir, DBFile)
	}
	return redact(dsn)
}

// redact hides a password in a DSN for messages.
func redact(dsn string) string {
	if i := strings.Index(dsn, "://"); i >= 0 {
		if j := strings.Index(dsn[i+3:], "@"); j >= 0 {
			if k := strings.Index(dsn[i+3:i+3+j], ":"); k >= 0 {
				return dsn[:i+3+k] + ":***" + dsn[i+3+j:]
			}
		}
	}
	return dsn
}

func (s *Store) migrate(ctx context.Context) error {
	sub, err := fs.Sub(migrations, "migrations/"+string(s.dialect))
	if err != nil {
		return err
	}
	var opts []goose.ProviderOption
	dialect := goose.DialectSQLite3
	if s.dialect == Postgres {
		dialect = goose.DialectPostgres
		locker, err := lock.NewPostgresSessionLocker()
		if err != nil {
			return err
		}
		opts = append(opts, goose.WithSessionLocker(locker))
	}
	p, err := goose.NewProvider(dialect, s.db, sub, opts...)
	if err != nil {
		return err
	}
	_, err = p.Up(ctx)
	return err
}

// Dialect reports the back end.
func (s *Store) Dialect() Dialect { return s.dialect }

// SchemaVersion reports the applied migration version.
func (s *Store) SchemaVersion(ctx context.Context) (int64, error) {
	var v int64
	err := s.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version_id), 0) FROM goose_db_version WHERE is_applied`).Scan(&v)
	return v, err
}

// Close waits for queued check-ins to be written, then closes the database.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return nil
	}
	s.closing = true
	close(s.queue)
	s.mu.Unlock()
	s.writers.Wait()
	if s.authStmt != nil {
		s.authStmt.Close()
	}
	return s.db.Close()
}

// q rewrites ? placeholders to PostgreSQL's $N.
func (s *Store) q(query string) string {
	if s.dialect != Postgres {
		return query
	}
	var b strings.Builder
	n := 0
	for i := 0; i < len(query); i++ {
		if query[i] == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(query[i])
	}
	return b.String()
}

func (s *Store) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return s.db.ExecContext(ctx, s.q(query), args...)
}

func (s *Store) query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return s.db.QueryContext(ctx, s.q(query), args...)
}

func (s *Store) queryRow(ctx context.Context, query string, args ...any) *sql.Row {
	return s.db.QueryRowContext(ctx, s.q(query), args...)
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// ValidName reports whether name is a valid organisation or user name.
func ValidName(name string) bool { return nameRE.MatchString(name) }

// secret returns a new random secret with the prefix.
func secret(prefix string) string {
	b := make([]byte, 32)
	rand.Read(b)
	return prefix + base64.RawURLEncoding.EncodeToString(b)
}

func digest(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

func ms(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromMS(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMilli(v).UTC()
}

// isUnique reports whether err is a unique-constraint violation.
func isUnique(err error) bool {
	if err == nil {
		return false
	}
	m := err.Error()
	return strings.Contains(m, "UNIQUE constraint failed") || strings.Contains(m, "SQLSTATE 23505")
}
