package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/livefix/livefix/fleetdb"
)

// dbEnv names the environment variable that may hold the --db DSN, so a
// PostgreSQL password need not appear in the process list.
const dbEnv = "LIVEFIX_SERVER_DB"

type storeFlags struct {
	data, db *string
}

func addStoreFlags(fs *flag.FlagSet) storeFlags {
	return storeFlags{
		data: fs.String("data", defaultData(), "data `DIR`: SQLite database (fleet.db), keys/ and repository/"),
		db: fs.String("db", "", "PostgreSQL `DSN` (postgres://USER[:PASS]@HOST[:PORT]/DB); default: SQLite in DIR; also $"+
			dbEnv),
	}
}

func (f storeFlags) open(ctx context.Context) (*fleetdb.Store, error) {
	dsn := *f.db
	if dsn == "" {
		dsn = os.Getenv(dbEnv)
	}
	s, err := fleetdb.Open(ctx, dsn, *f.data)
	if err != nil {
		return nil, fmt.Errorf("%w\n(the fleet database is SQLite in --data DIR unless --db postgres://... is given)", err)
	}
	return s, nil
}
