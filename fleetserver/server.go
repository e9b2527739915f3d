package fleetserver

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/livefix/livefix/fleetapi"
	"github.com/livefix/livefix/fleetdb"
	"github.com/livefix/livefix/patchrepo"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

//go:embed templates static
var assets embed.FS

// Repository is the patch repository the dashboard shows and changes:
// the published levels, and publish/promote/revoke for admins.
type Repository interface {
	// Levels lists every published level, revoked ones included.
	Levels(ctx context.Context) ([]fleetdb.Level, error)
	// Promote makes a published level available on another channel.
	Promote(ctx context.Context, buildID string, level int64, channel string) error
	// Revoke withdraws a level from the hosts.
	Revoke(ctx context.Context, buildID string, level int64, reason string) error
	// Publish adds a patch (a .ko with its .json beside it, or a .lfp)
	// on a channel.
	Publish(ctx context.Context, path, channel string) (fleetdb.Level, error)
}

// Config configures a Server.
type Config struct {
	Store *fleetdb.Store
	// DataDir is livefix-server's data directory; its repository/
	// subdirectory is served at /repo/.
	DataDir string
	// Repository, when set, feeds the published levels and carries out
	// the admins' publish/promote/revoke. Nil: the levels page only shows
	// what the database has mirrored.
	Repository Repository
	// Logger defaults to slog's default logger.
	Logger *slog.Logger
	// HostRate and HostBurst limit check-ins per host (defaults: one per
	// 30 s sustained, bursts of 10). RegisterRate and RegisterBurst limit
	// registrations per client address (defaults: one per second, 60).
	HostRate      rate.Limit
	HostBurst     int
	RegisterRate  rate.Limit
	RegisterBurst int
	// CheckInInterval is what check-in answers tell hosts (default 1h).
	CheckInInterval time.Duration
	// SecureCookies marks session cookies Secure (set when serving TLS).
	SecureCookies bool
	// Now is the clock (tests); nil: time.Now.
	Now func() time.Time
}

// Server serves the repository, the host API, metrics and the dashboard.
type Server struct {
	cfg       Config
	store     *fleetdb.Store
	log       *slog.Logger
	mux       *http.ServeMux
	pages     map[string]*template.Template
	metrics   *metrics
	hostLim   *limiters
	regLim    *limiters
	loginLim  *limiters
	syncMu    sync.Mutex
	lastSync  time.Time
	syncError string
	ov        overview
	// storedBody is every stored check-in's answer, encoded once.
	storedBody []byte
}

// New builds a server.
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil {
		return nil, errors.New("fleetserver: no store")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.HostRate == 0 {
		cfg.HostRate, cfg.HostBurst = rate.Every(30*time.Second), 10
	}
	if cfg.RegisterRate == 0 {
		cfg.RegisterRate, cfg.RegisterBurst = rate.Every(time.Second), 60
	}
	if cfg.CheckInInterval == 0 {
		cfg.CheckInInterval = time.Hour
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{
		cfg:     cfg,
		store:   cfg.Store,
		log:     cfg.Logger,
		mux:     http.NewServeMux(),
		hostLim: newLimiters(cfg.HostRate, cfg.HostBurst),
		regLim:  newLimiters(cfg.RegisterRate, cfg.RegisterBurst),
		// Ten login attempts per address, then one every six seconds.
		loginLim: newLimiters(rate.Every(6*time.Second), 10),
	}
	var err error
	if s.storedBody, err = json.Marshal(fleetapi.CheckInResponse{Stored: true, NextCheckIn: cfg.CheckInInterval.String()}); err != nil {
		return nil, err
	}
	s.storedBody = append(s.storedBody, '\n')
	if s.pages, err = parsePages(); err != nil {
		return nil, err
	}
	s.metrics = newMetrics(s)
	s.routes()
	return s, nil
}

// Registry is the server's Prometheus registry (served at /metrics).
func (s *Server) Registry() *prometheus.Registry { return s.metrics.reg }

// Handler returns the server's HTTP handler.
func (s *Server) Handler() http.Handler { return s.metrics.instrument(s.mux) }

func (s *Server) routes() {
	s.mux.Handle("GET /repo/", http.StripPrefix("/repo", repoFiles(patchrepo.RepositoryDir(s.cfg.DataDir))))
	s.mux.HandleFunc("POST /api/v1/register", s.handleRegister)
	s.mux.HandleFunc("POST /api/v1/checkin", s.handleCheckIn)
	s.mux.Handle("GET /metrics", s.metrics.handler())
	s.mux.HandleFunc("GET /healthz", s.handleHealth)
	static, _ := fs.Sub(assets, "static")
	s.mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	s.dashboardRoutes()
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	if _, err := s.store.SchemaVersion(ctx); err != nil {
		http.Error(w, "database unavailable: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ok")
}

// repoFiles serves the static repository (patchrepo.Handler: metadata
// from memory with ETags, targets from disk), refusing outright any path
// with a ".." or dot-file component.
func repoFiles(dir string) http.Handler {
	files := patchrepo.Handler(dir)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, part := range strings.Split(r.URL.Path, "/") {
			if part == ".." || strings.HasPrefix(part, ".") {
				http.Error(w, "invalid repository path", http.StatusBadRequest)
				return
			}
		}
		files.ServeHTTP(w, r)
	})
}

// Run does the server's background work until ctx ends: it mirrors the
// repository's published levels into the database (every interval, so
// that replicas see each other's changes) and prunes check-in history
// older than retain (0: keep all).
func (s *Server) Run(ctx context.Context, interval, retain time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	lastPrune := time.Time{}
	for {
		s.SyncLevels(ctx)
		if retain > 0 && time.Since(lastPrune) > time.Hour {
			lastPrune = time.Now()
			if n, err := s.store.PruneHistory(ctx, s.cfg.Now().Add(-retain)); err != nil {
				s.log.Error("prune check-in history", "err", err)
			} else if n > 0 {
				s.log.Info("pruned check-in history", "rows", n, "older_than", retain)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// SyncLevels mirrors the repository's published levels into the database.
func (s *Server) SyncLevels(ctx context.Context) error {
	if s.cfg.Repository == nil {
		return nil
	}
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	levels, err := s.cfg.Repository.Levels(ctx)
	if err == nil {
		err = s.store.ReplaceLevels(ctx, levels)
	}
	if err != nil {
		s.syncError = err.Error()
		s.log.Error("mirror published levels", "err", err)
		return err
	}
	s.syncError, s.lastSync = "", time.Now()
	return nil
}
