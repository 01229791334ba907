#!/usr/bin/env bash
# Installs the Debian package the way a user would (apt-get install ./bulkhead_*.deb), checks the
# installed layout (binary, Python package, unit, man page, config), runs the installed daemon
# with the installed config and sends it a good job and a crashing one through the installed
# Python package, then removes the package. It changes the machine (root, /usr, /etc): CI runs it
# (.ci/run); on a workstation, run it in a throwaway container.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/package.sh >/dev/null
deb=$(ls "$root"/dist/bulkhead_*.deb | head -1)
echo "package-check: installing $deb" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq "$deb" >/dev/null

scratch=$(mktemp -d)
daemon=
cleanup() {
  [[ -n "$daemon" ]] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null || true
  apt-get purge -y -qq bulkhead >/dev/null 2>&1 || true
  rm -rf "$scratch"
}
trap cleanup EXIT
fail() { echo "package-check: $*" >&2; exit 1; }

[[ "$(command -v bulkhead)" == /usr/bin/bulkhead ]] || fail "bulkhead is not /usr/bin/bulkhead"
bulkhead --version || fail "bulkhead --version failed"
[[ -f /usr/lib/python3/dist-packages/bulkhead/worker.py ]] || fail "no Python package"
[[ -f /usr/lib/systemd/system/bulkhead.service ]] || fail "no systemd unit"
[[ -f /etc/bulkhead/bulkhead.toml ]] || fail "no /etc/bulkhead/bulkhead.toml"
dpkg-query -W -f='${Conffiles}\n' bulkhead | grep -q /etc/bulkhead/bulkhead.toml ||
  fail "/etc/bulkhead/bulkhead.toml is not a conffile"
[[ -f /usr/share/man/man1/bulkhead.1.gz || -f /usr/share/man/man1/bulkhead.1 ]] ||
  fail "no man page"
if command -v systemd-analyze >/dev/null; then
  systemd-analyze verify --man=no /usr/lib/systemd/system/bulkhead.service ||
    fail "systemd-analyze verify rejected the unit"
fi
bulkhead check -c /etc/bulkhead/bulkhead.toml --import || fail "the installed config does not check"

# The installed daemon, the installed config (on a free port), run from a directory with no
# checkout in sight and no PYTHONPATH: the worker SDK must come from the install.
cd "$scratch"
unset PYTHONPATH BULKHEAD_SDK_DIR BULKHEAD_BIN
/usr/bin/bulkhead serve -c /etc/bulkhead/bulkhead.toml --listen "unix:$scratch/sock" \
  >"$scratch/log" 2>&1 &
daemon=$!
/usr/bin/python3 -S - "$scratch/sock" <<'PY' || { cat "$scratch/log" >&2; fail "jobs failed"; }
import sys, time
sys.path.append("/usr/lib/python3/dist-packages")  # -S: only the installed package, no .pth
import bulkhead
assert bulkhead.__file__.startswith("/usr/lib/python3/dist-packages/"), bulkhead.__file__
client = bulkhead.Client("unix:" + sys.argv[1])
deadline = time.monotonic() + 120
while True:
    try:
        print("package-check: ok job:", client.call("faces", b"hello", timeout=60))
        break
    except (OSError, bulkhead.JobFailed) as exc:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.2)
try:
    client.call("faces", b"segfault", timeout=60)
    raise SystemExit("a segfaulting job did not fail")
except bulkhead.WorkerCrashed as exc:
    print("package-check: crash typed:", exc.outcome)
print("package-check: ok after the crash:", client.call("faces", b"again", timeout=60))
PY
# The dashboard comes from the installed binary, with no file on disk.
page=$(curl -sf --unix-socket "$scratch/sock" http://localhost/) || fail "no dashboard at /"
grep -q '/ui/dashboard.js' <<<"$page" || fail "the dashboard page is not the dashboard"
curl -sf --unix-socket "$scratch/sock" http://localhost/v1/outcomes | grep -q '"crashed"' ||
  fail "GET /v1/outcomes does not list the crash"
echo "package-check: dashboard served" >&2
[[ -f /usr/share/doc/bulkhead/docs/dashboard.png ]] || fail "docs/dashboard.png not installed"
echo "package-check: passed" >&2
