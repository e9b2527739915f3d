-- +goose Up
-- The newest level each host may take, kept with the host (updated on
-- every check-in and whenever the published levels change), so that
-- "behind" is a column comparison a partial index serves, not a
-- subquery per host: the fleet page stays fast with 100,000 hosts.
ALTER TABLE hosts ADD COLUMN newest BIGINT NOT NULL DEFAULT 0;
UPDATE hosts SET newest = COALESCE((SELECT MAX(l.level) FROM levels l WHERE l.build_id = hosts.build_id
	AND l.revoked = 0 AND (l.channel = 'stable' OR l.channel = hosts.channel)), 0);
CREATE INDEX hosts_behind ON hosts (hostname, id) WHERE level < newest;
CREATE INDEX hosts_kernel_build ON hosts (kernel_release, build_id);
DROP INDEX hosts_hostname;
CREATE INDEX hosts_hostname ON hosts (hostname, id);

-- +goose Down
DROP INDEX hosts_hostname;
CREATE INDEX hosts_hostname ON hosts (hostname);
DROP INDEX hosts_kernel_build;
DROP INDEX hosts_behind;
ALTER TABLE hosts DROP COLUMN newest;
