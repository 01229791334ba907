#!/usr/bin/env bash
# Builds the Debian package bulkhead_<version>_amd64.deb into dist/ (or $DIST_DIR) with CPack,
# from the same build as scripts/build.sh (nothing is compiled twice: install paths are decided
# at install time, cmake/install.cmake). Then, as root on Debian 12:
#   apt-get install ./dist/bulkhead_*.deb
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}
dist=${DIST_DIR:-$root/dist}
"$root/scripts/build.sh"
for tool in cpack dpkg-shlibdeps; do
  command -v "$tool" >/dev/null || {
    echo "bulkhead: installing dpkg-dev (for $tool)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dpkg-dev >/dev/null
  }
done
mkdir -p "$dist"
echo "bulkhead: packaging with CPack" >&2
(cd "$build" && cpack -G DEB -B "$dist" >"$dist/cpack.log" 2>&1) || {
  tail -50 "$dist/cpack.log" >&2
  echo "bulkhead: cpack failed (log: $dist/cpack.log)" >&2
  exit 1
}
rm -rf "$dist/_CPack_Packages"
ls "$dist"/bulkhead_*.deb
