"""Waiting and /proc helpers of the integration suite: ``wait_until`` (poll with a deadline,
never sleep as synchronisation) and what a test asks of processes (state, group members, alive,
command line, the processes carrying a test's tag). conftest.py re-exports them, so tests import
them from either.
"""

import os
import time


class Abort(Exception):
    """Raised by a ``wait_until`` predicate to stop waiting at once."""


def wait_until(predicate, timeout, what, interval=0.02):
    """Polls ``predicate`` until it returns a truthy value or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Abort:
            raise
        except Exception as exc:  # noqa: BLE001 - reported below if it never succeeds
            last_exc = exc
        if time.monotonic() > deadline:
            extra = " (last error: %r)" % (last_exc,) if last_exc else ""
            raise AssertionError("timed out after %.1fs waiting for %s%s" % (timeout, what, extra))
        time.sleep(interval)


def proc_state(pid):
    """The one-letter state from /proc/PID/stat, or None when the pid does not exist."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read().decode("ascii", "replace")
    except (FileNotFoundError, ProcessLookupError):
        return None
    return data[data.rindex(")") + 2]


def group_members(pgid):
    """Live members of process group pgid (zombies excluded), from /proc."""
    members = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name, "rb") as f:
                data = f.read().decode("ascii", "replace")
        except OSError:
            continue
        fields = data[data.rindex(")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(name))
    return members


def pid_alive(pid):
    """True if pid runs (a zombie has already been killed: it only waits to be reaped)."""
    return proc_state(pid) not in (None, "Z", "X")


def pid_cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except OSError:
        return ""


def tagged_pids(tag):
    """Live processes whose environment carries BULKHEAD_TEST_TAG=tag."""
    needle = ("BULKHEAD_TEST_TAG=%s\0" % tag).encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        try:
            with open("/proc/%s/environ" % name, "rb") as f:
                env = f.read() + b"\0"
        except OSError:
            continue
        if needle in env and pid_alive(pid):
            found.append(pid)
    return found
