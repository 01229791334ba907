"""Answers that come before the request is sent completely, and answers too large to read.

The daemon refuses a body over its ``max_request_body`` from the request's headers: it answers
413 and closes without reading the rest, so the client's send breaks (EPIPE, ECONNRESET).  The
client must report that 413 (``PayloadTooLarge``), not the broken pipe.  ``EarlyRefuser`` below
does what the daemon does, over TCP and Unix sockets.
"""

import asyncio
import json
import re
import socket
import threading

import pytest

import bulkhead
from conftest import WAIT

JOBS = "/v1/pools/faces/jobs"
BIG = b"x" * (32 << 20)   # well over every socket buffer: the send cannot complete on its own
PROBLEM_413 = json.dumps({"type": "about:blank", "title": "payload too large", "status": 413,
                          "error": "payload_too_large",
                          "detail": "request body exceeds the server's limit of 1024 bytes"})


class EarlyRefuser(object):
    """Answers requests with a body of at most ``limit`` bytes with 200 ``ok`` (keep-alive).  For
    a larger one it reads only the head, answers 413 (or nothing, with ``answer=False``) and
    closes with the body unread, which resets the connection."""

    def __init__(self, unix_path=None, limit=1024, answer=True):
        self.limit = limit
        self.answer = answer
        self.lengths = []          # Content-Length of each request head read
        self.connections = 0
        self._lock = threading.Lock()
        if unix_path is None:
            self.sock = socket.socket()
            self.sock.bind(("127.0.0.1", 0))
            self.url = "http://127.0.0.1:%d" % self.sock.getsockname()[1]
        else:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.bind(unix_path)
            self.url = "unix:" + unix_path
        self.sock.listen(8)
        self._threads = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn):
        with conn:
            conn.settimeout(WAIT)
            buffered = b""
            while True:
                while b"\r\n\r\n" not in buffered:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffered += data
                head, _, buffered = buffered.partition(b"\r\n\r\n")
                match = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
                length = int(match.group(1)) if match else 0
                with self._lock:
                    self.lengths.append(length)
                if length > self.limit:
                    if self.answer:
                        body = PROBLEM_413.encode()
                        conn.sendall(b"HTTP/1.1 413 Payload Too Large\r\nConnection: close\r\n"
                                     b"Content-Type: application/problem+json\r\n"
                                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                    return      # closes with the body unread
                while len(buffered) < length:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffered += data
                buffered = buffered[length:]
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                             b"X-Bulkhead-Outcome: ok\r\n\r\nok")

    def close(self):
        self.sock.close()
        for thread in self._threads:
            thread.join(WAIT)


@pytest.fixture(params=["tcp", "unix"])
def refuser(request, tmp_path):
    server = EarlyRefuser(str(tmp_path / "b.sock") if request.param == "unix" else None)
    yield server
    server.close()


def run(coroutine_fn):
    return asyncio.run(asyncio.wait_for(coroutine_fn(), WAIT))


def check_413(exc):
    assert type(exc) is bulkhead.PayloadTooLarge
    assert isinstance(exc, bulkhead.BadRequest) and isinstance(exc, bulkhead.ApiError)
    assert exc.status == 413 and exc.error == "payload_too_large"
    assert "limit of 1024 bytes" in str(exc)
    assert "pipe" not in str(exc).lower()


# -- blocking client ---------------------------------------------------------------------------


def test_an_early_413_is_the_answer_not_a_broken_pipe(refuser):
    with bulkhead.Client(refuser.url) as client:
        with pytest.raises(bulkhead.PayloadTooLarge) as info:
            client.call("faces", BIG)
        check_413(info.value)
        assert client.call("faces", b"small") == b"ok"      # a fresh connection afterwards
    assert refuser.lengths == [len(BIG), 5]                 # the big one was sent once


def test_an_early_413_on_a_reused_connection_is_not_resent(refuser):
    with bulkhead.Client(refuser.url) as client:
        assert client.call("faces", b"first") == b"ok"
        with pytest.raises(bulkhead.PayloadTooLarge) as info:
            client.call("faces", BIG, timeout=5)
        check_413(info.value)
    assert refuser.lengths == [5, len(BIG)]
    assert refuser.connections == 1


def test_a_broken_send_without_an_answer_is_still_a_transport_error(tmp_path):
    server = EarlyRefuser(answer=False)
    try:
        with bulkhead.Client(server.url) as client:
            with pytest.raises(bulkhead.TransportError) as info:
                client.call("faces", BIG)
        assert not isinstance(info.value, bulkhead.ClientTimeout)
        assert server.lengths == [len(BIG)]
    finally:
        server.close()


