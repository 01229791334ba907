"""bulkhead.AsyncClient's transport against the in-thread fake of docs/api.md (jobs_fake.py):
connections the server closes, answers cut short (resent only when that is safe), client-side
timeouts, Unix sockets, and how answers are read (framing, malformed answers, problem headers).
The helpers and the rest of the client's tests are test_aio.py's.
"""

import asyncio
import json
import socket

import pytest

import bulkhead
import jobs_fake
from jobs_fake import WAIT, ok, problem_doc
from test_aio import SUBMIT, finish_on_submit, in_executor, run

jobs_daemon = jobs_fake.jobs_daemon                # the fixtures
jobs_unix_daemon = jobs_fake.jobs_unix_daemon


# -- transport -------------------------------------------------------------------------------------


def test_idle_connection_closed_by_the_server_is_replaced(jobs_daemon):
    finish_on_submit(jobs_daemon, ok())
    jobs_daemon.close_after_response = True     # without saying so

    async def main():
        async with bulkhead.AsyncClient(jobs_daemon.url) as client:
            for i in range(3):
                assert await client.call("faces", b"x") == b"result"
                await in_executor(jobs_daemon.wait_closed, i + 1)
    run(main)
    assert len(jobs_daemon.requests) == 3       # each job sent exactly once
    assert jobs_daemon.connections == 3


def test_connection_close_header_is_honoured(jobs_daemon):
    jobs_daemon.overrides[("GET", "/healthz")] = lambda req: (
        200, {"Content-Type": "application/json", "Connection": "close"}, b'{"status":"ok"}')

    async def main():
        async with bulkhead.AsyncClient(jobs_daemon.url) as client:
            for _ in range(3):
                await client.health()
    run(main)
    assert jobs_daemon.connections == 3


def test_connection_lost_mid_response_is_not_resent(jobs_daemon):
    def break_mid_response(req):
        req.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
        req.wfile.flush()
        return None
    jobs_daemon.overrides[("POST", SUBMIT)] = break_mid_response

    async def main():
        async with bulkhead.AsyncClient(jobs_daemon.url) as client:
            with pytest.raises(bulkhead.TransportError) as info:
                await client.call("faces", b"x")
            assert info.value.job_may_have_run and "not sent again" in str(info.value)
            assert len(jobs_daemon.requests) == 1
            del jobs_daemon.overrides[("POST", SUBMIT)]
            finish_on_submit(jobs_daemon, ok())
            assert await client.call("faces", b"x") == b"result"     # recovers
    run(main)


def test_connection_closed_without_answer_is_not_resent_but_gets_are(jobs_daemon):
    lost = []

    def flaky_pools(req):
        lost.append(req)
        return None if len(lost) == 1 else jobs_daemon.handle_default(req)
    jobs_daemon.overrides[("POST", SUBMIT)] = lambda req: None
    jobs_daemon.overrides[("GET", "/v1/pools")] = flaky_pools

    async def main():
        async with bulkhead.AsyncClient(jobs_daemon.url) as client:
            await client.health()                       # a reused connection from here on
            with pytest.raises(bulkhead.TransportError) as info:
                await client.call("faces", b"x")
            assert info.value.job_may_have_run
            assert "pools" in await client.pools()
    run(main)
    assert len(jobs_daemon.requests_to("POST", SUBMIT)) == 1
    assert len(lost) == 2


def test_submit_with_key_is_resent_once(jobs_daemon):
    answers = []

    def lose_first_answer(req):
        answers.append(jobs_daemon.handle_default(req))
        return answers[-1] if len(answers) == 2 else None     # loses the 1st and 3rd answers
    jobs_daemon.overrides[("POST", SUBMIT + "?wait=0")] = lose_first_answer

    async def main():
        async with bulkhead.AsyncClient(jobs_daemon.url) as client:
            handle = await client.submit("faces", b"x", idempotency_key="k")
            assert handle.duplicate is True
            with pytest.raises(bulkhead.TransportError):
                await client.submit("faces", b"x")      # without a key: not resent
    run(main)
    assert len(jobs_daemon.jobs) == 2 and len(jobs_daemon.requests) == 3


