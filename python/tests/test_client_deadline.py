"""Deadlines, $BULKHEAD_URL and the evidence fields of exceptions (docs/api.md), in both clients,
against the in-process HTTP peer of conftest.py."""

import asyncio
import json
import socket
import struct

import pytest

import bulkhead
from bulkhead import _http as H
from bulkhead import errors as E
from conftest import WAIT

PROBLEM = "application/problem+json"
JOBS = "/v1/pools/faces/jobs"


def ok(body=b"result"):
    return (200, {"Content-Type": "application/octet-stream", "X-Bulkhead-Outcome": "ok"}, body)


def problem(outcome, status, **extra):
    doc = {"type": "https://bulkhead.dev/problems/%s" % outcome, "title": outcome,
           "status": status, "detail": "the %s detail" % outcome, "outcome": outcome,
           "job": "17", "pool": "faces", "attempts": []}
    doc.update(extra)
    return (status, {"Content-Type": PROBLEM, "X-Bulkhead-Outcome": outcome},
            json.dumps(doc).encode())


def run(coroutine_fn):
    return asyncio.run(asyncio.wait_for(coroutine_fn(), WAIT))


# -- $BULKHEAD_URL ---------------------------------------------------------------------------


def test_bulkhead_url_is_the_default_of_both_clients(daemon, monkeypatch):
    daemon.routes[("POST", JOBS)] = ok(b"found by env")
    monkeypatch.setenv("BULKHEAD_URL", daemon.url)
    with bulkhead.Client() as client:
        assert client.url == daemon.url
        assert client.call("faces", b"x") == b"found by env"

    async def main():
        async with bulkhead.AsyncClient() as client:
            assert client.url == daemon.url
            return await client.call("faces", b"x")
    assert run(main) == b"found by env"
    assert len(daemon.requests) == 2


def test_bulkhead_url_over_a_unix_socket(unix_daemon, monkeypatch):
    unix_daemon.routes[("POST", JOBS)] = ok(b"unix by env")
    monkeypatch.setenv("BULKHEAD_URL", unix_daemon.url)
    with bulkhead.Client() as client:
        assert client.call("faces", b"x") == b"unix by env"


def test_an_explicit_url_wins_and_an_empty_variable_is_unset(daemon, monkeypatch):
    monkeypatch.setenv("BULKHEAD_URL", "http://127.0.0.1:1")
    daemon.routes[("POST", JOBS)] = ok()
    with bulkhead.Client(daemon.url) as client:
        assert client.call("faces", b"x") == b"result"
    monkeypatch.setenv("BULKHEAD_URL", "")
    assert bulkhead.Client().url == "http://127.0.0.1:8787"
    assert bulkhead.AsyncClient().url == "http://127.0.0.1:8787"
    monkeypatch.setenv("BULKHEAD_URL", "ftp://nope")
    with pytest.raises(ValueError):
        bulkhead.Client()


# -- deadline headers and the wait for the answer --------------------------------------------


def test_a_call_with_a_timeout_sends_its_deadline(daemon):
    daemon.routes[("POST", JOBS)] = ok()
    with bulkhead.Client(daemon.url) as client:
        client.call("faces", b"x", timeout=2.5)
        client.call("faces", "text", timeout=0.25)
        client.call("faces", b"x")
    first, second, third = daemon.requests
    assert first.headers["X-Bulkhead-Deadline"] == "2500ms"
    assert first.headers["X-Bulkhead-Timeout"] == "2500ms"   # older daemons bound the run
    assert second.headers["X-Bulkhead-Deadline"] == "250ms"
    assert "X-Bulkhead-Deadline" not in third.headers
    assert "X-Bulkhead-Timeout" not in third.headers


def test_the_client_default_timeout_is_a_deadline_too(daemon):
    daemon.routes[("POST", JOBS)] = ok()
    with bulkhead.Client(daemon.url, timeout=3) as client:
        client.call("faces", b"x")
    assert daemon.requests[0].headers["X-Bulkhead-Deadline"] == "3000ms"


