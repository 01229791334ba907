"""Retries on fresh workers, and a poison request inside a concurrent batch."""

import threading
import time

import pytest

from conftest import pid_alive, wait_until


def test_always_crashing_job_gets_every_attempt_on_a_different_worker(start_daemon):
    d = start_daemon({"echo": {"handler": "echo"},
                      "crash": {"handler": "segfault", "workers": 2, "retries": 2,
                                "poison_after": 0}})
    d.wait_ready("crash")
    t0 = time.monotonic()
    r = d.job("crash", b"x")
    elapsed = time.monotonic() - t0
    assert r.status == 502, r
    body = r.json
    assert body["outcome"] == "crashed"
    attempts = body["attempts"]
    assert len(attempts) == 3, attempts
    assert [a["attempt"] for a in attempts] == [1, 2, 3]
    for a in attempts:
        assert a["outcome"] == "crashed"
        assert a["signal"] == "SIGSEGV"
    pids = [a["pid"] for a in attempts]
    assert len(set(pids)) == 3, "attempts must run on different workers: %r" % pids
    assert elapsed < 20, "3 crashing attempts took %.1fs" % elapsed
    counters = d.pool_status("crash")["counters"]
    assert counters["crashed"] >= 1
    assert counters["retries"] >= 2
    d.assert_serving("echo")
    d.wait_replaced("crash", pids)


def test_crash_once_job_succeeds_on_second_attempt(start_daemon):
    d = start_daemon({"once": {"handler": "crash_once", "workers": 2, "retries": 2}})
    d.wait_ready("once")
    r = d.job("once", b"job-A")
    assert r.status == 200, r
    assert r.headers["x-bulkhead-outcome"] == "ok"
    assert r.headers["x-bulkhead-attempts"] == "2"
    result = r.json
    assert result["pid"] != result["crashed_pid"], "the retry must run on a fresh worker"
    wait_until(lambda: not pid_alive(result["crashed_pid"]), 10, "the crashed worker to be gone")
    # The same payload now succeeds at once.
    r2 = d.job("once", b"job-A")
    assert r2.status == 200 and r2.headers["x-bulkhead-attempts"] == "1", r2


def test_crash_with_no_retries_has_one_attempt(start_daemon):
    d = start_daemon({"once": {"handler": "crash_once", "retries": 0}})
    r = d.job("once", b"job-B")
    assert r.status == 502, r
    assert len(r.json["attempts"]) == 1


def test_poison_request_in_concurrent_batch(start_daemon):
    d = start_daemon({"mixed": {"handler": "by_payload", "workers": 2, "retries": 1}})
    d.wait_ready("mixed")
    bulkhead = pytest.importorskip("bulkhead")

    n_threads, per_thread = 4, 6
    poison = (1, 2)  # thread 1, its third request
    results = {}
    errors = []

    def worker(t):
        try:
            c = d.new_client()
            for i in range(per_thread):
                payload = b"crash" if (t, i) == poison else ("job-%d-%d" % (t, i)).encode()
                try:
                    results[(t, i)] = ("ok", c.call("mixed", payload))
                except bulkhead.JobFailed as exc:
                    results[(t, i)] = ("failed", exc)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(45)
        assert not t.is_alive(), "a client thread did not finish within its bound"
    assert not errors, errors
    assert len(results) == n_threads * per_thread
    for key, (kind, value) in sorted(results.items()):
        if key == poison:
            assert kind == "failed", value
            # Two different workers died of it: crashed, and quarantined (poison_after = 2).
            assert value.outcome == "crashed"
            assert value.quarantined is True
            assert len(value.attempts) == 2
            assert len({a["worker"] for a in value.attempts}) == 2
            assert all(a["signal"] == "SIGSEGV" for a in value.attempts)
        else:
            assert kind == "ok", (key, value)
            assert value == ("job-%d-%d" % key).encode()
    d.wait_ready("mixed")
    r = d.job("mixed", b"after the batch")
    assert r.status == 200 and r.body == b"after the batch"


def test_poison_is_quarantined_and_refused_fast_unless_overridden(start_daemon):
    d = start_daemon({"mixed": {"handler": "by_payload", "workers": 2, "retries": 3}})
    d.wait_ready("mixed")
    first = d.job("mixed", b"crash")
    assert (first.status, first.outcome) == (502, "crashed"), first
    assert first.json["quarantined"] is True, first
    assert len(first.json["attempts"]) == 2
    fingerprint = first.json["fingerprint"]
    assert fingerprint.startswith("fnv1a64:")
    pids_before = [w["pid"] for w in d.pool_status("mixed")["workers"]]
    again = d.job("mixed", b"crash")
    assert (again.status, again.outcome) == (422, "poison"), again
    assert "quarantined" in again.json["detail"]
    assert [w["pid"] for w in d.pool_status("mixed")["workers"]] == pids_before, \
        "a refused poison job must not touch a worker"
    listed = d.get_json("/v1/quarantine")["quarantine"]
    assert [q["fingerprint"] for q in listed] == [fingerprint]
    assert all(a["signal"] == "SIGSEGV" for a in listed[0]["attempts"])
    assert d.job("mixed", b"fine").status == 200


def test_breaker_opens_routes_to_fallback_probes_and_closes(start_daemon, tmp_path):
    flag = tmp_path / "healthy"
    d = start_daemon({
        "fragile": {"handler": "crash_unless_flag", "workers": 1, "retries": 0,
                    "poison_after": 0, "fallback": "simple",
                    "breaker": {"failures": 2, "window": "30s", "cooldown": "1s"},
                    "env": {"BULKHEAD_TEST_FLAG": str(flag)}},
        "simple": {"handler": "echo", "workers": 1}})
    d.wait_ready("fragile")
    for i in range(2):
        r = d.job("fragile", b"a%d" % i)
        assert r.outcome == "crashed", r
    assert d.pool_status("fragile")["breaker"] == "open"
    routed = d.job("fragile", b"to-fallback")
    assert routed.status == 200, routed
    assert routed.body == b"to-fallback"
    assert routed.headers.get("x-bulkhead-pool") == "simple"
    assert routed.headers.get("x-bulkhead-fallback-from") == "fragile"
    flag.write_text("ok")
    # After the cooldown the next job is the probe; its success closes the breaker.
    def probe_closes():
        r = d.job("fragile", b"probe")
        return r.status == 200 and d.pool_status("fragile")["breaker"] == "closed"
    from conftest import wait_until
    wait_until(probe_closes, 15, "the probe to close the breaker")
    events = d.get_json("/v1/pools/fragile")["events"]
    kinds = [e["kind"] for e in events]
    assert "breaker_opened" in kinds and "breaker_closed" in kinds, kinds