def test_client_side_timeout(jobs_daemon):
    def stall(req):
        jobs_daemon.release.wait(30)
        return None
    jobs_daemon.overrides[("POST", SUBMIT)] = stall

    async def main():
        async with bulkhead.AsyncClient(jobs_daemon.url) as client:
            client.timeout_margin = 0.05
            with pytest.raises(bulkhead.ClientTimeout) as info:
                await client.call("faces", b"x", timeout=0.05)
            assert info.value.job_may_have_run
            assert await client.health() == {"status": "ok"}
    run(main)
    assert jobs_daemon.requests[0].headers["X-Bulkhead-Timeout"] == "50ms"


def test_cannot_connect():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()

    async def main():
        async with bulkhead.AsyncClient("http://127.0.0.1:%d" % port) as client:
            with pytest.raises(bulkhead.TransportError) as info:
                await client.call("faces", b"x")
            return info.value
    exc = run(main)
    assert not exc.job_may_have_run
    assert isinstance(exc.__cause__, ConnectionRefusedError)


def test_missing_unix_socket(tmp_path):
    async def main():
        async with bulkhead.AsyncClient("unix:" + str(tmp_path / "nope.sock")) as client:
            with pytest.raises(bulkhead.TransportError):
                await client.health()
    run(main)


def test_unix_socket(jobs_unix_daemon):
    async def main():
        async with bulkhead.AsyncClient(jobs_unix_daemon.url) as client:
            handle = await client.submit("faces", b"x")
            waiter = asyncio.ensure_future(handle.result(timeout=WAIT))
            await in_executor(jobs_unix_daemon.wait_polling, 1)
            jobs_unix_daemon.finish(handle.id, ok(b"over unix"))
            assert await waiter == b"over unix"
    run(main)
    assert jobs_unix_daemon.requests[0].headers["Host"] == "localhost"


# -- reading answers ---------------------------------------------------------------------


def raw(data):
    def write(req):
        req.wfile.write(data)
        req.wfile.flush()
        return None
    return write


@pytest.mark.parametrize("answer, body", [
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Bulkhead-Outcome: ok\r\n\r\n"
     b"3\r\nabc\r\n4;ext=1\r\ndefg\r\n0\r\nTrailer: x\r\n\r\n", b"abcdefg"),
    (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi", b"hi"),
    (b"HTTP/1.0 200 OK\r\n\r\nuntil the end", b"until the end"),
    (b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nX-Folded: a\r\n b\r\n\r\nabc", b"abc"),
])
def test_http_framing(jobs_daemon, answer, body):
    jobs_daemon.overrides[("POST", SUBMIT)] = raw(answer)

    async def main():
        async with bulkhead.AsyncClient(jobs_daemon.url) as client:
            return await client.call("faces", b"x")
    assert run(main) == body


@pytest.mark.parametrize("answer", [
    b"garbage\r\n\r\n",
    b"HTTP/1.1 abc OK\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\nab",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"HTTP/1.1 200 OK\r\nX" + b"x" * (70 * 1024) + b": y\r\n\r\n",
])
def test_malformed_answers_are_transport_errors(jobs_daemon, answer):
    jobs_daemon.overrides[("POST", SUBMIT)] = raw(answer)

    async def main():
        async with bulkhead.AsyncClient(jobs_daemon.url) as client:
            with pytest.raises(bulkhead.TransportError) as info:
                await client.call("faces", b"x")
            return info.value
    assert run(main).job_may_have_run


def test_problem_headers_are_read_case_insensitively(jobs_daemon):
    doc = problem_doc("overloaded", 429)
    del doc["outcome"]
    body = json.dumps(doc).encode()
    jobs_daemon.overrides[("POST", SUBMIT)] = raw(
        b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/problem+json\r\n"
        b"x-bulkhead-outcome: overloaded\r\nretry-after: 4\r\ncontent-length: %d\r\n\r\n%s"
        % (len(body), body))

    async def main():
        async with bulkhead.AsyncClient(jobs_daemon.url) as client:
            with pytest.raises(bulkhead.Overloaded) as info:
                await client.call("faces", b"x")
            return info.value
    assert run(main).retry_after == 4.0
