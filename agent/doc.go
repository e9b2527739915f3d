// Package agent is the host side of patch distribution: it registers a
// host with a patch repository (patchrepo), keeps the repository's TUF
// metadata verified (the TUF client workflow with go-tuf's trusted
// metadata checks; the daemon keeps what it verified in memory between
// polls), picks the level for the running kernel by channel, delay and
// pin, downloads and verifies it, and applies it through the host's
// kernel load path (Kernel). Userspace patches for
// objects that running processes map are applied through ulp.
//
// Nothing is applied unless the metadata verifies (signatures, versions,
// expiry, snapshot consistency), the downloaded file matches its signed
// length and hashes, and the patch's build-id is the running kernel's. A
// failed update leaves the host at the level it had and says so in the
// agent status (status.json in the state directory).
//
// Files:
//
//	/etc/livefix/agent.toml        Config (mode 0600; --config, LIVEFIX_AGENT_CONFIG)
//	/etc/livefix/root.json         the trusted root metadata register stored
//	STATE/agent/tuf/               verified metadata cache (rollback protection)
//	STATE/agent/status.json        Status: last check, available and applied level
//	STATE/agent/download/          downloads in progress (removed after use)
package agent
