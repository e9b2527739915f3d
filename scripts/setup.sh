#!/usr/bin/env bash
# setup.sh installs everything livefix needs on a Debian 12 machine:
# the packaged kernel (image, headers, matching source), qemu to boot it,
# busybox for the test initramfs and the toolchain to build kernel objects.
#
# Idempotent and non-interactive. When every package is already installed
# it only checks and exits; apt-get update runs only when something is missing.
set -euo pipefail

log() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

packages=(
	qemu-system-x86 linux-image-amd64 linux-headers-amd64 linux-source-6.1
	busybox-static cpio kmod flex bison bc libssl-dev libelf-dev dwarves
	rsync xz-utils gcc make binutils patch
	# Debian package checks (packaging/ tests): lintian, man pages, systemd-analyze verify
	lintian man-db systemd
	# fleet server tests: a throwaway PostgreSQL cluster (internal/pgtest)
	postgresql
	# fleet dashboard browser test (headless, driven by chromedp)
	chromium
)

[[ -r /etc/debian_version ]] || die "this script supports Debian 12 only (no /etc/debian_version)"
command -v dpkg-query >/dev/null || die "dpkg-query not found; this script needs a Debian system"

sudo=()
if [[ $(id -u) -ne 0 ]]; then
	command -v sudo >/dev/null || die "not root and sudo is missing; run this script as root"
	sudo=(sudo -n)
fi

# missing PKG... prints the packages that are not fully installed.
missing() {
	local installed
	installed=$(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "$@" 2>/dev/null |
		awk '$2 == "installed" { print $1 }' || true)
	local p
	for p in "$@"; do
		grep -qxF "$p" <<<"$installed" || printf '%s\n' "$p"
	done
}

updated=0
install() {
	if [[ $updated -eq 0 ]]; then
		log "apt-get update"
		"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq ||
			die "apt-get update failed; check the network and /etc/apt/sources.list"
		updated=1
	fi
	log "installing: $*"
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
		--no-install-recommends "$@" ||
		die "apt-get install $* failed; see the apt output above"
}

