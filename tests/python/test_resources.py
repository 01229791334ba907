"""The resource guard with real workers (leaks, limits and hangs as ML libraries produce
them): soft recycle rules on sampled threads / maps / RSS, hard cgroup limits (pids, memory),
hang detection from heartbeats, the start-up watchdog, and cgroup cleanup.

Each test checks the outcome, its evidence, and that the supervisor still answers /healthz and
serves a normal job afterwards. Handlers live in resource_handlers.py (``resource_handlers:NAME``).
"""

import os
import re
import signal
import threading
import time

import pytest

from conftest import Daemon
from proc_helpers import group_members, pid_alive, wait_until

MiB = 1024 * 1024
R = "resource_handlers:"
ECHO = {"handler": "echo"}  # fault_handlers:echo, the "normal pool" of every daemon here


# -- helpers --------------------------------------------------------------------------------


def _problem(resp, status, outcome, attempts=True):
    assert resp.status == status, resp
    assert resp.headers.get("content-type", "").startswith("application/problem+json"), resp
    body = resp.json
    assert body["outcome"] == outcome, body
    assert resp.outcome == outcome, resp.headers
    if attempts:
        assert body["attempts"], body
    return body


def _ok(resp):
    assert resp.status == 200, resp
    assert resp.outcome == "ok", resp.headers
    return resp.json


def _pool(d, name):
    """GET /v1/pools/{pool} (with sample history); records the worker pids it shows."""
    resp = d.http("GET", "/v1/pools/%s" % name, timeout=5)
    assert resp.status == 200, resp
    body = resp.json
    for w in body.get("workers", []):
        if w.get("pid"):
            d.seen_pids.add(int(w["pid"]))
    return body


def _samples(pool_body, measure):
    """Every value of ``measure`` the pool shows: each worker's latest sample and history."""
    values = []
    for w in pool_body["workers"]:
        for s in [w.get("sample")] + list(w.get("history") or []):
            if s and s.get(measure) is not None:
                values.append(s[measure])
    return values


def _recycles(pool_body, *causes):
    return sum(pool_body["recycles_by_cause"].get(c, 0) for c in causes)


def _workers_now(d, pool):
    """Evidence for failure messages: each worker's pid, state, recycle cause and jobs served,
    and the pool's recent events."""
    body = _pool(d, pool)
    return "workers %r, events %r" % (
        [(w.get("pid"), w["state"], w.get("recycle_cause"), w["jobs_served"])
         for w in body["workers"]],
        [(e["kind"], e["worker"], e["detail"]) for e in body["events"]])


def _recycled_events(pool_body):
    return [e for e in pool_body["events"] if e["kind"] == "recycled"]


def _vm_rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for pid %d" % pid)


def _serving(d):
    """/healthz answers and a normal job on the echo pool succeeds."""
    d.assert_serving("echo")


# -- 1. thread leak, soft bound ---------------------------------------------------------------


# Leak tests run twice: ``120ms_jobs``, where each job takes 120 ms (longer than the supervisor's
# 100 ms minimum gap between job-end samples, docs/design.md), and ``back_to_back``, jobs of a few
# ms sent as fast as the client can.
PACING = pytest.mark.parametrize("payload", [b"work:0.12", b"x"],
                                 ids=["120ms_jobs", "back_to_back"])


@PACING
def test_thread_leak_is_recycled_on_max_threads(start_daemon, payload):
    """One leaked thread per job, max_threads = 10."""
    bound = 10
    d = start_daemon({"echo": ECHO, "leak": {
        "handler": R + "thread_leak_one", "max_threads": bound, "sample_interval": "100ms"}})
    d.wait_ready("leak", 1)
    pids, seen = set(), []  # seen: (pid, threads) after each job
    for i in range(25):
        r = _ok(d.job("leak", payload))
        pids.add(r["pid"])
        seen.append((r["pid"], r["threads"]))
        # The live worker, as the supervisor sampled it, never runs more than one job past the
        # bound: at most bound + 1 threads (one leaked thread per job).
        for t in _samples(_pool(d, "leak"), "threads"):
            assert t <= bound + 1, "sampled %d threads with max_threads = %d (job %d): %r; %s" % (
                t, bound, i + 1, seen, _workers_now(d, "leak"))
    worst = max(t for _, t in seen)
    assert worst <= bound + 1, (
        "a worker reached %d threads with max_threads = %d; (pid, threads) after each job: %r; %s"
        % (worst, bound, seen, _workers_now(d, "leak")))
    assert len(pids) >= 2, "25 jobs leaking a thread each never recycled the worker: %r" % seen
    body = _pool(d, "leak")
    assert _recycles(body, "threads", "trend:threads") >= 1, body["recycles_by_cause"]
    events = _recycled_events(body)
    assert events, body["events"]
    assert all(e["detail"] in ("threads", "trend:threads") for e in events), events
    assert body["counters"]["ok"] == 25, body["counters"]
    _serving(d)


