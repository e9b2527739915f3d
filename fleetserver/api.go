package fleetserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/livefix/livefix/fleetapi"
	"github.com/livefix/livefix/fleetdb"
)

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func (s *Server) apiError(w http.ResponseWriter, code int, reason, msg string) {
	s.metrics.rejected.WithLabelValues(reason).Inc()
	if code == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="livefix"`)
	}
	writeJSON(w, code, fleetapi.ErrorResponse{Error: msg})
}

// decodeError answers a fleetapi.Decode or Validate error.
func (s *Server) decodeError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, fleetapi.ErrTooLarge):
		s.apiError(w, http.StatusRequestEntityTooLarge, "too_large", err.Error())
	case errors.Is(err, fleetapi.ErrInvalid):
		s.apiError(w, http.StatusBadRequest, "invalid", err.Error())
	default:
		s.apiError(w, http.StatusBadRequest, "malformed", err.Error())
	}
}

func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func retryAfter(w http.ResponseWriter, d time.Duration) {
	w.Header().Set("Retry-After", fmt.Sprint(int(math.Ceil(d.Seconds()))))
}

func (s *Server) handleRegister(w http.ResponseWriter, r *http.Request) {
	if ok, d := s.regLim.allow(clientAddr(r), s.cfg.Now()); !ok {
		retryAfter(w, d)
		s.apiError(w, http.StatusTooManyRequests, "rate_limited", "too many registrations from this address; retry later")
		return
	}
	var req fleetapi.RegisterRequest
	if err := fleetapi.Decode(r.Body, &req); err != nil {
		s.decodeError(w, err)
		return
	}
	if err := req.Validate(); err != nil {
		s.decodeError(w, err)
		return
	}
	id, cred, org, err := s.store.Register(r.Context(), req.Key, req.Hostname)
	if errors.Is(err, fleetdb.ErrBadKey) {
		s.apiError(w, http.StatusUnauthorized, "unauthorized", "unknown or revoked organisation key: ask the operator for a key from `livefix-server org add`")
		return
	}
	if err != nil {
		s.log.Error("register host", "err", err)
		s.apiError(w, http.StatusInternalServerError, "internal", "could not register the host; see the server log")
		return
	}
	s.metrics.registrations.Inc()
	s.log.Info("host registered", "host", id, "org", org, "hostname", req.Hostname, "from", clientAddr(r))
	writeJSON(w, http.StatusOK, fleetapi.RegisterResponse{HostID: id, Credential: cred, Org: org})
}

func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

func (s *Server) handleCheckIn(w http.ResponseWriter, r *http.Request) {
	cred := bearer(r)
	if cred == "" {
		s.apiError(w, http.StatusUnauthorized, "unauthorized", "no host credential: send Authorization: Bearer CREDENTIAL (from `livefix register --key`)")
		return
	}
	var c fleetapi.CheckIn
	if err := fleetapi.Decode(r.Body, &c); err != nil {
		s.decodeError(w, err)
		return
	}
	now := s.cfg.Now()
	if err := c.Validate(now); err != nil {
		s.decodeError(w, err)
		return
	}
	rec := fleetdb.CheckIn{HostID: c.HostID, At: now, Hostname: c.Hostname, KernelRelease: c.KernelRelease,
		BuildID: c.BuildID, Level: c.Level, Channel: c.Channel, AgentVersion: c.AgentVersion,
		Result: c.Result, ResultAt: c.ResultAt, Error: c.Error}
	for _, p := range c.Userspace {
		rec.Userspace = append(rec.Userspace, fleetdb.UserPatch{BuildID: p.BuildID, Level: p.Level, Name: p.Name})
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	// The store checks the credential, then asks the host's rate limit
	// (so that requests with a wrong credential cannot use up a host's
	// allowance), then stores, all in its write batch.
	err := s.store.CheckInAs(ctx, cred, rec, func(id string) error {
		if ok, d := s.hostLim.allow(id, now); !ok {
			return rateLimited(d)
		}
		return nil
	})
	var limited rateLimited
	switch {
	case errors.Is(err, fleetdb.ErrBadCredential):
		s.apiError(w, http.StatusUnauthorized, "unauthorized", "unknown host or wrong credential: register the host again with `livefix register --key`")
		return
	case errors.As(err, &limited):
		retryAfter(w, time.Duration(limited))
		s.apiError(w, http.StatusTooManyRequests, "rate_limited", "too many check-ins from this host; retry later")
		return
	case err != nil:
		s.log.Error("store check-in", "host", c.HostID, "err", err)
		s.apiError(w, http.StatusServiceUnavailable, "internal", "check-in not stored; retry later")
		return
	}
	result := c.Result
	if result == "" {
		result = "none"
	}
	s.metrics.checkins.WithLabelValues(result).Inc()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(s.storedBody)
}

// rateLimited refuses a check-in: the host may send the next one after
// this long.
type rateLimited time.Duration

func (d rateLimited) Error() string { return "rate limited for " + time.Duration(d).String() }
