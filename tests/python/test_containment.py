"""Containment: every process a worker starts dies with it, also one that left the
worker's process group with ``start_new_session=True``: when the worker crashes, when the daemon
stops, and after a ``kill -9`` of the daemon (at the next start). Pools here have no limits.

Each test runs twice: ``auto`` (the default: a cgroup per worker where cgroups are usable, as on
these machines) and ``off`` (``BULKHEAD_CGROUPS=off``, the operator switch: orphans are found
through /proc, src/os/orphans.h). Zygote mode: the grandchild of a forked worker dies with it, and
the zygote's spare, a child of the supervisor it has not been told about yet, is left alone.
Handlers live in containment_handlers.py (``containment_handlers:NAME``).
"""

import os
import re
import signal

import pytest

from conftest import Daemon, pid_alive, wait_until

C = "containment_handlers:"
ECHO = {"handler": "echo"}


@pytest.fixture(params=["auto", "off"])
def cgroups(request, monkeypatch):
    """The daemon's BULKHEAD_CGROUPS (daemons inherit the test's environment)."""
    if request.param == "off":
        monkeypatch.setenv("BULKHEAD_CGROUPS", "off")
    else:
        monkeypatch.delenv("BULKHEAD_CGROUPS", raising=False)
    return request.param


def _pool(**keys):
    pool = {"handler": C + "grandchild", "workers": 1, "poison_after": 0}
    pool.update(keys)
    return pool


def _zygote_pool(**keys):
    return _pool(mode="zygote", preload=C + "preload", **keys)


def _uses_cgroups(d):
    return "no usable cgroup" not in d.log()


def _check_mode(d, mode):
    if mode == "off":
        assert "no usable cgroup (BULKHEAD_CGROUPS=off)" in d.log(), d.log()


def _grandchild(d, action):
    """(grandchild pid, worker pid) that the handler recorded for ``action``."""
    path = os.path.join(d.scratch, "grandchild-%s.pid" % action)
    wait_until(lambda: os.path.exists(path), 10, "the pid file " + path)
    with open(path) as f:
        gc, worker = (int(x) for x in f.read().split())
    return gc, worker


def _session(pid):
    with open("/proc/%d/stat" % pid) as f:
        return int(f.read().rsplit(")", 1)[1].split()[3])  # field 6: session


def _gone(pid, what):
    wait_until(lambda: not pid_alive(pid), 10, "%s (pid %d) to be killed" % (what, pid))


def _crash(d, pool, action):
    r = d.job(pool, action)
    assert r.status == 502, r
    assert r.json["outcome"] == "crashed", r.json
    return r.json["attempts"][0]


@pytest.mark.parametrize("action,signame", [("abort", "SIGABRT"), ("segfault", "SIGSEGV")])
def test_a_setsid_grandchild_dies_when_its_worker_crashes(start_daemon, cgroups, action, signame):
    d = start_daemon({"p": _pool(), "echo": ECHO})
    _check_mode(d, cgroups)
    [w] = d.wait_ready("p")
    attempt = _crash(d, "p", action)
    assert attempt["signal"] == signame, attempt
    gc, worker = _grandchild(d, action)
    assert worker == int(w["pid"]) == attempt["pid"]
    _gone(gc, "the grandchild of the crashed worker")
    d.wait_replaced("p", [worker])
    assert d.job("p", "pid").status == 200
    d.assert_serving()
    if cgroups == "off":
        # Said once per worker, with what was killed.
        assert re.search(r"worker p-1 left 1 process\(es\) running; killed pid\(s\) %d\b" % gc,
                         d.log()), d.log()


def test_a_setsid_grandchild_dies_when_the_daemon_stops(start_daemon, cgroups):
    d = start_daemon({"p": _pool(workers=2), "echo": ECHO})
    _check_mode(d, cgroups)
    d.wait_ready("p")
    r = d.job("p", "return")
    assert r.status == 200, r
    gc, worker = _grandchild(d, "return")
    # It really left the worker's session and process group, and outlives the job.
    assert _session(gc) == gc != _session(worker)
    assert pid_alive(gc) and pid_alive(worker)
    assert d.stop() == 0, d.log()[-3000:]
    _gone(gc, "the grandchild of a worker of the stopped daemon")


def test_every_worker_gets_a_cgroup_without_limits(start_daemon):
    d = start_daemon({"p": _pool(workers=2)})
    if not _uses_cgroups(d):
        pytest.skip("no usable cgroup here: " + d.log())
    for w in d.wait_ready("p"):
        with open("/proc/%d/cgroup" % int(w["pid"])) as f:
            lines = f.read().splitlines()
        mine = [l for l in lines if "/bulkhead-%d/%s" % (d.proc.pid, w["id"]) in l]
        assert mine, lines


@pytest.mark.exclusive
@pytest.mark.limit(90)
def test_after_kill_9_the_next_start_kills_what_the_old_workers_left(_daemons, tmp_path):
    workdir = str(tmp_path / "restarted")
    os.makedirs(workdir)
    pools = {"p": _pool(workers=2), "echo": ECHO}
    old = Daemon(workdir, pools)
    try:
        old.start()
        if not _uses_cgroups(old):
            pytest.skip("no usable cgroup here: only cgroups survive a kill -9 of the daemon")
        old.wait_ready("p")
        assert old.job("p", "return").status == 200
        gc, worker = _grandchild(old, "return")
        old.proc.send_signal(signal.SIGKILL)
        old.proc.wait(10)
        # Its workers die by PDEATHSIG; the grandchild, in a session of its own, does not.
        _gone(worker, "the worker of the killed daemon")
        assert pid_alive(gc), "the grandchild died without help: this test proves nothing"
        # The same config again: its start-up empties the dead daemon's cgroups.
        new = Daemon(workdir, pools)
        _daemons.append(new)
        new.start()
        _gone(gc, "the grandchild left by the killed daemon")
        assert re.search(r"removed \d+ stale cgroup\(s\)", new.log()), new.log()
        new.wait_ready("p", 2)
        new.assert_serving()
    finally:
        old.kill()
        old.close()


def _spares(d, pool):
    """Children of the daemon that are neither workers (of any pool) nor the zygote: the spare."""
    known = {int(w["pid"]) for p in d.get_json("/v1/pools")["pools"] for w in p["workers"]
             if w.get("pid")}
    known.add(d.pool_status(pool)["zygote"]["pid"])
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in known:
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == d.proc.pid and fields[0] not in ("Z", "X"):
            out.append(int(entry))
    return out


def test_a_forked_workers_setsid_grandchild_dies_with_it_and_the_spare_lives(start_daemon,
                                                                             cgroups):
    d = start_daemon({"z": _zygote_pool(), "echo": ECHO})
    _check_mode(d, cgroups)
    [w] = d.wait_ready("z")
    zygote = d.pool_status("z")["zygote"]
    [spare] = wait_until(lambda: _spares(d, "z"), 10, "the zygote's spare")
    attempt = _crash(d, "z", "abort")
    gc, worker = _grandchild(d, "abort")
    assert worker == int(w["pid"]) == attempt["pid"]
    _gone(gc, "the grandchild of the crashed forked worker")
    # The replacement is the spare that waited: it was not taken for an orphan.
    [new] = d.wait_replaced("z", [worker])
    assert new == spare, (new, spare)
    assert d.job("z", "pid").body == str(new).encode()
    after = d.pool_status("z")["zygote"]
    assert after["pid"] == zygote["pid"] and after["forked"] == 2, after
    wait_until(lambda: len(_spares(d, "z")) == 1, 10, "a new spare")
    d.assert_serving()