# -- asyncio client ----------------------------------------------------------------------------


def test_async_client_reads_the_early_413(refuser):
    async def main():
        async with bulkhead.AsyncClient(refuser.url) as client:
            assert await client.call("faces", b"first") == b"ok"
            with pytest.raises(bulkhead.PayloadTooLarge) as info:
                await client.call("faces", BIG)
            check_413(info.value)
            assert await client.call("faces", b"after") == b"ok"
    run(main)
    assert refuser.lengths == [5, len(BIG), 5]


def test_async_client_fresh_connection_early_413(refuser):
    async def main():
        async with bulkhead.AsyncClient(refuser.url) as client:
            with pytest.raises(bulkhead.PayloadTooLarge) as info:
                await client.call("faces", BIG, timeout=5)
            check_413(info.value)
    run(main)
    assert refuser.lengths == [len(BIG)]


# -- answers too large for either client -----------------------------------------------------


def raw(data):
    def write(req):
        req.wfile.write(data)
        req.wfile.flush()
        return None
    return write


TOO_LARGE = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 101\r\n\r\n" + b"y" * 101,
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n" + b"y" * 64 + b"\r\n40\r\n"
    + b"y" * 64 + b"\r\n0\r\n\r\n",
    b"HTTP/1.0 200 OK\r\n\r\n" + b"y" * 300,
]


@pytest.mark.parametrize("answer", TOO_LARGE)
def test_async_client_refuses_an_answer_over_max_response_body(daemon, answer):
    daemon.routes[("POST", JOBS)] = raw(answer)
    daemon.routes[("GET", "/healthz")] = (200, {"Content-Type": "application/json"},
                                          b'{"status":"ok"}')

    async def main():
        async with bulkhead.AsyncClient(daemon.url, max_response_body=100) as client:
            with pytest.raises(bulkhead.ResponseTooLarge) as info:
                await client.call("faces", b"x")
            assert await client.health() == {"status": "ok"}    # the client carries on
            return info.value
    exc = run(main)
    assert isinstance(exc, bulkhead.TransportError)
    assert exc.limit == 100 and exc.job_may_have_run
    assert "max_response_body (100 bytes)" in str(exc)


def test_async_client_reads_answers_up_to_max_response_body(daemon):
    daemon.routes[("POST", JOBS)] = (200, {"Content-Type": "application/octet-stream"},
                                     b"z" * 100)

    async def main():
        async with bulkhead.AsyncClient(daemon.url, max_response_body=100) as client:
            return await client.call("faces", b"x")
    assert run(main) == b"z" * 100
    assert bulkhead.AsyncClient("http://h:1").max_response_body == 1 << 30


@pytest.mark.parametrize("bad", [-1, 1.5, True, "1"])
def test_max_response_body_is_checked(bad):
    with pytest.raises(ValueError):
        bulkhead.AsyncClient("http://h:1", max_response_body=bad)
    assert bulkhead.AsyncClient("http://h:1", max_response_body=None).max_response_body is None


@pytest.mark.parametrize("answer", TOO_LARGE)
def test_blocking_client_refuses_an_answer_over_max_response_body(daemon, answer):
    daemon.routes[("POST", JOBS)] = raw(answer)
    daemon.routes[("GET", "/healthz")] = (200, {"Content-Type": "application/json"},
                                          b'{"status":"ok"}')
    with bulkhead.Client(daemon.url, max_response_body=100) as client:
        with pytest.raises(bulkhead.ResponseTooLarge) as info:
            client.call("faces", b"x")
        assert client.health() == {"status": "ok"}    # the client carries on
    exc = info.value
    assert isinstance(exc, bulkhead.TransportError)
    assert exc.limit == 100 and exc.job_may_have_run
    assert "max_response_body (100 bytes)" in str(exc)
    assert len(daemon.requests) == 2          # the job was not sent again


def test_blocking_client_reads_answers_up_to_max_response_body(daemon):
    daemon.routes[("POST", JOBS)] = (200, {"Content-Type": "application/octet-stream"},
                                     b"z" * 100)
    with bulkhead.Client(daemon.url, max_response_body=100) as client:
        assert client.call("faces", b"x") == b"z" * 100
    assert bulkhead.Client("http://h:1").max_response_body == 1 << 30
    assert bulkhead.Client("http://h:1", max_response_body=None).max_response_body is None


@pytest.mark.parametrize("bad", [-1, 1.5, True, "1"])
def test_blocking_max_response_body_is_checked(bad):
    with pytest.raises(ValueError):
        bulkhead.Client("http://h:1", max_response_body=bad)
