-- +goose Up
-- The fleet page lists hosts in hostname order within a channel or a
-- kernel release: these indexes give that order directly, instead of
-- walking every host by name and filtering.
CREATE INDEX hosts_channel_hostname ON hosts (channel, hostname, id);
CREATE INDEX hosts_kernel_hostname ON hosts (kernel_release, hostname, id);
DROP INDEX hosts_channel;
DROP INDEX hosts_kernel;

-- +goose Down
CREATE INDEX hosts_kernel ON hosts (kernel_release);
CREATE INDEX hosts_channel ON hosts (channel);
DROP INDEX hosts_kernel_hostname;
DROP INDEX hosts_channel_hostname;
