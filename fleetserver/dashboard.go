package fleetserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/livefix/livefix/fleetapi"
	"github.com/livefix/livefix/fleetdb"
)

// maxUpload bounds a dashboard publish upload (a .ko with its .json, or a .lfp).
const maxUpload = 64 << 20

const pageSize = 100

func (s *Server) dashboardRoutes() {
	s.mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/fleet", http.StatusSeeOther) })
	s.mux.HandleFunc("GET /login", s.handleLoginForm)
	s.mux.HandleFunc("POST /login", s.handleLogin)
	s.mux.HandleFunc("POST /logout", s.authed(false, s.handleLogout))
	s.mux.HandleFunc("GET /fleet", s.authed(false, s.handleFleet))
	s.mux.HandleFunc("GET /hosts/{id}", s.authed(false, s.handleHost))
	s.mux.HandleFunc("GET /kernels", s.authed(false, s.handleKernels))
	s.mux.HandleFunc("GET /kernels/{release}", s.authed(false, s.handleKernel))
	s.mux.HandleFunc("GET /cve", s.authed(false, s.handleCVE))
	s.mux.HandleFunc("GET /levels", s.authed(false, s.handleLevels))
	s.mux.HandleFunc("POST /levels/promote", s.authed(true, s.handlePromote))
	s.mux.HandleFunc("POST /levels/revoke", s.authed(true, s.handleRevoke))
	s.mux.HandleFunc("POST /levels/publish", s.authed(true, s.handlePublish))
	s.mux.HandleFunc("GET /audit", s.authed(false, s.handleAudit))
}

var funcs = template.FuncMap{
	"ago": func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		d := time.Since(t)
		switch {
		case d < time.Minute:
			return "just now"
		case d < time.Hour:
			return fmt.Sprintf("%dm ago", int(d.Minutes()))
		case d < 48*time.Hour:
			return fmt.Sprintf("%dh ago", int(d.Hours()))
		}
		return fmt.Sprintf("%dd ago", int(d.Hours()/24))
	},
	"when": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04:05Z")
	},
	"short": func(s string) string {
		if len(s) > 12 {
			return s[:12]
		}
		return s
	},
	"join": strings.Join,
}

func parsePages() (map[string]*template.Template, error) {
	base, err := template.New("layout.html").Funcs(funcs).ParseFS(assets, "templates/layout.html")
	if err != nil {
		return nil, fmt.Errorf("dashboard templates: %w", err)
	}
	names, err := fs.Glob(assets, "templates/*.html")
	if err != nil {
		return nil, err
	}
	pages := map[string]*template.Template{}
	for _, n := range names {
		name := strings.TrimSuffix(filepath.Base(n), ".html")
		if name == "layout" {
			continue
		}
		t, err := template.Must(base.Clone()).ParseFS(assets, n)
		if err != nil {
			return nil, fmt.Errorf("dashboard template %s: %w", n, err)
		}
		pages[name] = t
	}
	return pages, nil
}

// view is what every page template gets.
type view struct {
	Title   string
	Page    string
	Session *fleetdb.Session
	Flash   string
	Error   string
	Data    any
}

