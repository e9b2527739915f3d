#!/usr/bin/env bash
# demo.sh: placeholder. The end-to-end demo (build a live patch for the
# packaged kernel, apply it in a VM) is still being written.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
echo "demo: not written yet; the live-patch demo is being built"
if [[ -x bin/livefix-build ]]; then
	bin/livefix-build --help
else
	echo "demo: bin/livefix-build does not exist yet"
fi
