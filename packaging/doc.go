// Package packaging builds livefix's Debian packages (livefix,
// livefix-build, livefix-server) with nfpm: it compiles the programs
// statically with the version stamped in, generates their man pages and
// bash completion from the programs' own --help output
// (internal/clidoc), writes the Debian changelog and a copyright file
// that names every Go module linked into the binaries, and adds the
// systemd units, the conffile and the maintainer scripts kept in files/.
//
// `make deb` runs it through ./packaging/mkdeb; its tests build the
// packages and check them with lintian, systemd-analyze verify and a real
// dpkg install and purge. docs/packaging.md explains the choices.
package packaging
