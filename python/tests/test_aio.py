"""bulkhead.AsyncClient / AsyncJobHandle against the in-thread fake of docs/api.md (jobs_fake.py).

Each test runs its coroutine with asyncio.run under a WAIT bound.  Where a test must act while the
client waits, it waits for the fake's own signal (a long-poll blocked in the server) in an
executor thread: nothing sleeps to synchronise.
"""

import asyncio
import os
import subprocess

import pytest

import bulkhead
from bulkhead import aio as A
import jobs_fake
from jobs_fake import OUTCOMES, WAIT, api_error, failure, ok

jobs_daemon = jobs_fake.jobs_daemon                # the fixtures
jobs_unix_daemon = jobs_fake.jobs_unix_daemon

SUBMIT = "/v1/pools/faces/jobs"


def run(fn, *args):
    """``fn(*args)`` (a coroutine function) on a fresh event loop, bounded by WAIT."""
    return asyncio.run(asyncio.wait_for(fn(*args), WAIT))


async def in_executor(fn, *args):
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def finish_on_submit(daemon, answer):
    daemon.on_submit = lambda job: daemon.finish(job.id, answer(job) if callable(answer)
                                                 else answer)


# -- sync calls ----------------------------------------------------------------------------------


def test_call_returns_the_body_over_one_connection(jobs_daemon):
    finish_on_submit(jobs_daemon, lambda job: ok(job.payload[::-1]))

    async def main():
        async with bulkhead.AsyncClient(jobs_daemon.url) as client:
            assert await client.call("faces", b"abc") == b"cba"
            assert await client.call("faces", "héllo") == "héllo".encode()[::-1]
            assert await client.call("faces", bytearray(b"xy")) == b"yx"
            assert await client.call("faces", memoryview(b"xyz")) == b"zyx"
            assert await client.call("faces", b"") == b""
            assert await client.health() == {"status": "ok"}
    run(main)
    assert jobs_daemon.connections == 1
    first = jobs_daemon.requests[0]
    assert (first.method, first.target) == ("POST", SUBMIT)
    assert first.headers["Content-Length"] == "3"
    assert first.headers["Host"] == jobs_daemon.url[len("http://"):]
    assert "X-Bulkhead-Timeout" not in first.headers
    # lean as Client's: octet-stream needs no Content-Type, nothing else is sent
    assert sorted(first.headers.keys()) == ["Content-Length", "Host"]
    assert jobs_daemon.requests[1].headers["Content-Type"] == "text/plain; charset=utf-8"
    jobs_daemon.wait_closed(1)         # closed by the context manager


def test_a_large_body_written_in_pieces_arrives_whole(jobs_daemon):
    # Above two pieces the body goes to the transport a piece at a time (aio._WRITE_PIECE);
    # a size that is no multiple of a piece checks the last, short one.
    finish_on_submit(jobs_daemon, lambda job: ok(job.payload[::-1]))
    body = os.urandom(3 * 1024 * 1024 + 7)

    async def main():
        async with bulkhead.AsyncClient(jobs_daemon.url) as client:
            assert await client.call("faces", body) == body[::-1]
            assert await client.call("faces", b"small") == b"llams"
    run(main)
    assert jobs_daemon.requests[0].body == body


def test_call_json_timeout_and_large_payloads(jobs_daemon):
    finish_on_submit(jobs_daemon, lambda job: ok(job.payload, "application/json")
                     if job.headers.get("Content-Type") == "application/json"
                     else ok(job.payload * 2))
    big = bytes(range(256)) * 8192       # 2 MiB: sent apart from the headers

    async def main():
        async with bulkhead.AsyncClient(jobs_daemon.url, timeout=3) as client:
            assert await client.call_json("faces", {"a": [1]}) == {"a": [1]}
            assert await client.call("faces", big, timeout=0.25) == big * 2
    run(main)
    assert jobs_daemon.requests[0].headers["X-Bulkhead-Timeout"] == "3000ms"
    assert jobs_daemon.requests[0].headers["Content-Type"] == "application/json"
    assert jobs_daemon.requests[1].headers["X-Bulkhead-Timeout"] == "250ms"
    assert jobs_daemon.requests[1].body == big


def test_pools_and_health(jobs_daemon):
    jobs_daemon.overrides[("GET", "/healthz")] = lambda req: (
        503, {"Content-Type": "application/json"}, b'{"status":"shutting_down"}')

    async def main():
        async with bulkhead.AsyncClient(jobs_daemon.url) as client:
            pools = await client.pools()
            health = await client.health()
            return pools, health
    pools, health = run(main)
    assert pools == {"pools": [{"name": "faces"}, {"name": "slow"}]}
    assert health == {"status": "shutting_down"}