def test_a_submit_timeout_stays_a_run_limit(daemon):
    # An async job waits in the queue by design: its timeout bounds the run, not the wait.
    daemon.routes[("POST", JOBS + "?wait=0")] = (
        202, {"Content-Type": "application/json", "Location": "/v1/jobs/5"}, b'{"job": "5"}')
    with bulkhead.Client(daemon.url) as client:
        assert client.submit("faces", b"x", timeout=4).id == "5"
    headers = daemon.requests[0].headers
    assert headers["X-Bulkhead-Timeout"] == "4000ms"
    assert "X-Bulkhead-Deadline" not in headers


@pytest.mark.parametrize("timeout, margin, expected", [
    (None, 2.0, None), (2.5, 2.0, 4.5), (0.25, 2.0, 2.25), (100, 2.0, 110.0), (100, 0, 110.0),
    (5, 1.0, 6.0)])
def test_answer_timeout(timeout, margin, expected):
    assert H.answer_timeout(timeout, margin) == pytest.approx(expected)


def read_bound(sock):
    """How long each read on ``sock`` may block: Python's socket timeout, or the kernel's
    SO_RCVTIMEO (which the blocking client uses on 64-bit Linux, to spare a poll() per read)."""
    if sock.gettimeout() is not None:
        return sock.gettimeout()
    sec, usec = struct.unpack("@ll", sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16))
    return None if sec == usec == 0 else sec + usec / 1e6


def test_the_socket_waits_longer_than_the_deadline(daemon):
    seen = []
    with bulkhead.Client(daemon.url) as client:
        def route(req):
            seen.append(read_bound(client._sock))   # the client is blocked reading
            return ok()
        daemon.routes[("POST", JOBS)] = route
        client.call("faces", b"x", timeout=30)
        client.call("faces", b"x", timeout=0.5)
        client.call("faces", b"x")
    assert seen == [pytest.approx(33.0), pytest.approx(2.5), None]


def test_a_deadline_answered_late_is_still_the_typed_outcome(daemon):
    # The daemon answers a deadline only once the worker is gone (stacks, SIGTERM grace): a bit
    # after it.  That answer must reach the caller as JobTimedOut, not as a ClientTimeout.
    def late(req):
        daemon.release.wait(0.3)    # stands for the daemon's kill sequence
        return problem("timed_out", 504, stage="running")
    daemon.routes[("POST", JOBS)] = late
    with bulkhead.Client(daemon.url) as client:
        with pytest.raises(bulkhead.JobTimedOut) as info:
            client.call("faces", b"x", timeout=0.1)
    assert info.value.stage == "running"


def test_async_client_sends_the_deadline_and_waits_longer(daemon):
    daemon.routes[("POST", JOBS)] = ok()
    waits = []

    async def main():
        async with bulkhead.AsyncClient(daemon.url, timeout=1) as client:
            send = client._send

            async def spy(method, path, request, timeout, idempotent):
                waits.append(timeout)
                return await send(method, path, request, timeout, idempotent)
            client._send = spy
            await client.call("faces", b"x")
            await client.call("faces", b"x", timeout=40)
    run(main)
    assert [r.headers["X-Bulkhead-Deadline"] for r in daemon.requests] == ["1000ms", "40000ms"]
    assert [r.headers["X-Bulkhead-Timeout"] for r in daemon.requests] == ["1000ms", "40000ms"]
    assert waits == [pytest.approx(3.0), pytest.approx(44.0)]


# -- .stage and .quarantined -----------------------------------------------------------------


@pytest.mark.parametrize("stage, expected", [("queued", "queued"), ("running", "running"),
                                             (None, None), (3, None), ("", None)])
def test_timed_out_stage(daemon, stage, expected):
    extra = {} if stage is None else {"stage": stage}
    daemon.routes[("POST", JOBS)] = problem("timed_out", 504, **extra)
    with bulkhead.Client(daemon.url) as client:
        with pytest.raises(bulkhead.JobTimedOut) as info:
            client.call("faces", b"x", timeout=1)
    assert info.value.stage == expected
    assert ("stage: %s" % expected in str(info.value)) == (expected is not None)
    assert info.value.quarantined is False


@pytest.mark.parametrize("outcome, status, cls", [
    ("crashed", 502, bulkhead.WorkerCrashed), ("hung", 504, bulkhead.WorkerHung),
    ("oom_killed", 502, bulkhead.OomKilled), ("timed_out", 504, bulkhead.JobTimedOut),
    ("resource_exhausted", 502, bulkhead.ResourceExhausted)])
