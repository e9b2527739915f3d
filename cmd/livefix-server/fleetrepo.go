package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/livefix/livefix/fleetserver"
)

// openRepository connects the dashboard to the signed repository in
// dataDir (opened on first use: `keys init` may come after `serve`).
func openRepository(dataDir string, log *slog.Logger) *fleetserver.PatchRepo {
	return fleetserver.PatchRepository(dataDir)
}

// refreshRepository re-signs the repository's expiring timestamp metadata
// every interval, so that a repository with no new patches never expires
// for the hosts. Replicas may all do it: each refresh is one locked
// transaction.
func refreshRepository(ctx context.Context, r *fleetserver.PatchRepo, every time.Duration, log *slog.Logger) {
	if every <= 0 {
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		res, err := r.Refresh()
		switch {
		case err != nil:
			log.Error("refresh repository metadata", "err", err)
		case res != nil:
			log.Info("refreshed repository metadata", "timestamp_expires", res.Timestamp)
			if res.Warning != "" {
				log.Warn(res.Warning)
			}
		}
	}
}
