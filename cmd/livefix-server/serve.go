package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/livefix/livefix/fleetapi"
	"github.com/livefix/livefix/fleetserver"
	"github.com/livefix/livefix/internal/cli"
)

const serveUsage = `
usage: livefix-server serve [--data DIR] [--listen ADDR] [--db DSN] [--tls-cert FILE --tls-key FILE]

Serves, on one address:
  /repo/            the signed patch repository (DIR/repository)
  /api/v1/register  hosts register with an organisation key
  /api/v1/checkin   hosts report their state (JSON, at most 64 KiB)
  /metrics          Prometheus metrics
  /                 the operators' dashboard (log in; livefix-server user add)

The fleet database is SQLite in DIR (fleet.db) unless --db names a
PostgreSQL database; several serve processes may share one PostgreSQL
database and one repository directory behind a load balancer.
`

func runServe(args []string, stdout, stderr io.Writer) int {
	fs := cli.NewFlagSet("livefix-server serve", serveUsage, stderr)
	sf := addStoreFlags(fs)
	listen := fs.String("listen", "127.0.0.1:8470", "listen `ADDR`ESS (host:port)")
	cert := fs.String("tls-cert", "", "TLS certificate `FILE` (PEM); without it the server speaks plain HTTP")
	key := fs.String("tls-key", "", "TLS private key `FILE` (PEM)")
	interval := fs.Duration("checkin-interval", time.Hour, "how often hosts are told to check in")
	retain := fs.Duration("retain", 90*24*time.Hour, "keep check-in history this long (0: forever)")
	syncEvery := fs.Duration("sync-interval", 30*time.Second, "how often to re-read the repository's published levels")
	refreshEvery := fs.Duration("refresh-interval", 24*time.Hour, "re-sign the repository's timestamp metadata this often (0: never; then run livefix-server refresh)")
	pos, err := cli.Parse(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil || len(pos) != 0 {
		fs.Usage()
		return 2
	}
	if (*cert == "") != (*key == "") {
		fmt.Fprintln(stderr, "livefix-server serve: --tls-cert and --tls-key go together")
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	st, err := sf.open(ctx)
	if err != nil {
		fmt.Fprintln(stderr, "livefix-server serve:", err)
		return 1
	}
	defer st.Close()
	repo := openRepository(*sf.data, log)
	srv, err := fleetserver.New(fleetserver.Config{
		Store: st, DataDir: *sf.data, Repository: repo, Logger: log,
		CheckInInterval: *interval, SecureCookies: *cert != "",
	})
	if err != nil {
		fmt.Fprintln(stderr, "livefix-server serve:", err)
		return 1
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(stderr, "livefix-server serve: %v (is another server on %s? choose one with --listen)\n", err, *listen)
		return 1
	}
	scheme := "https"
	if *cert == "" {
		scheme = "http"
		fmt.Fprintf(stderr, "livefix-server serve: WARNING: serving PLAIN HTTP on %s: host credentials, organisation keys and\n"+
			"  dashboard passwords cross the network unencrypted. Use --tls-cert/--tls-key, or a TLS-terminating\n"+
			"  proxy, anywhere but loopback. (The repository itself is signed; TUF verifies it either way.)\n", ln.Addr())
	}
	fmt.Fprintf(stdout, "livefix-server: serving %s://%s/ (database: %s, repository: %s/repository, check-in limit %d bytes)\n",
		scheme, ln.Addr(), st.Dialect(), *sf.data, fleetapi.MaxBodyBytes)

	bg, cancelBG := context.WithCancel(context.Background())
	defer cancelBG()
	go srv.Run(bg, *syncEvery, *retain)
	go refreshRepository(bg, repo, *refreshEvery, log)
	if !repo.Exists() {
		fmt.Fprintf(stderr, "livefix-server serve: no patch repository in %s yet: create one with livefix-server keys init --data %s\n", *sf.data, *sf.data)
	}

	hs := &http.Server{
		Handler:           srv.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       2 * time.Minute, // uploads from the dashboard
		WriteTimeout:      5 * time.Minute, // large targets to slow hosts
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
	}
	errc := make(chan error, 1)
	go func() {
		if *cert != "" {
			errc <- hs.ServeTLS(ln, *cert, *key)
		} else {
			errc <- hs.Serve(ln)
		}
	}()
	select {
	case err := <-errc:
		fmt.Fprintln(stderr, "livefix-server serve:", err)
		return 1
	case <-ctx.Done():
	}
	log.Info("shutting down: finishing requests and writing queued check-ins")
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hs.Shutdown(sctx)
	cancelBG()
	if err := st.Close(); err != nil {
		fmt.Fprintln(stderr, "livefix-server serve: closing the database:", err)
		return 1
	}
	return 0
}