def test_a_job_that_got_its_payload_quarantined_keeps_its_outcome(daemon, outcome, status, cls):
    daemon.routes[("POST", JOBS)] = problem(outcome, status, quarantined=True)
    with bulkhead.Client(daemon.url) as client:
        with pytest.raises(bulkhead.JobFailed) as info:
            client.call("faces", b"x")
    assert type(info.value) is cls
    assert info.value.quarantined is True
    assert "quarantined" in str(info.value)


@pytest.mark.parametrize("value, expected", [(None, False), (False, False), ("yes", False),
                                             (1, False), (True, True)])
def test_quarantined_is_a_bool_defaulting_to_false(value, expected):
    doc = {"outcome": "crashed"}
    if value is not None:
        doc["quarantined"] = value
    exc = E.error_from_problem(502, doc)
    assert type(exc) is E.WorkerCrashed and exc.quarantined is expected


def test_poison_is_a_refusal_of_a_quarantined_payload():
    exc = E.error_from_problem(422, {"outcome": "poison", "detail": "refused"})
    assert type(exc) is E.Poisoned and exc.quarantined is True
    assert E.error_from_problem(422, {"outcome": "poison", "quarantined": False}).quarantined \
        is False


def test_every_outcome_has_its_class_and_the_fields():
    # One class per outcome of docs/api.md's table (ok is no exception).
    assert set(E.OUTCOME_EXCEPTIONS) == {
        "handler_error", "crashed", "hung", "timed_out", "oom_killed", "resource_exhausted",
        "poison", "overloaded", "unavailable", "cancelled"}
    assert len(set(E.OUTCOME_EXCEPTIONS.values())) == len(E.OUTCOME_EXCEPTIONS)
    for outcome, cls in E.OUTCOME_EXCEPTIONS.items():
        exc = E.error_from_problem(500, {"outcome": outcome})
        assert type(exc) is cls and exc.outcome == outcome
        assert isinstance(exc.quarantined, bool)
    assert E.error_from_problem(504, {"outcome": "timed_out"}).stage is None


def test_stage_and_quarantined_survive_pickling():
    import pickle
    exc = E.error_from_problem(504, {"outcome": "timed_out", "stage": "queued",
                                     "quarantined": True})
    copy = pickle.loads(pickle.dumps(exc))
    assert copy.stage == "queued" and copy.quarantined is True


def test_job_handle_result_raises_with_the_fields(daemon):
    daemon.routes[("GET", "/v1/jobs/9?wait=30s")] = problem("crashed", 502, quarantined=True)
    daemon.routes[("GET", "/v1/jobs/10?wait=30s")] = problem("timed_out", 504, stage="queued")
    with bulkhead.Client(daemon.url) as client:
        with pytest.raises(bulkhead.WorkerCrashed) as crashed:
            client.job("9").result()
        with pytest.raises(bulkhead.JobTimedOut) as timed_out:
            client.job("10").result()
    assert crashed.value.quarantined is True
    assert timed_out.value.stage == "queued"


def test_async_client_raises_with_the_fields(daemon):
    daemon.routes[("POST", JOBS)] = problem("timed_out", 504, stage="queued", quarantined=True)

    async def main():
        async with bulkhead.AsyncClient(daemon.url) as client:
            with pytest.raises(bulkhead.JobTimedOut) as info:
                await client.call("faces", b"x", timeout=1)
            return info.value
    exc = run(main)
    assert exc.stage == "queued" and exc.quarantined is True


# -- allow_poison ----------------------------------------------------------------------------


def test_allow_poison_sends_its_header(daemon):
    daemon.routes[("POST", JOBS)] = ok()
    daemon.routes[("POST", JOBS + "?wait=0")] = (
        202, {"Content-Type": "application/json"}, b'{"job": "6"}')
    with bulkhead.Client(daemon.url) as client:
        client.call("faces", b"x", allow_poison=True)
        client.call("faces", b"x")
        client.submit("faces", b"x", allow_poison=True)

    async def main():
        async with bulkhead.AsyncClient(daemon.url) as client:
            await client.call("faces", b"x", allow_poison=True)
    run(main)
    assert [r.headers.get("X-Bulkhead-Allow-Poison") for r in daemon.requests] == \
        ["1", None, "1", "1"]