func (s *Server) render(w http.ResponseWriter, r *http.Request, code int, page, title string, data any) {
	v := view{Title: title, Page: page, Session: sessionOf(r), Data: data,
		Flash: r.URL.Query().Get("flash"), Error: r.URL.Query().Get("error")}
	var buf bytes.Buffer
	if err := s.pages[page].ExecuteTemplate(&buf, "layout.html", v); err != nil {
		s.log.Error("render page", "page", page, "err", err)
		http.Error(w, "could not render the page; see the server log", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	w.Write(buf.Bytes())
}

func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, fleetdb.ErrNotFound) {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	s.log.Error("dashboard", "path", r.URL.Path, "err", err)
	http.Error(w, "database error; see the server log", http.StatusInternalServerError)
}

type fleetData struct {
	Filter     fleetdb.Filter
	Page       fleetdb.HostPage
	Summary    fleetdb.Summary
	Kernels    []fleetdb.Kernel
	CountedAt  time.Time // when Summary and Kernels were counted
	Channels   []string
	From, To   int
	Prev, Next string
	Links      map[string]string // summary links
}

func (s *Server) handleFleet(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := fleetdb.Filter{
		Behind: q.Get("behind") != "", Failed: q.Get("failed") != "", Stalled: q.Get("stalled") != "",
		Unseen: q.Get("unseen") != "", Kernel: q.Get("kernel"), Channel: q.Get("channel"),
		Search: strings.TrimSpace(q.Get("q")), Now: s.cfg.Now(), Limit: pageSize,
	}
	pageNo, _ := strconv.Atoi(q.Get("page"))
	pageNo = max(pageNo, 1)
	f.Offset = (pageNo - 1) * pageSize
	ctx := r.Context()
	d := fleetData{Filter: f, Channels: []string{"stable", "test"}, Links: map[string]string{}}
	var err error
	if d.Summary, d.Kernels, d.CountedAt, err = s.overview(r.Context()); err != nil {
		s.fail(w, r, err)
		return
	}
	// All hosts, or one state alone: the summary above the list has
	// counted them already (at CountedAt); only other filters count.
	total := -1
	if f.Kernel == "" && f.Channel == "" && f.Search == "" {
		switch states := []bool{f.Behind, f.Failed, f.Stalled, f.Unseen}; {
		case !slices.Contains(states, true):
			total = d.Summary.Hosts
		case slices.Equal(states, []bool{true, false, false, false}):
			total = d.Summary.Behind
		case slices.Equal(states, []bool{false, true, false, false}):
			total = d.Summary.Failed
		case slices.Equal(states, []bool{false, false, true, false}):
			total = d.Summary.Stalled
		case slices.Equal(states, []bool{false, false, false, true}):
			total = d.Summary.Unseen
		}
	}
	f.SkipCount = total >= 0
	if d.Page, err = s.store.Hosts(ctx, f); err != nil {
		s.fail(w, r, err)
		return
	}
	if total >= 0 {
		// The summary may be up to overviewTTL old: never say fewer
		// than the list shows.
		d.Page.Total = max(total, f.Offset+len(d.Page.Hosts))
	}
	d.From, d.To = f.Offset+1, f.Offset+len(d.Page.Hosts)
	link := func(page int) string {
		v := url.Values{}
		for k, vs := range q {
			v[k] = vs
		}
		v.Set("page", strconv.Itoa(page))
		return "/fleet?" + v.Encode()
	}
	if pageNo > 1 {
		d.Prev = link(pageNo - 1)
	}
	if f.Offset+len(d.Page.Hosts) < d.Page.Total || (d.Page.More && len(d.Page.Hosts) == pageSize) {
		d.Next = link(pageNo + 1)
	}
	s.render(w, r, http.StatusOK, "fleet", "Fleet", d)
}

// overviewTTL is how long the fleet page's summary counts and kernel list
// are reused: counting every state of 100,000 hosts for each page view
// would cost more than the page itself.
const overviewTTL = 10 * time.Second

type overview struct {
	mu      sync.Mutex
	at      time.Time
	summary fleetdb.Summary
	kernels []fleetdb.Kernel
}

func (s *Server) overview(ctx context.Context) (fleetdb.Summary, []fleetdb.Kernel, time.Time, error) {
	o := &s.ov
	o.mu.Lock()
	defer o.mu.Unlock()
	now := s.cfg.Now()
	if !o.at.IsZero() && now.Sub(o.at) < overviewTTL && now.After(o.at) {
		return o.summary, o.kernels, o.at, nil
	}
	sum, err := s.store.Summarise(ctx, now)
	if err != nil {
		return sum, nil, now, err
	}
	ks, err := s.store.Kernels(ctx)
	if err != nil {
		return sum, nil, now, err
	}
	o.summary, o.kernels, o.at = sum, ks, now
	return sum, ks, now, nil
}

// forgetOverview makes the next fleet page count afresh (after an admin
// action changed the published levels).
func (s *Server) forgetOverview() {
	s.ov.mu.Lock()
	s.ov.at = time.Time{}
	s.ov.mu.Unlock()
}

type hostData struct {
	Host    fleetdb.Host
	History []fleetdb.CheckIn
}

func (s *Server) handleHost(w http.ResponseWriter, r *http.Request) {
	h, err := s.store.Host(r.Context(), r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	hist, err := s.store.History(r.Context(), h.ID, 200)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.render(w, r, http.StatusOK, "host", h.Hostname, hostData{Host: h, History: hist})
}

func (s *Server) handleKernels(w http.ResponseWriter, r *http.Request) {
	ks, err := s.store.Kernels(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.render(w, r, http.StatusOK, "kernels", "Kernels", ks)
}

type kernelLevel struct {
	fleetdb.Level
	Hosts int
}

type kernelData struct {
	Release   string
	Levels    []kernelLevel
	Unpatched []fleetdb.LevelCount // hosts at levels with no published entry (0: none applied)
}

func (s *Server) handleKernel(w http.ResponseWriter, r *http.Request) {
	rel := r.PathValue("release")
	if !fleetapi.ValidRelease(rel) {
		http.Error(w, "invalid kernel release", http.StatusBadRequest)
		return
	}
	levels, err := s.store.Levels(r.Context(), rel)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	counts, err := s.store.KernelLevels(r.Context(), rel)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	d := kernelData{Release: rel}
	used := map[string]bool{}
	for _, l := range levels {
		kl := kernelLevel{Level: l}
		for _, c := range counts {
			if c.BuildID == l.BuildID && c.Level == l.Level {
				kl.Hosts = c.Hosts
				used[fmt.Sprintf("%s/%d", c.BuildID, c.Level)] = true
			}
		}
		d.Levels = append(d.Levels, kl)
	}
	for _, c := range counts {
		if !used[fmt.Sprintf("%s/%d", c.BuildID, c.Level)] {
			d.Unpatched = append(d.Unpatched, c)
		}
	}
	s.render(w, r, http.StatusOK, "kernel", "Kernel "+rel, d)
}

var cveRE = regexp.MustCompile(`^CVE-\d{4}-\d{1,9}$`)

type cveData struct {
	Query  string
	Report *fleetdb.CVEReport
}

func (s *Server) handleCVE(w http.ResponseWriter, r *http.Request) {
	id := strings.ToUpper(strings.TrimSpace(r.URL.Query().Get("id")))
	d := cveData{Query: id}
	if id != "" {
		if !cveRE.MatchString(id) {
			s.render(w, r, http.StatusBadRequest, "cve", "CVE", d)
			return
		}
		rep, err := s.store.CVE(r.Context(), id, 1000)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		d.Report = &rep
	}
	s.render(w, r, http.StatusOK, "cve", "CVE "+id, d)
}

type levelsData struct {
	Levels     []fleetdb.Level
	Repository bool
	SyncError  string
	Audit      []fleetdb.AuditEntry
}

func (s *Server) handleLevels(w http.ResponseWriter, r *http.Request) {
	s.SyncLevels(r.Context())
	levels, err := s.store.Levels(r.Context(), "")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	audit, err := s.store.AuditLog(r.Context(), 20)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.syncMu.Lock()
	d := levelsData{Levels: levels, Repository: s.cfg.Repository != nil, SyncError: s.syncError, Audit: audit}
	if ex, ok := s.cfg.Repository.(interface{ Exists() bool }); ok {
		d.Repository = ex.Exists()
	}
	s.syncMu.Unlock()
	s.render(w, r, http.StatusOK, "levels", "Published levels", d)
}

func (s *Server) handleAudit(w http.ResponseWriter, r *http.Request) {
	audit, err := s.store.AuditLog(r.Context(), 500)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.render(w, r, http.StatusOK, "audit", "Audit log", audit)
}

// levelAction reads and checks the build-id and level of a level form.
func levelAction(r *http.Request) (string, int64, error) {
	b := r.PostFormValue("build_id")
	if !fleetapi.ValidBuildID(b) {
		return "", 0, fmt.Errorf("invalid build-id %q: want lower-case hex", b)
	}
	l, err := strconv.ParseInt(r.PostFormValue("level"), 10, 64)
	if err != nil || l < 1 || l > fleetapi.MaxLevel {
		return "", 0, fmt.Errorf("invalid level %q: want 1 to %d", r.PostFormValue("level"), fleetapi.MaxLevel)
	}
	return b, l, nil
}

// done records an admin action in the audit log, mirrors the repository
// again and goes back to the levels page with the outcome.
func (s *Server) done(w http.ResponseWriter, r *http.Request, action, target, detail string, err error) {
	sess := sessionOf(r)
	e := fleetdb.AuditEntry{User: sess.User.Name, Action: action, Target: target, Detail: detail, OK: err == nil}
	if err != nil {
		e.Detail = strings.TrimSpace(detail + "; error: " + err.Error())
	}
	if aerr := s.store.Audit(r.Context(), e); aerr != nil {
		s.log.Error("audit", "err", aerr)
	}
	s.log.Info("admin action", "user", e.User, "action", action, "target", target, "ok", e.OK, "detail", e.Detail)
	v := url.Values{}
	if err != nil {
		v.Set("error", fmt.Sprintf("%s %s failed: %v", action, target, err))
	} else {
		s.SyncLevels(r.Context())
		s.forgetOverview()
		v.Set("flash", fmt.Sprintf("%s %s: done", action, target))
	}
	http.Redirect(w, r, "/levels?"+v.Encode(), http.StatusSeeOther)
}

var errNoRepository = errors.New("no patch repository configured on this server (livefix-server keys init --data DIR)")

func (s *Server) handlePromote(w http.ResponseWriter, r *http.Request) {
	b, l, err := levelAction(r)
	ch := r.PostFormValue("channel")
	if err == nil && !fleetapi.ValidChannel(ch) {
		err = fmt.Errorf("invalid channel %q", ch)
	}
	if err == nil && s.cfg.Repository == nil {
		err = errNoRepository
	}
	if err == nil {
		err = s.cfg.Repository.Promote(r.Context(), b, l, ch)
	}
	s.done(w, r, "promote", fmt.Sprintf("%s/%d", b, l), "to "+ch, err)
}

func (s *Server) handleRevoke(w http.ResponseWriter, r *http.Request) {
	b, l, err := levelAction(r)
	reason := strings.TrimSpace(r.PostFormValue("reason"))
	if err == nil && (reason == "" || len(reason) > 500) {
		err = errors.New("a reason (1-500 characters) is required to revoke a level")
	}
	if err == nil && s.cfg.Repository == nil {
		err = errNoRepository
	}
	if err == nil {
		err = s.cfg.Repository.Revoke(r.Context(), b, l, reason)
	}
	s.done(w, r, "revoke", fmt.Sprintf("%s/%d", b, l), "reason: "+reason, err)
}

var uploadNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]{0,200}\.(ko|json|lfp)$`)

// handlePublish takes an uploaded .ko (with its .json) or .lfp, saves it
// under a fresh directory in DATA/tmp with checked names, and publishes it.
func (s *Server) handlePublish(w http.ResponseWriter, r *http.Request) {
	ch := r.PostFormValue("channel")
	target := ""
	err := func() error {
		if !fleetapi.ValidChannel(ch) {
			return fmt.Errorf("invalid channel %q", ch)
		}
		if s.cfg.Repository == nil {
			return errNoRepository
		}
		if r.MultipartForm == nil || len(r.MultipartForm.File["patch"]) == 0 {
			return errors.New("no patch file uploaded")
		}
		tmpRoot := filepath.Join(s.cfg.DataDir, "tmp")
		if err := os.MkdirAll(tmpRoot, 0o700); err != nil {
			return err
		}
		dir, err := os.MkdirTemp(tmpRoot, "publish-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		var main string
		var kos []string
		files := append(r.MultipartForm.File["patch"], r.MultipartForm.File["manifest"]...)
		for _, fh := range files {
			name := fh.Filename
			if !uploadNameRE.MatchString(name) || strings.Contains(name, "..") {
				return fmt.Errorf("refused file name %q: want NAME.ko, NAME.json or NAME.lfp without '/' or '..'", name)
			}
			in, err := fh.Open()
			if err != nil {
				return err
			}
			out, err := os.OpenFile(filepath.Join(dir, name), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
			if err != nil {
				in.Close()
				return err
			}
			_, err = io.Copy(out, in)
			in.Close()
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
			switch filepath.Ext(name) {
			case ".lfp":
				main = name
			case ".ko":
				kos = append(kos, name)
			}
		}
		if len(kos) == 1 {
			main = kos[0]
		}
		if main == "" {
			return errors.New("upload one .ko (with its .json) or one .lfp")
		}
		target = main
		lv, err := s.cfg.Repository.Publish(r.Context(), filepath.Join(dir, main), ch)
		if err == nil {
			target = fmt.Sprintf("%s/%d (%s)", lv.BuildID, lv.Level, main)
		}
		return err
	}()
	s.done(w, r, "publish", target, "on "+ch, err)
}