mapfile -t need < <(missing "${packages[@]}")
if [[ ${#need[@]} -gt 0 ]]; then
	install "${need[@]}"
else
	log "all ${#packages[@]} packages already installed"
fi

# The kernel we boot and build for is the newest /boot/vmlinuz-*; its headers
# must match exactly, or out-of-tree modules get the wrong vermagic.
release=""
if compgen -G '/boot/vmlinuz-*' >/dev/null; then
	release=$(for f in /boot/vmlinuz-*; do printf '%s\n' "${f#/boot/vmlinuz-}"; done | sort -V | tail -n 1)
fi
[[ -n $release ]] || die "no /boot/vmlinuz-* after installing linux-image-amd64"
log "kernel release: $release"

hdr="linux-headers-$release"
if [[ -n $(missing "$hdr") ]]; then
	install "$hdr"
fi

# Verify what the rest of the project relies on, so a broken install fails here
# with a clear message rather than deep inside a test.
for f in "/boot/vmlinuz-$release" "/boot/config-$release" "/boot/System.map-$release" \
	"/lib/modules/$release/build/Makefile" "/lib/modules/$release/modules.dep" \
	/usr/src/linux-source-6.1.tar.xz /bin/busybox; do
	[[ -e $f ]] || die "$f is missing after install; reinstall the package that owns it"
done
for c in qemu-system-x86_64 gcc make patch xz cpio flex bison bc; do
	command -v "$c" >/dev/null || die "$c not on PATH after install"
done
log "ok: kernel $release, headers, source, qemu and toolchain present"

# Userspace live patching of a real Debian library rebuilt from its source
# package (e2e/user TestDebianZlib): deb-src for bookworm main in a sources
# file of its own, zlib's Build-Depends with the nobiarch build profile
# (debhelper, dpkg-dev; gcc-multilib is only for the 32-bit packages), and
# the source package of the installed zlib1g, downloaded once into a cache.
debsrc_list=/etc/apt/sources.list.d/livefix-deb-src.sources
debsrc_cache=/var/cache/livefix/debsrc/zlib
apt_get=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -qq)
if [[ ! -e $debsrc_list ]]; then
	log "enabling deb-src for bookworm main in $debsrc_list"
	printf '%s\n' '# livefix scripts/setup.sh: Debian source packages (apt-get source) for' \
		'# the test that rebuilds a Debian library with its own packaging.' \
		'Types: deb-src' 'URIs: http://deb.debian.org/debian' 'Suites: bookworm' \
		'Components: main' 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg' |
		"${sudo[@]}" tee "$debsrc_list.tmp" >/dev/null
	"${sudo[@]}" mv "$debsrc_list.tmp" "$debsrc_list"
	"${apt_get[@]}" update || die "apt-get update with $debsrc_list failed; check the network"
fi
mapfile -t need < <(missing dpkg-dev debhelper)
if [[ ${#need[@]} -gt 0 ]]; then
	log "installing zlib's build dependencies: ${need[*]}"
	"${apt_get[@]}" install -y --no-install-recommends "${need[@]}" ||
		die "apt-get install ${need[*]} failed; see the apt output above"
fi
zlib_version=$(dpkg-query -W -f='${source:Version}' zlib1g)
zlib_dsc="$debsrc_cache/zlib_${zlib_version#*:}.dsc"
if [[ ! -e $zlib_dsc ]]; then
	log "downloading the source package zlib $zlib_version into $debsrc_cache"
	# Into a fresh directory first: an interrupted download leaves no
	# half-filled cache behind.
	"${sudo[@]}" rm -rf "$debsrc_cache.part"
	"${sudo[@]}" mkdir -p "$debsrc_cache.part"
	(cd "$debsrc_cache.part" && "${apt_get[@]}" source --download-only "zlib=$zlib_version") ||
		die "apt-get source zlib=$zlib_version failed; is $debsrc_list there and apt-get update done?"
	"${sudo[@]}" rm -rf "$debsrc_cache"
	"${sudo[@]}" mv "$debsrc_cache.part" "$debsrc_cache"
fi
[[ -e $zlib_dsc ]] || die "$zlib_dsc is missing after apt-get source"
log "ok: zlib $zlib_version source package in $debsrc_cache"

# Exact positions of duplicate statics (livefix-build kernel --vmlinux; klp's
# TestDebianDbgVmlinux): the vmlinux with its full symbol table from Debian's
# linux-image-$release-dbg. The .deb is an 860 MB download (5.6 GB installed);
# only usr/lib/debug/boot/vmlinux-$release is extracted into the cache, the
# package is never installed and the .deb is removed once the file is there.
dbgdir="${LIVEFIX_CACHE:-/var/cache/livefix}/dbg"
dbgvmlinux="$dbgdir/vmlinux-$release"
if [[ ! -s $dbgvmlinux ]]; then
	"${sudo[@]}" mkdir -p "$dbgdir"
	log "downloading linux-image-$release-dbg (about 860 MB) for its vmlinux"
	(cd "$dbgdir" && "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 download -qq "linux-image-$release-dbg") ||
		die "apt-get download linux-image-$release-dbg failed; check the network and the bookworm main/updates sources"
	deb=$(compgen -G "$dbgdir/linux-image-$release-dbg_*.deb" | head -n 1) || die "no linux-image-$release-dbg .deb in $dbgdir"
	tmp="$dbgvmlinux.tmp"
	"${sudo[@]}" rm -rf "$tmp" && "${sudo[@]}" mkdir -p "$tmp"
	# tar stops after the one member (--occurrence); dpkg-deb then gets SIGPIPE.
	{ dpkg-deb --fsys-tarfile "$deb" | "${sudo[@]}" tar -x -C "$tmp" --occurrence=1 "./usr/lib/debug/boot/vmlinux-$release"; } || true
	[[ -s $tmp/usr/lib/debug/boot/vmlinux-$release ]] || die "$deb has no usr/lib/debug/boot/vmlinux-$release"
	"${sudo[@]}" mv "$tmp/usr/lib/debug/boot/vmlinux-$release" "$dbgvmlinux"
	"${sudo[@]}" rm -rf "$tmp" "$deb"
fi
log "ok: vmlinux with symbols at $dbgvmlinux"

# The real-fix corpus (e2e/realfix): real Linux 6.1 stable fixes are the
# differences between Debian's packaged source trees. The source tarball
# (usr/src/linux-source-6.1.tar.xz) of two older linux-source-6.1 packages
# is extracted from each .deb into the cache; the .deb is removed. The test
# takes the few files it needs from those tarballs.
realfix_dir="${LIVEFIX_CACHE:-/var/cache/livefix}/realfix"
for version in 6.1.190-1 6.1.192-1; do
	tarball="$realfix_dir/$version/linux-source-6.1.tar.xz"
	[[ -s $tarball ]] && continue
	log "downloading linux-source-6.1=$version (about 140 MB) for the real-fix corpus"
	"${sudo[@]}" rm -rf "$realfix_dir/$version.part"
	"${sudo[@]}" mkdir -p "$realfix_dir/$version.part"
	(cd "$realfix_dir/$version.part" && "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 download -qq "linux-source-6.1=$version") ||
		die "apt-get download linux-source-6.1=$version failed; is it still in the bookworm archive (apt-cache policy linux-source-6.1)?"
	deb=$(compgen -G "$realfix_dir/$version.part/linux-source-6.1_*.deb" | head -n 1) || die "no linux-source-6.1 .deb in $realfix_dir/$version.part"
	{ dpkg-deb --fsys-tarfile "$deb" | "${sudo[@]}" tar -x -C "$realfix_dir/$version.part" --occurrence=1 ./usr/src/linux-source-6.1.tar.xz; } || true
	[[ -s $realfix_dir/$version.part/usr/src/linux-source-6.1.tar.xz ]] || die "$deb has no usr/src/linux-source-6.1.tar.xz"
	"${sudo[@]}" mkdir -p "$realfix_dir/$version"
	"${sudo[@]}" mv "$realfix_dir/$version.part/usr/src/linux-source-6.1.tar.xz" "$tarball"
	"${sudo[@]}" rm -rf "$realfix_dir/$version.part"
done
log "ok: linux-source-6.1 6.1.190-1 and 6.1.192-1 tarballs in $realfix_dir"
