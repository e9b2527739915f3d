package main

import (
	"log/slog"

	"github.com/livefix/livefix/fleetserver"
)

// openRepository connects the dashboard to the patch repository in
// dataDir. Until the repository API is wired, there is none: the levels
// page shows what the database holds and refuses admin actions.
func openRepository(dataDir string, log *slog.Logger) fleetserver.Repository {
	return nil
}
