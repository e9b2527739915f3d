package fleetserver

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/livefix/livefix/fleetdb"
)

const (
	sessionCookie = "livefix_session"
	loginCookie   = "livefix_login" // the login form's double-submit CSRF token
	sessionTTL    = 12 * time.Hour
)

type sessionKey struct{}

func sessionOf(r *http.Request) *fleetdb.Session {
	s, _ := r.Context().Value(sessionKey{}).(*fleetdb.Session)
	return s
}

func (s *Server) cookie(name, value string, maxAge time.Duration) *http.Cookie {
	return &http.Cookie{Name: name, Value: value, Path: "/", HttpOnly: true, Secure: s.cfg.SecureCookies,
		SameSite: http.SameSiteStrictMode, MaxAge: int(maxAge.Seconds())}
}

// securityHeaders go on every dashboard page: no framing, no inline
// script or style, forms post only to this server.
func securityHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
}

// authed wraps a dashboard handler: it needs a session (else the login
// page), an admin for admin handlers, and on POST the session's CSRF token.
func (s *Server) authed(admin bool, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		securityHeaders(w)
		var sess *fleetdb.Session
		if c, err := r.Cookie(sessionCookie); err == nil && c.Value != "" {
			got, err := s.store.Session(r.Context(), c.Value)
			if err == nil {
				sess = &got
			} else if !errors.Is(err, fleetdb.ErrNotFound) {
				s.log.Error("look up session", "err", err)
				http.Error(w, "session store unavailable; see the server log", http.StatusServiceUnavailable)
				return
			}
		}
		if sess == nil {
			if r.Method == http.MethodGet {
				http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
				return
			}
			http.Error(w, "not logged in (or the session expired): log in again", http.StatusUnauthorized)
			return
		}
		if r.Method == http.MethodPost {
			if err := r.ParseMultipartForm(maxUpload); err != nil && !errors.Is(err, http.ErrNotMultipart) {
				http.Error(w, "malformed form: "+err.Error(), http.StatusBadRequest)
				return
			}
			if subtle.ConstantTimeCompare([]byte(r.PostFormValue("csrf")), []byte(sess.CSRF)) != 1 {
				http.Error(w, "missing or wrong CSRF token: reload the page and submit the form again", http.StatusForbidden)
				return
			}
		}
		if admin && sess.User.Role != fleetdb.RoleAdmin {
			http.Error(w, "this needs the admin role; ask an admin (livefix-server user add NAME --role admin)", http.StatusForbidden)
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), sessionKey{}, sess)))
	}
}

func randomToken() string {
	b := make([]byte, 24)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// localPath keeps a post-login redirect on this server.
func localPath(next string) string {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") {
		return "/fleet"
	}
	return next
}

type loginData struct {
	CSRF, Next, User, Error string
}

func (s *Server) handleLoginForm(w http.ResponseWriter, r *http.Request) {
	securityHeaders(w)
	tok := randomToken()
	http.SetCookie(w, s.cookie(loginCookie, tok, time.Hour))
	s.render(w, r, http.StatusOK, "login", "Log in", loginData{CSRF: tok, Next: localPath(r.URL.Query().Get("next"))})
}

func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) {
	securityHeaders(w)
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	c, err := r.Cookie(loginCookie)
	if err != nil || c.Value == "" || subtle.ConstantTimeCompare([]byte(r.PostFormValue("csrf")), []byte(c.Value)) != 1 {
		http.Error(w, "missing or wrong CSRF token: reload the login page and try again", http.StatusForbidden)
		return
	}
	next := localPath(r.PostFormValue("next"))
	fail := func(code int, msg string) {
		tok := randomToken()
		http.SetCookie(w, s.cookie(loginCookie, tok, time.Hour))
		s.render(w, r, code, "login", "Log in", loginData{CSRF: tok, Next: next, User: r.PostFormValue("user"), Error: msg})
	}
	if ok, d := s.loginLim.allow(clientAddr(r), s.cfg.Now()); !ok {
		retryAfter(w, d)
		fail(http.StatusTooManyRequests, "Too many login attempts from this address; wait a minute.")
		return
	}
	name := r.PostFormValue("user")
	u, err := s.store.CheckPassword(r.Context(), name, r.PostFormValue("password"))
	if err != nil {
		if !errors.Is(err, fleetdb.ErrBadPassword) {
			s.log.Error("check password", "err", err)
		}
		s.log.Warn("failed login", "user", name, "from", clientAddr(r))
		fail(http.StatusUnauthorized, "Unknown user or wrong password.")
		return
	}
	tok, _, err := s.store.CreateSession(r.Context(), u.Name, sessionTTL)
	if err != nil {
		s.log.Error("create session", "err", err)
		fail(http.StatusServiceUnavailable, "Could not start a session; see the server log.")
		return
	}
	s.store.Audit(r.Context(), fleetdb.AuditEntry{User: u.Name, Action: "login", Target: clientAddr(r), OK: true})
	http.SetCookie(w, s.cookie(loginCookie, "", -time.Second))
	http.SetCookie(w, s.cookie(sessionCookie, tok, sessionTTL))
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (s *Server) handleLogout(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(sessionCookie); err == nil {
		s.store.DeleteSession(r.Context(), c.Value)
	}
	http.SetCookie(w, s.cookie(sessionCookie, "", -time.Second))
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}
