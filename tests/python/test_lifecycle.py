"""Worker lifecycle seen from outside: start failures, recycling, workers killed by someone else."""

import os
import signal
import threading

from conftest import pid_alive, wait_until


def test_start_failure_is_unavailable_with_evidence(start_daemon):
    d = start_daemon({"nomod": {"handler": "no_such_module:handle"},
                      "echo": {"handler": "echo"}})
    r = d.job("nomod", b"x", timeout=20)
    assert r.status == 503, r
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json
    assert body["outcome"] == "unavailable"
    assert int(r.headers["retry-after"]) >= 0
    assert "no_such_module" in body["detail"]
    failure = body.get("last_start_failure") or {}
    assert failure.get("error", {}).get("type") == "ModuleNotFoundError", body
    assert d.pool_status("nomod")["counters"]["start_failures"] >= 1
    # The other pool does not care.
    d.assert_serving("echo")


def test_preload_failure_is_unavailable(start_daemon):
    d = start_daemon({"badpre": {"handler": "echo", "preload": "raise_on_preload"}})
    r = d.job("badpre", b"x", timeout=20)
    assert r.status == 503, r
    assert r.json["outcome"] == "unavailable"
    assert "preload exploded" in r.body.decode()


def test_max_jobs_recycles_the_worker(start_daemon):
    d = start_daemon({"rec": {"handler": "whoami", "max_jobs": 2}})
    [w] = d.wait_ready("rec")
    first = w["pid"]
    pids = [d.job("rec", b"").json["pid"] for _ in range(2)]
    assert pids == [first, first]
    new = wait_until(lambda: [p for p in d.idle_pids("rec") if p != first], 20,
                     "a replacement for the worker that served max_jobs")
    wait_until(lambda: not pid_alive(first), 10, "the retired worker to exit")
    assert d.pool_status("rec")["counters"]["recycles"] >= 1
    assert d.job("rec", b"").json["pid"] == new[0]


def test_idle_worker_killed_from_outside_is_replaced(start_daemon):
    d = start_daemon({"echo": {"handler": "echo", "workers": 2}})
    victims = [int(w["pid"]) for w in d.wait_ready("echo")]
    os.kill(victims[0], signal.SIGKILL)
    d.wait_replaced("echo", victims[0])
    assert d.pool_status("echo")["counters"]["worker_deaths"] >= 1
    d.assert_serving("echo")


def test_busy_worker_killed_from_outside_is_retried(start_daemon):
    d = start_daemon({"slow": {"handler": "slow", "workers": 2, "retries": 1}})
    d.wait_ready("slow")
    box = {}
    t = threading.Thread(target=lambda: box.update(r=d.job("slow", b"sleep:1", timeout=30)),
                         daemon=True)
    t.start()
    busy = wait_until(lambda: [w for w in d.workers("slow") if w["state"] == "busy"], 10,
                      "a busy worker")
    os.kill(int(busy[0]["pid"]), signal.SIGKILL)
    t.join(30)
    assert not t.is_alive()
    r = box["r"]
    assert r.status == 200, r
    assert r.body == b"slept"
    assert r.headers["x-bulkhead-attempts"] == "2"
    d.wait_replaced("slow", int(busy[0]["pid"]))


def test_payload_above_max_payload_is_413(start_daemon):
    d = start_daemon({"small": {"handler": "echo", "max_payload": "1KiB"}})
    r = d.job("small", b"x" * 2000)
    assert r.status == 413, r
    assert r.json["error"] == "payload_too_large"
    ok = d.job("small", b"x" * 1000)
    assert ok.status == 200 and ok.body == b"x" * 1000
