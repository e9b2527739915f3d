-- +goose Up
-- Times are Unix milliseconds (UTC). Secrets (organisation keys, host
-- credentials, session tokens) are stored as hex SHA-256 digests only.
CREATE TABLE orgs (
	name       TEXT PRIMARY KEY,
	key_hash   TEXT NOT NULL UNIQUE,
	created_at BIGINT NOT NULL,
	revoked_at BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE hosts (
	id             TEXT PRIMARY KEY,
	org            TEXT NOT NULL REFERENCES orgs(name),
	cred_hash      TEXT NOT NULL,
	registered_at  BIGINT NOT NULL,
	hostname       TEXT NOT NULL DEFAULT '',
	kernel_release TEXT NOT NULL DEFAULT '',
	build_id       TEXT NOT NULL DEFAULT '',
	level          BIGINT NOT NULL DEFAULT 0,
	channel        TEXT NOT NULL DEFAULT '',
	agent_version  TEXT NOT NULL DEFAULT '',
	userspace      TEXT NOT NULL DEFAULT '[]',
	last_result    TEXT NOT NULL DEFAULT '',
	last_result_at BIGINT NOT NULL DEFAULT 0,
	last_error     TEXT NOT NULL DEFAULT '',
	last_seen      BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX hosts_last_seen ON hosts (last_seen);
CREATE INDEX hosts_kernel ON hosts (kernel_release);
CREATE INDEX hosts_build_level ON hosts (build_id, level);
CREATE INDEX hosts_channel ON hosts (channel);
CREATE INDEX hosts_result ON hosts (last_result);
CREATE INDEX hosts_hostname ON hosts (hostname);

CREATE TABLE checkins (
	id             INTEGER PRIMARY KEY,
	host_id        TEXT NOT NULL,
	at             BIGINT NOT NULL,
	hostname       TEXT NOT NULL,
	kernel_release TEXT NOT NULL,
	build_id       TEXT NOT NULL,
	level          BIGINT NOT NULL,
	channel        TEXT NOT NULL,
	agent_version  TEXT NOT NULL,
	userspace      TEXT NOT NULL,
	result         TEXT NOT NULL,
	result_at      BIGINT NOT NULL,
	error          TEXT NOT NULL
);
CREATE INDEX checkins_host ON checkins (host_id, at);
CREATE INDEX checkins_at ON checkins (at);

-- The published levels, mirrored from the patch repository.
CREATE TABLE levels (
	build_id       TEXT NOT NULL,
	level          BIGINT NOT NULL,
	kernel_release TEXT NOT NULL DEFAULT '',
	channel        TEXT NOT NULL,
	summary        TEXT NOT NULL DEFAULT '',
	published_at   BIGINT NOT NULL,
	revoked        INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (build_id, level)
);
CREATE TABLE level_cves (
	cve      TEXT NOT NULL,
	build_id TEXT NOT NULL,
	level    BIGINT NOT NULL,
	PRIMARY KEY (cve, build_id, level)
);

CREATE TABLE users (
	name       TEXT PRIMARY KEY,
	pw_hash    TEXT NOT NULL,
	role       TEXT NOT NULL,
	created_at BIGINT NOT NULL
);
CREATE TABLE sessions (
	token_hash TEXT PRIMARY KEY,
	user_name  TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
	csrf       TEXT NOT NULL,
	created_at BIGINT NOT NULL,
	expires_at BIGINT NOT NULL
);
CREATE TABLE audit (
	id        INTEGER PRIMARY KEY,
	at        BIGINT NOT NULL,
	user_name TEXT NOT NULL,
	action    TEXT NOT NULL,
	target    TEXT NOT NULL,
	detail    TEXT NOT NULL,
	ok        INTEGER NOT NULL
);

-- +goose Down
DROP TABLE audit;
DROP TABLE sessions;
DROP TABLE users;
DROP TABLE level_cves;
DROP TABLE levels;
DROP TABLE checkins;
DROP TABLE hosts;
DROP TABLE orgs;