@pytest.mark.parametrize("outcome, status, cls, headers", OUTCOMES)
def test_same_exceptions_as_the_blocking_client(jobs_daemon, outcome, status, cls, headers):
    attempt = {"attempt": 1, "worker": "faces-2", "pid": 4242, "outcome": outcome,
               "signal": "SIGABRT", "signal_number": 6, "stderr_tail": "a\nb\n",
               "error": {"type": "ValueError", "message": "bad", "traceback": "Traceback\n"}}
    finish_on_submit(jobs_daemon, failure(outcome, status, headers=headers, attempts=[attempt]))
    with bulkhead.Client(jobs_daemon.url) as client:
        with pytest.raises(cls) as blocking:
            client.call("faces", b"x")

    async def main():
        async with bulkhead.AsyncClient(jobs_daemon.url) as client:
            with pytest.raises(cls) as via_call:
                await client.call("faces", b"x")
            handle = await client.submit("faces", b"x")
            with pytest.raises(cls) as via_result:
                await handle.result(timeout=WAIT)
            assert (await handle.status())["outcome"] == outcome
            return via_call.value, via_result.value
    for exc in run(main):
        assert type(exc) is type(blocking.value)
        assert str(exc) == str(blocking.value)
        assert (exc.status, exc.attempts, exc.retry_after) == \
            (blocking.value.status, blocking.value.attempts, blocking.value.retry_after)


@pytest.mark.parametrize("status, kind, cls", [
    (404, "unknown_pool", bulkhead.UnknownPool), (400, "bad_request", bulkhead.BadRequest),
    (413, "payload_too_large", bulkhead.PayloadTooLarge), (404, "not_found", bulkhead.ApiError)])
def test_api_errors(jobs_daemon, status, kind, cls):
    jobs_daemon.overrides[("POST", SUBMIT)] = lambda req: api_error(status, kind)

    async def main():
        async with bulkhead.AsyncClient(jobs_daemon.url) as client:
            with pytest.raises(cls) as info:
                await client.call("faces", b"x")
            return info.value
    exc = run(main)
    assert exc.status == status and exc.error == kind


# -- async jobs ----------------------------------------------------------------------------------


def test_submit_result_status_and_idempotency(jobs_daemon):
    async def main():
        async with bulkhead.AsyncClient(jobs_daemon.url) as client:
            handle = await client.submit("faces", b"x", timeout=2, idempotency_key="k")
            again = await client.submit("faces", b"x", idempotency_key="k")
            assert isinstance(handle, bulkhead.AsyncJobHandle)
            assert (handle.id, handle.pool, handle.duplicate) == ("1", "faces", False)
            assert (again.id, again.duplicate) == ("1", True)
            assert handle.location == "/v1/jobs/1"
            assert await handle.status() == {"job": "1", "state": "queued"}
            waiter = asyncio.ensure_future(handle.result())
            await in_executor(jobs_daemon.wait_polling, 1)
            jobs_daemon.finish("1", ok(b'{"v": 1}', "application/json"))
            assert await waiter == b'{"v": 1}'
            assert await handle.result_json() == {"v": 1}       # kept: no new request
            assert await handle.status() == {"job": "1", "state": "finished", "outcome": "ok",
                                             "http_status": 200, "runs": 1}
            assert await handle.cancel() is False
    run(main)
    submit = jobs_daemon.requests[0]
    assert submit.target == SUBMIT + "?wait=0"
    assert submit.headers["Idempotency-Key"] == "k"
    assert submit.headers["X-Bulkhead-Timeout"] == "2000ms"
    assert len(jobs_daemon.jobs) == 1
    polls = [r.target for r in jobs_daemon.requests_to("GET", "/v1/jobs/1")]
    assert polls == ["/v1/jobs/1", "/v1/jobs/1?wait=30s"]


def test_submit_json_and_job_handles_for_ids(jobs_daemon):
    finish_on_submit(jobs_daemon, lambda job: ok(job.payload, "application/json"))

    async def main():
        async with bulkhead.AsyncClient(jobs_daemon.url) as client:
            handle = await client.submit_json("faces", [1, 2])
            assert await client.job(handle.id).result_json(timeout=WAIT) == [1, 2]
            with pytest.raises(bulkhead.ApiError) as info:
                await client.job("999").status()
            assert info.value.error == "unknown_job" and info.value.status == 404
            with pytest.raises(bulkhead.BadRequest):
                await client.job("x").result()
            with pytest.raises(ValueError):
                client.job("")
            with pytest.raises(ValueError):
                await client.submit("faces", b"x", idempotency_key="a\r\nb")
    run(main)


def test_cancel_and_result_timeout(jobs_daemon):
    async def main():
        async with bulkhead.AsyncClient(jobs_daemon.url) as client:
            handle = await client.submit("faces", b"x")
            with pytest.raises(bulkhead.ClientTimeout) as info:
                await handle.result(timeout=0.1)
            assert info.value.job_may_have_run
            assert (await handle.status())["state"] == "queued"      # still there
            assert await handle.cancel() is True
            with pytest.raises(bulkhead.Cancelled):
                await handle.result(timeout=WAIT)
            with pytest.raises(bulkhead.ApiError):
                await client.job("999").cancel()
    run(main)
    assert [r.method for r in jobs_daemon.requests_to("DELETE", "/v1/jobs/1")] == ["DELETE"]