# -- 2. threads under a pids limit ------------------------------------------------------------


def test_threads_under_pids_limit_are_resource_exhausted(start_daemon):
    d = start_daemon({"echo": ECHO, "leak": {
        "handler": R + "thread_leak_unbounded", "pids_limit": 40, "retries": 0}})
    [worker] = d.wait_ready("leak", 1)
    pid = int(worker["pid"])
    r = d.job("leak", b"x")
    body = _problem(r, 502, "resource_exhausted")
    assert len(body["attempts"]) == 1, body["attempts"]
    a = body["attempts"][0]
    assert a["outcome"] == "resource_exhausted", a
    assert a["pid"] == pid, a
    assert a["limit"] == "pids", a
    assert a["limit_value"] == 40, a
    assert "pids limit 40" in a["cause"], a
    assert "can't start new thread" in a["error"]["message"], a["error"]
    assert a["error"]["type"] == "RuntimeError", a["error"]
    d.wait_replaced("leak", pid)
    _serving(d)
    r2 = d.http("GET", "/v1/pools/leak", timeout=5).json
    assert r2["counters"]["resource_exhausted"] == 1, r2["counters"]
    # docs/api.md: resource_exhausted attempts add pids_max_events when the cgroup counted
    # refusals (the cause above quotes that counter).
    assert a.get("pids_max_events", 0) >= 1, a


# -- 3. memory-map leak -----------------------------------------------------------------------


@PACING
def test_maps_leak_is_recycled_before_crossing_max_maps(start_daemon, payload):
    bound = 8000
    d = start_daemon({"echo": ECHO, "leak": {
        "handler": R + "maps_leak", "max_maps": bound, "sample_interval": "100ms"}})
    d.wait_ready("leak", 1)
    first_pid, first_recycle_at, seen = None, None, []
    for i in range(1, 31):
        r = _ok(d.job("leak", payload))
        seen.append((r["pid"], r["maps"]))
        if first_pid is None:
            first_pid = r["pid"]
        elif first_recycle_at is None and r["pid"] != first_pid:
            first_recycle_at = i
        # The bound is never crossed, not even by one job: a worker whose next job would cross
        # it takes no further job while its replacement starts.
        assert r["maps"] <= bound, "job %d left %d maps (max_maps %d): %r; %s" % (
            i, r["maps"], bound, seen, _workers_now(d, "leak"))
        sampled = _samples(_pool(d, "leak"), "maps")
        assert all(m <= bound for m in sampled), (
            "job %d: sampled maps %r over max_maps; %s" % (i, sampled, _workers_now(d, "leak")))
    assert first_recycle_at is not None and first_recycle_at <= 9, (
        "first recycle only at job %r: %r" % (first_recycle_at, seen))
    body = _pool(d, "leak")
    assert _recycles(body, "maps", "trend:maps") >= 3, body["recycles_by_cause"]
    assert all(e["detail"] in ("maps", "trend:maps") for e in _recycled_events(body)), body
    assert body["counters"]["ok"] == 30, body["counters"]
    _serving(d)


# -- 4. RSS leak ------------------------------------------------------------------------------


