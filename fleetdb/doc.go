// Package fleetdb is the fleet server's store: organisations and their
// registration keys, hosts and their check-in history, the published
// levels mirrored from the patch repository, dashboard operators, their
// sessions and the audit log.
//
// Two back ends share one schema and one set of queries: SQLite
// (modernc.org/sqlite, pure Go, WAL journal) in the server's data
// directory by default, and PostgreSQL through pgx for large fleets and
// several server replicas. Schema migrations (goose, SQL files embedded
// under migrations/) run on Open; on PostgreSQL they run under an
// advisory lock, so replicas starting together migrate once.
//
// Secrets are never stored: organisation keys, host credentials and
// session tokens are 256-bit random strings kept as SHA-256 digests (a
// slow hash adds nothing for secrets of that entropy and would cap the
// check-in rate), operators' passwords as bcrypt hashes.
//
// Check-ins are written in batches by group commit: CheckIn returns only
// after the transaction holding that check-in has committed, so nothing
// that the server acknowledged is lost, while a busy server writes
// hundreds of check-ins per transaction.
package fleetdb
