// Package fleetserver is livefix-server's HTTP side: the static patch
// repository under /repo/, the host API (registration and check-ins,
// fleetapi), Prometheus metrics at /metrics and the operators'
// dashboard.
//
// The dashboard is rendered on the server (html/template) and works
// without JavaScript. Operators log in with a password (bcrypt, fleetdb);
// a session is a random token in an HttpOnly, SameSite=Strict cookie, and
// every form carries the session's CSRF token (the login form a
// double-submit cookie), checked before anything happens.
//
// All state is in the fleet database, so several servers can share one
// PostgreSQL database and one repository directory behind a load
// balancer: any of them answers any request.
package fleetserver