@PACING
def test_rss_leak_is_recycled_on_max_rss(start_daemon, payload):
    d = start_daemon({"echo": ECHO, "leak": {
        "handler": R + "rss_leak", "max_rss": "100MiB", "sample_interval": "100ms"}})
    d.wait_ready("leak", 1)
    seen = []
    for _ in range(20):
        r = _ok(d.job("leak", payload))
        seen.append((r["pid"], r["rss_kb"] // 1024))
        sampled = _samples(_pool(d, "leak"), "rss_bytes")
        assert all(b <= 110 * MiB for b in sampled), (
            "sampled RSS over max_rss + one job (110 MiB): %r; (pid, VmRSS MiB) after each job: "
            "%r; %s" % (sampled, seen, _workers_now(d, "leak")))
    assert len({p for p, _ in seen}) >= 2, "20 x 10 MiB leaked, never recycled: %r" % seen
    worst = max(m for _, m in seen)
    assert worst <= 110, (
        "a worker reached %d MiB with max_rss 100MiB (+10 MiB per job); (pid, VmRSS MiB) after "
        "each job: %r; %s" % (worst, seen, _workers_now(d, "leak")))
    body = _pool(d, "leak")
    assert _recycles(body, "rss", "trend:rss") >= 1, body["recycles_by_cause"]
    assert _recycled_events(body), body["events"]
    assert body["counters"]["ok"] == 20, body["counters"]
    _serving(d)


# -- 5. OOM kill under a memory cgroup --------------------------------------------------------


@pytest.mark.limit(60)
def test_unbounded_allocation_is_oom_killed_in_its_own_cgroup(start_daemon):
    d = start_daemon({"echo": dict(ECHO, workers=1), "hog": {
        "handler": R + "allocate_forever", "memory_limit": "256MiB", "retries": 0}})
    [worker] = d.wait_ready("hog", 1)
    d.wait_ready("echo", 1)
    pid = int(worker["pid"])
    daemon_pid = d.proc.pid
    # The worker sits in its own memory cgroup under the supervisor's; the supervisor does not.
    worker_mem = [p for p in _own_cgroup_dirs(pid) if "/memory/" in p + "/"]
    assert worker_mem and "/bulkhead-%d/" % daemon_pid in worker_mem[0], worker_mem
    assert not any("bulkhead-" in p for p in _own_cgroup_dirs(daemon_pid))
    result = {}

    def hog():
        result["resp"] = d.job("hog", b"x", timeout=30)

    t = threading.Thread(target=hog, daemon=True)
    t.start()
    served, daemon_rss = 0, []
    deadline = time.monotonic() + 30
    # While the hog grows to its limit, the supervisor keeps serving the other pool.
    while t.is_alive() and time.monotonic() < deadline:
        daemon_rss.append(_vm_rss_kb(daemon_pid))
        e = d.job("echo", b"during-oom", timeout=10)
        assert e.status == 200 and e.body == b"during-oom", e
        served += 1
    t.join(5)
    assert not t.is_alive(), "the OOM job never ended"
    daemon_rss.append(_vm_rss_kb(daemon_pid))
    assert served >= 1, "no echo job ran while the hog allocated"
    body = _problem(result["resp"], 502, "oom_killed")
    assert len(body["attempts"]) == 1, body["attempts"]
    a = body["attempts"][0]
    assert a["outcome"] == "oom_killed", a
    assert a["pid"] == pid
    assert a["signal"] == "SIGKILL", a
    assert a["signal_number"] == 9, a
    assert a["limit"] == "memory", a
    assert a["limit_value"] == 256 * MiB, a
    assert a["memory_peak_bytes"] > 200 * MiB, a
    if not os.environ.get("BULKHEAD_SANITIZED"):  # ASan's shadow memory and quarantine
        assert max(daemon_rss) < 50 * 1000, "daemon VmRSS reached %d kB" % max(daemon_rss)
    d.wait_replaced("hog", pid)
    _serving(d)


# -- 6. maps and RSS growing per training fold, in miniature ---------------------------------------


def test_training_folds_leaking_maps_and_rss_all_complete(start_daemon):
    d = start_daemon({"echo": ECHO, "folds": {
        "handler": R + "fold", "max_maps": 3000, "max_rss": "150MiB",
        "sample_interval": "100ms"}})
    d.wait_ready("folds", 1)
    results = []
    for i in range(1, 11):
        r = _ok(d.job("folds", b"fold-%d" % i))
        assert r["fold"] == "fold-%d" % i
        results.append((r["pid"], r["maps"], r["rss_kb"] // 1024))
    body = _pool(d, "folds")
    assert body["counters"]["recycles"] >= 1, body["counters"]
    assert set(body["recycles_by_cause"]) <= {"maps", "trend:maps", "rss", "trend:rss"}, body
    assert len({p for p, _, _ in results}) >= 2, results
    # Far from the kernel's vm.max_map_count (65530), where every mmap starts failing.
    assert max(m for _, m, _ in results) < 10000, results
    assert body["counters"]["ok"] == 10, body["counters"]
    for outcome in ("crashed", "oom_killed", "resource_exhausted", "hung", "timed_out"):
        assert body["counters"][outcome] == 0, body["counters"]
    _serving(d)


# -- 7. hang detection ------------------------------------------------------------------------


HANG = {"hang_after": "2s", "job_timeout": "60s", "retries": 0}


def test_python_deadlock_is_hung_no_progress(start_daemon):
    d = start_daemon({"echo": ECHO, "hang": dict(HANG, handler=R + "deadlock")})
    [worker] = d.wait_ready("hang", 1)
    pid = int(worker["pid"])
    t0 = time.monotonic()
    r = d.job("hang", b"x", timeout=30)
    elapsed = time.monotonic() - t0
    body = _problem(r, 504, "hung")
    assert len(body["attempts"]) == 1, body["attempts"]
    a = body["attempts"][0]
    assert a["outcome"] == "hung" and a["pid"] == pid, a
    assert "no progress" in a["cause"], a
    assert "in deadlock" in a["stacks"], a["stacks"]
    assert 1.9 <= elapsed <= 6.5, "hung after %.1fs with hang_after 2s" % elapsed
    wait_until(lambda: not group_members(pid), 10, "process group %d to be killed" % pid)
    d.wait_replaced("hang", pid)
    _serving(d)


def test_native_busy_loop_holding_gil_is_hung_no_heartbeat(start_daemon):
    # fault_handlers' version also installs a SIGTERM handler that the spin never lets run:
    # only the SIGKILL after the grace ends it.
    d = start_daemon({"echo": ECHO, "hang": dict(
        HANG, handler="fault_handlers:native_spin_holding_gil",
        preload="fault_handlers:install_sigterm_handler")})
    [worker] = d.wait_ready("hang", 1)
    pid = int(worker["pid"])
    t0 = time.monotonic()
    r = d.job("hang", b"x", timeout=30)
    elapsed = time.monotonic() - t0
    body = _problem(r, 504, "hung")
    assert len(body["attempts"]) == 1, body["attempts"]
    a = body["attempts"][0]
    assert a["outcome"] == "hung" and a["pid"] == pid, a
    assert "no heartbeat" in a["cause"], a
    assert "in native_spin_holding_gil" in a["stacks"], a["stacks"]
    assert elapsed <= 8, "hung took %.1fs with hang_after 2s" % elapsed
    wait_until(lambda: not pid_alive(pid), 10, "worker %d to die" % pid)
    wait_until(lambda: not group_members(pid), 10, "process group %d to be killed" % pid)
    d.wait_replaced("hang", pid)
    _serving(d)


def test_slow_job_with_progress_and_cpu_bound_job_are_not_hung(start_daemon):
    d = start_daemon({"echo": ECHO,
                      "slow": dict(HANG, handler=R + "slow_with_progress"),
                      "burn": dict(HANG, handler=R + "cpu_burn")})
    d.wait_ready("slow", 1)
    d.wait_ready("burn", 1)
    results = {}

    def run(pool, payload):
        results[pool] = d.job(pool, payload, timeout=40)

    threads = [threading.Thread(target=run, args=("slow", b"6"), daemon=True),
               threading.Thread(target=run, args=("burn", b"5"), daemon=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(40)
    assert not any(t.is_alive() for t in threads), "a job never ended"
    slow = _ok(results["slow"])
    assert slow["steps"] >= 20, slow
    assert float(results["slow"].headers["x-bulkhead-run-ms"]) >= 5900, results["slow"].headers
    _ok(results["burn"])
    for pool in ("slow", "burn"):
        body = _pool(d, pool)
        assert body["counters"]["hung"] == 0, body["counters"]
        assert body["counters"]["ok"] == 1, body["counters"]
    _serving(d)


# -- 8. start-up hang -------------------------------------------------------------------------


@pytest.mark.limit(60)
def test_preload_hang_is_unavailable_after_startup_timeouts(start_daemon):
    d = start_daemon({"echo": ECHO, "stuck": {
        "handler": R + "ok", "preload": R + "preload_hang", "startup_timeout": "2s"}})
    d.wait_ready("echo", 1)
    t0 = time.monotonic()
    r = d.job("stuck", b"x", timeout=40)
    elapsed = time.monotonic() - t0
    # No attempt ran: the evidence is the last start failure (docs/api.md).
    body = _problem(r, 503, "unavailable", attempts=False)
    assert body["attempts"] == [], body
    assert "start" in body["detail"], body
    last = body["last_start_failure"]
    assert "startup_timeout" in last["cause"], last
    assert "in preload_hang" in last.get("stacks", ""), last
    assert elapsed < 30, "unavailable after %.1fs" % elapsed
    counters = _pool(d, "stuck")["counters"]
    assert counters["start_failures"] >= 3, counters
    _serving(d)


# -- 9. no cgroup left behind -----------------------------------------------------------------

CG_ROOT = "/sys/fs/cgroup"


def _own_cgroup_dirs(pid):
    """The v1 memory and pids cgroup directories of ``pid``."""
    dirs = []
    with open("/proc/%d/cgroup" % pid) as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for c in ("memory", "pids"):
                if c in controllers.split(","):
                    dirs.append(os.path.join(CG_ROOT, c) + path.rstrip("/"))
    return dirs


def _find_named(roots, name):
    found = []
    for root in roots:
        for top, subdirs, _ in os.walk(root):
            for s in subdirs:
                if s == name:
                    found.append(os.path.join(top, s))
    return found


def _cgroups_usable():
    try:
        return all(os.access(d, os.W_OK) for d in _own_cgroup_dirs(os.getpid()))
    except OSError:
        return False


LIMITED = {"handler": R + "ok", "memory_limit": "256MiB", "pids_limit": 40}


@pytest.mark.skipif(not os.path.isdir(CG_ROOT + "/memory"), reason="cgroup v1 memory not mounted")
def test_no_cgroup_left_after_clean_exit(start_daemon):
    if not _cgroups_usable():
        pytest.skip("own cgroup directories not writable")
    d = start_daemon({"echo": ECHO, "lim": LIMITED, "lim2": dict(LIMITED, workers=2)})
    d.wait_ready("lim", 1)
    d.wait_ready("lim2", 2)
    _ok(d.job("lim", b"x"))
    roots = _own_cgroup_dirs(d.proc.pid)
    assert len(roots) == 2, roots
    name = "bulkhead-%d" % d.proc.pid
    live = _find_named(roots, name)
    assert len(live) == 2, "expected %s under the memory and pids hierarchies: %r" % (name, live)
    # One cgroup per worker below them, in both hierarchies.
    for w in d.workers("lim") + d.workers("lim2"):
        paths = _own_cgroup_dirs(int(w["pid"]))
        assert len(paths) == 2 and all("/%s/" % name in p for p in paths), (w, paths)
    assert d.stop() == 0, d.log()[-3000:]
    assert _find_named(roots, name) == [], "cgroups left after exit 0"


@pytest.mark.skipif(not os.path.isdir(CG_ROOT + "/memory"), reason="cgroup v1 memory not mounted")
@pytest.mark.exclusive
@pytest.mark.limit(60)
def test_stale_cgroups_of_a_killed_daemon_are_removed_at_next_start(start_daemon, tmp_path):
    if not _cgroups_usable():
        pytest.skip("own cgroup directories not writable")
    workdir = str(tmp_path / "killed")
    os.makedirs(workdir)
    old = Daemon(workdir, {"lim": dict(LIMITED, workers=2)})
    try:
        old.start()
        workers = [int(w["pid"]) for w in old.wait_ready("lim", 2)]
        roots = _own_cgroup_dirs(old.proc.pid)
        name = "bulkhead-%d" % old.proc.pid
        assert len(_find_named(roots, name)) == 2
        old.proc.send_signal(signal.SIGKILL)
        old.proc.wait(10)
        # Its workers die by PDEATHSIG; their cgroup directories stay behind.
        wait_until(lambda: not any(pid_alive(p) for p in workers), 10,
                   "workers %r to die with their daemon" % workers)
        stale = _find_named(roots, name)
        assert len(stale) == 2, "expected stale %s directories: %r" % (name, stale)
        d = start_daemon({"echo": ECHO, "lim": LIMITED})
        assert "stale cgroup" in d.log(), d.log()
        m = re.search(r"removed (\d+) stale cgroup\(s\)", d.log())
        assert m and int(m.group(1)) >= 1, d.log()
        assert _find_named(roots, name) == [], "stale cgroups of pid %d still there" % (
            old.proc.pid)
        d.wait_ready("lim", 1)
        _ok(d.job("lim", b"x"))
        _serving(d)
    finally:
        old.kill()
        old.close()
