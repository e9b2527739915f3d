package fleetagent

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/livefix/livefix/agent"
	"github.com/livefix/livefix/fleetapi"
	"github.com/livefix/livefix/fleetdb"
	"github.com/livefix/livefix/fleetserver"
)

func TestEnrollAndCheckIn(t *testing.T) {
	dir := t.TempDir()
	st, err := fleetdb.Open(context.Background(), "", dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	srv, err := fleetserver.New(fleetserver.Config{Store: st, DataDir: dir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	key, _ := st.AddOrg(context.Background(), "acme")

	cfg := &agent.Config{Server: ts.URL + "/", Channel: "stable", StateDir: t.TempDir()}
	a := &agent.Agent{Config: cfg}
	r := &Reporter{Agent: a, Version: "1.2.3"}
	if err := r.Send(context.Background(), nil, nil); !errors.Is(err, ErrNotEnrolled) {
		t.Fatalf("send before enroll: %v", err)
	}
	if err := Enroll(context.Background(), cfg, "lfo_wrong"); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("enroll with a wrong key: %v", err)
	}
	if err := Enroll(context.Background(), cfg, key); err != nil || !Enrolled(cfg) {
		t.Fatalf("enroll: %v", err)
	}
	rep := &agent.Report{KernelBuildID: "abcdef0123", Applied: 2, Channel: "stable",
		User: []agent.UserPlan{{BuildID: "beef", Name: "libfoo", Level: 1, Processes: 3, Applied: 3}}}
	r.OnUpdate(rep, nil)
	h, err := st.Host(context.Background(), cfg.HostID)
	if err != nil || h.Level != 2 || h.LastResult != fleetapi.ResultOK || h.BuildID != "abcdef0123" || h.AgentVersion != "1.2.3" ||
		len(h.Userspace) != 1 || h.KernelRelease == "" || h.Hostname == "" {
		t.Fatalf("host after check-in: %+v, %v", h, err)
	}
	// A stalled transition and a failure are told apart.
	for _, tt := range []struct {
		err  error
		want string
	}{
		{errors.New("load /x.ko: transition did not complete: sleeper[43] in do_nanosleep; rolled back, as before"), fleetapi.ResultStalled},
		{errors.New("download: hash mismatch"), fleetapi.ResultFailed},
	} {
		if err := r.Send(context.Background(), rep, tt.err); err != nil {
			t.Fatal(err)
		}
		h, _ = st.Host(context.Background(), cfg.HostID)
		if h.LastResult != tt.want || h.LastError != tt.err.Error() {
			t.Fatalf("%v: result %q error %q", tt.err, h.LastResult, h.LastError)
		}
	}
	// Periodic check-ins repeat the last attempt's outcome.
	ctx, cancel := context.WithCancel(context.Background())
	cfg.CheckinInterval.Duration = 50 * time.Millisecond
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		hist, _ := st.History(context.Background(), cfg.HostID, 100)
		if len(hist) >= 6 {
			if hist[0].Result != fleetapi.ResultFailed {
				t.Fatalf("periodic check-in result %q", hist[0].Result)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d check-ins after 10 s of 50 ms periodic check-ins", len(hist))
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done
	if s := truncate(strings.Repeat("é", 10), 5); s != "éé" {
		t.Fatalf("truncate = %q", s)
	}
}
