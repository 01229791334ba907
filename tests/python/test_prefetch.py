"""`prefetch_below`: while jobs queue, a busy worker is sent its next job before it answers the
one it runs. With real workers: the delivered job waits as "queued" and starts on the answer, on
the same process; a worker that crashes, or hangs and is killed, first sends it back unstarted,
with no attempt counted; a cancel waits for its start; and many small jobs through one worker all
answer right."""

import json
import os
import threading

import pytest

from conftest import wait_until

# A long limit: these tests hold the job ahead as long as they need to (prefetch is judged by the
# job ahead's time so far), and a loaded machine must not turn prefetch off under them.
POOL = {"handler": "gate", "workers": 1, "prefetch_below": "30s", "retries": 0,
        "queue_limit": 1000}


def _pool(mode="spawn"):
    pool = dict(POOL)
    if mode == "zygote":
        pool.update({"mode": "zygote", "preload": "preload_value", "startup_timeout": "60s"})
    return pool


def _counters(d, pool="p"):
    return d.pool_status(pool)["counters"]


def _release(d, name):
    with open(os.path.join(d.scratch, name), "w"):
        pass


def _submit(d, body, headers=None):
    r = d.http("POST", "/v1/pools/p/jobs?wait=0", body=body.encode(), headers=headers)
    assert r.status == 202, r
    return r.json["job"]


def _result(d, job):
    r = d.http("GET", "/v1/jobs/%s?wait=30s" % job, timeout=40)
    assert r.status != 202, r
    return r


def _warm(d):
    """Short jobs first: prefetch waits for the pool's run time to be known."""
    for _ in range(6):
        assert d.job("p", b"quick").status == 200


def _busy_with_one_behind(d, ahead, headers=None):
    """Submits `ahead` (it holds the worker), then a quick job; waits until that one sits at the
    worker as its next job. Returns (ahead's id, the delivered job's id)."""
    first = _submit(d, ahead, headers)
    wait_until(lambda: any(w.get("job") == first for w in d.workers("p")), 20,
               "job %s running" % first)
    second = _submit(d, "quick")
    wait_until(lambda: any(w.get("next_job") == second for w in d.workers("p")), 20,
               "job %s delivered behind %s" % (second, first))
    return first, second


def test_a_delivered_job_reads_queued_and_starts_on_the_same_worker_when_it_answers(
        start_daemon):
    d = start_daemon({"p": POOL})
    d.wait_ready("p")
    _warm(d)
    first, second = _busy_with_one_behind(d, "wait:go")
    state = d.http("GET", "/v1/jobs/%s" % second)
    assert state.status == 202 and state.json["state"] == "queued", state
    assert _counters(d)["prefetched"] >= 1
    _release(d, "go")
    a, b = _result(d, first), _result(d, second)
    assert a.status == 200 and b.status == 200, (a, b)
    assert a.json["pid"] == b.json["pid"], "the job sent ahead ran on the worker it was sent to"
    assert b.headers.get("x-bulkhead-attempts") == "1", b.headers
    assert _counters(d)["prefetch_returns"] == 0


@pytest.mark.parametrize("mode", ["spawn", "zygote"])
def test_a_worker_that_crashes_first_sends_the_delivered_job_back_unstarted(start_daemon, mode):
    d = start_daemon({"p": _pool(mode)})
    d.wait_ready("p")
    _warm(d)
    first, second = _busy_with_one_behind(d, "crash:go")
    crashed_pid = int(d.workers("p")[0]["pid"])
    _release(d, "go")
    a = _result(d, first)
    assert a.status != 200 and a.json["outcome"] == "crashed", a
    b = _result(d, second)
    assert b.status == 200, b
    assert b.json["pid"] != crashed_pid, "it ran on the replacement"
    assert b.headers.get("x-bulkhead-attempts") == "1", \
        "its delivery to the crashed worker counted no attempt: %s" % b.headers
    assert _counters(d)["prefetch_returns"] == 1
    events = d.pool_status("p")  # the events are in the per-pool view
    view = d.get_json("/v1/pools/p")
    requeued = [e for e in view["events"] if e["kind"] == "requeued"]
    assert requeued and "job %s " % second in requeued[0]["detail"], view["events"]
    assert events["counters"]["crashed"] == 1
    assert d.job("p", b"quick").status == 200


def test_a_job_delivered_behind_a_hang_runs_elsewhere_once_the_hang_is_killed(start_daemon):
    d = start_daemon({"p": POOL})
    d.wait_ready("p")
    _warm(d)
    # Never released: only its own 1 s timeout ends it.
    first, second = _busy_with_one_behind(d, "wait:never", {"X-Bulkhead-Timeout": "1s"})
    hung_pid = int(d.workers("p")[0]["pid"])
    a = _result(d, first)
    assert a.status == 504 and a.json["outcome"] == "timed_out", a
    b = _result(d, second)
    assert b.status == 200 and b.json["pid"] != hung_pid, b
    assert b.headers.get("x-bulkhead-attempts") == "1", b.headers
    assert _counters(d)["prefetch_returns"] == 1


def test_cancelling_a_delivered_job_waits_for_its_start_and_spares_the_job_ahead(start_daemon):
    d = start_daemon({"p": POOL})
    d.wait_ready("p")
    _warm(d)
    first, second = _busy_with_one_behind(d, "wait:go")
    pid = int(d.workers("p")[0]["pid"])
    r = d.http("DELETE", "/v1/jobs/%s" % second)
    assert r.status == 202, r
    _release(d, "go")
    a, b = _result(d, first), _result(d, second)
    assert a.status == 200 and a.json["pid"] == pid, a
    assert b.status == 409 and b.json["outcome"] == "cancelled", b
    d.wait_replaced("p", [pid])  # killed as it started, as a running job's cancel is
    assert d.job("p", b"quick").status == 200


def test_many_small_jobs_through_one_worker_all_answer_right(start_daemon):
    d = start_daemon({"p": POOL})
    d.wait_ready("p")
    _warm(d)
    results, errors = {}, []

    def caller(i):
        c = d.new_client()
        try:
            for k in range(40):
                body = "n%d-%d" % (i, k)
                results[body] = json.loads(c.call("p", body.encode()))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:3]
    assert len(results) == 480
    assert all(r["payload"] == body for body, r in results.items()), "each its own answer"
    pids = {r["pid"] for r in results.values()}
    assert len(pids) == 1, "one worker, never replaced: %s" % pids
    counters = _counters(d)
    assert counters["ok"] >= 480 and counters["prefetch_returns"] == 0, counters
    assert counters["prefetched"] > 0, "12 callers on one worker must have queued"