def test_a_daemon_that_does_not_long_poll_is_not_flooded(jobs_daemon):
    jobs_daemon.honour_wait = False

    async def main():
        async with bulkhead.AsyncClient(jobs_daemon.url) as client:
            handle = await client.submit("faces", b"x")
            with pytest.raises(bulkhead.ClientTimeout):
                await handle.result(timeout=0.5)
    run(main)
    assert 1 <= len(jobs_daemon.requests_to("GET", "/v1/jobs/1")) <= 20


# -- the connection pool -----------------------------------------------------------------------


def test_a_waiting_result_does_not_block_other_requests(jobs_daemon):
    pending = jobs_daemon.add_job()
    finish_on_submit(jobs_daemon, ok(b"quick"))

    async def main():
        async with bulkhead.AsyncClient(jobs_daemon.url, max_connections=2) as client:
            waiter = asyncio.ensure_future(client.job(pending.id).result())
            await in_executor(jobs_daemon.wait_polling, 1)
            assert await client.call("faces", b"x") == b"quick"   # while the poll waits
            assert not waiter.done()
            jobs_daemon.finish(pending.id, ok(b"slow"))
            assert await waiter == b"slow"
    run(main)
    assert jobs_daemon.connections == 2


def test_one_connection_serializes_requests(jobs_daemon):
    pending = jobs_daemon.add_job()
    finish_on_submit(jobs_daemon, ok(b"quick"))

    async def main():
        async with bulkhead.AsyncClient(jobs_daemon.url, max_connections=1) as client:
            waiter = asyncio.ensure_future(client.job(pending.id).result())
            await in_executor(jobs_daemon.wait_polling, 1)
            call = asyncio.ensure_future(client.call("faces", b"x"))
            jobs_daemon.finish(pending.id, ok(b"slow"))
            return await asyncio.gather(waiter, call)
    assert run(main) == [b"slow", b"quick"]
    assert jobs_daemon.connections == 1
    assert [r.method for r in jobs_daemon.requests] == ["GET", "POST"]


def test_concurrent_calls_stay_within_max_connections(jobs_daemon):
    finish_on_submit(jobs_daemon, lambda job: ok(job.payload))

    async def main():
        async with bulkhead.AsyncClient(jobs_daemon.url, max_connections=3) as client:
            results = await asyncio.gather(*(client.call("faces", b"%d" % i) for i in range(20)))
            assert results == [b"%d" % i for i in range(20)]
    run(main)
    assert 1 <= jobs_daemon.connections <= 3
    assert len(jobs_daemon.requests) == 20


def test_cancelling_a_waiting_result_drops_its_connection(jobs_daemon):
    pending = jobs_daemon.add_job()

    async def main():
        async with bulkhead.AsyncClient(jobs_daemon.url, max_connections=1) as client:
            waiter = asyncio.ensure_future(client.job(pending.id).result())
            await in_executor(jobs_daemon.wait_polling, 1)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            assert await client.health() == {"status": "ok"}     # a fresh connection
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(client.job(pending.id).result(), 0.05)
            assert await client.health() == {"status": "ok"}
    run(main)
    assert jobs_daemon.connections == 3
    assert not jobs_daemon.jobs[pending.id].finished          # the job itself is untouched


def test_client_is_usable_from_several_event_loops(jobs_daemon):
    client = bulkhead.AsyncClient(jobs_daemon.url)

    async def ping():
        return await client.health()
    assert run(ping) == {"status": "ok"}
    assert run(ping) == {"status": "ok"}         # a new loop: a new connection
    run(client.close)
    assert jobs_daemon.connections == 2


# -- construction and import -----------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [{"max_connections": 0}, {"max_connections": True},
                                    {"timeout": 0}, {"timeout": "5"}, {"url": "ftp://x"}])
def test_bad_arguments(kwargs):
    with pytest.raises((ValueError, TypeError)):
        bulkhead.AsyncClient(**kwargs)


def test_ipv6_host_header():
    assert A.AsyncClient("http://[::1]:8787")._host == "[::1]:8787"


def test_public_names():
    assert bulkhead.AsyncClient is A.AsyncClient
    assert bulkhead.AsyncJobHandle is A.AsyncJobHandle
    for name in ("AsyncClient", "AsyncJobHandle"):
        assert name in bulkhead.__all__ and name in dir(bulkhead)


def test_importing_bulkhead_does_not_load_the_clients():
    from conftest import PY_DIR, PYTHON
    code = ("import sys, bulkhead\n"
            "for name in ('asyncio', 'http.client', 'bulkhead.aio', 'bulkhead.client'):\n"
            "    assert name not in sys.modules, name\n"
            "bulkhead.JobHandle\n"
            "assert 'bulkhead.client' in sys.modules and 'bulkhead.aio' not in sys.modules\n"
            "bulkhead.AsyncClient\n"
            "assert 'bulkhead.aio' in sys.modules\n")
    subprocess.run([PYTHON, "-c", code], env={"PYTHONPATH": PY_DIR, "PYTHONDONTWRITEBYTECODE": "1"},
                   timeout=15, check=True)
