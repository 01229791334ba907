"""`standby`: extra READY workers that never take a job while they stand by, and take a worker's
place at once when it crashes or retires, in spawn and zygote mode, with real processes."""

import pytest

from conftest import pid_alive, run_bulkhead, wait_until


def _standby_pids(d, pool):
    return [int(w["pid"]) for w in d.workers(pool)
            if w["state"] == "standby" and w.get("standby") and w.get("pid")]


def _wait_full(d, pool, serving=1, standby=1, exclude=()):
    """Waits until the pool has `serving` idle workers and `standby` ready standbys, none of them
    in `exclude`; returns (idle pids, standby pids)."""
    def full():
        ws = d.workers(pool)
        pids = {int(w["pid"]) for w in ws if w.get("pid")}
        idle = d.idle_pids(pool)
        spare = _standby_pids(d, pool)
        if pids & set(exclude) or len(idle) < serving or len(spare) < standby:
            return None
        return idle, spare
    return wait_until(full, 60, "pool %s at %d idle + %d standby" % (pool, serving, standby))


def _pool(handler, mode, **keys):
    pool = {"handler": handler, "workers": 1, "standby": 1, "startup_timeout": "60s"}
    if mode == "zygote":
        pool.update({"mode": "zygote", "preload": "preload_value"})
    pool.update(keys)
    return pool


@pytest.mark.parametrize("mode", ["spawn", "zygote"])
def test_a_crashed_jobs_retry_runs_on_the_standby_that_was_already_ready(start_daemon, mode):
    d = start_daemon({"once": _pool("crash_once", mode, retries=2)})
    (serving,), (standby,) = _wait_full(d, "once")
    status = d.pool_status("once")
    assert status["standby_target"] == 1 and status["ready_workers"] == 1, status
    p = run_bulkhead("status", "--url", d.url)
    assert p.returncode == 0, p.stderr.decode()
    row = [line.split() for line in p.stdout.decode().splitlines() if line.startswith("once ")]
    assert row and row[0][1] == "1/1+1", p.stdout.decode()   # ready/target + ready standbys

    r = d.job("once", b"standby-" + mode.encode())
    assert r.status == 200, r
    assert r.headers["x-bulkhead-attempts"] == "2", r
    result = r.json
    assert result["crashed_pid"] == serving
    assert result["pid"] == standby, "the retry ran on a new process, not on the standby"

    # The standby is now the serving worker, and a new standby stands behind it.
    idle, spare = _wait_full(d, "once", exclude=[serving])
    assert idle == [standby]
    assert spare != [standby]
    status = d.pool_status("once")
    assert status["counters"]["standby_promotions"] == 1, status["counters"]
    assert any(e["kind"] == "promoted" for e in status["events"]), status["events"]
    wait_until(lambda: not pid_alive(serving), 10, "the crashed worker to be gone")
    metrics = d.http("GET", "/metrics", timeout=5).body.decode()
    assert 'bulkhead_standby_promotions_total{pool="once"} 1' in metrics
    assert 'bulkhead_workers{pool="once",state="standby"} 1' in metrics
    assert 'bulkhead_workers{pool="once",state="idle"} 1' in metrics


def test_a_standby_never_runs_a_job_while_it_stands_by(start_daemon):
    d = start_daemon({"who": _pool("whoami", "spawn", workers=2)})
    _, (standby,) = _wait_full(d, "who", serving=2)
    pids = set()
    for i in range(20):
        r = d.job("who", b"job %d" % i)
        assert r.status == 200, r
        pids.add(r.json["pid"])
    assert standby not in pids
    spare = [w for w in d.workers("who") if w.get("standby")]
    assert len(spare) == 1 and spare[0]["jobs_served"] == 0, spare
    assert d.pool_status("who")["counters"]["standby_promotions"] == 0


def test_a_recycled_worker_hands_over_to_the_standby_without_a_gap(start_daemon):
    d = start_daemon({"who": _pool("whoami", "spawn", max_jobs=2)})
    (serving,), (standby,) = _wait_full(d, "who")
    assert d.job("who", b"1").json["pid"] == serving
    assert d.job("who", b"2").json["pid"] == serving  # the second job reaches max_jobs
    # The next job runs on the standby at once: no wait for a replacement to start.
    assert d.job("who", b"3").json["pid"] == standby
    wait_until(lambda: not pid_alive(serving), 20, "the recycled worker to stop")
    idle, spare = _wait_full(d, "who", exclude=[serving])
    assert idle == [standby] and spare
    status = d.pool_status("who")
    assert status["counters"]["recycles"] == 1
    assert status["counters"]["worker_deaths"] == 0, "a recycled worker stops, it does not die"
