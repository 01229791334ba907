"""bulkhead._aio_connection: the asyncio client's protocol, fed as asyncio's socket transport
feeds a ``BufferedProtocol`` (``get_buffer``, a ``recv_into`` of at most that buffer,
``buffer_updated``), and over real sockets.

The protocol parses as it reads and, for a large ``Content-Length`` body, has the transport read
the rest straight into the ``bytes`` object the call returns.  These tests cut answers at every
kind of boundary (head and body in one read, the body's first bytes with the head, one byte at a
time) and check the body byte for byte, its type, that the in-place path was the one taken, and
what a connection that ends mid-body gives.
"""

import asyncio
import os
import socket
import threading

import pytest

import bulkhead
from bulkhead import _aio_connection as C
from bulkhead._h1 import BadResponse
from conftest import WAIT


class FakeTransport(object):
    """The transport calls the protocol makes; records pauses and writes."""

    def __init__(self):
        self.closing = False
        self.reading = True
        self.written = []

    def is_closing(self):
        return self.closing

    def pause_reading(self):
        self.reading = False

    def resume_reading(self):
        self.reading = True

    def write(self, data):
        self.written.append(bytes(data))

    def get_extra_info(self, name):
        return None

    def close(self):
        self.closing = True

    abort = close


def feed(conn, data, step):
    """Delivers ``data`` as reads of at most ``step`` bytes, each no larger than the buffer the
    protocol offers (as ``recv_into`` would)."""
    at = 0
    while at < len(data):
        buf = conn.get_buffer(-1)
        count = min(step, len(buf), len(data) - at)
        buf[:count] = data[at:at + count]
        conn.buffer_updated(count)
        at += count


def answer(body, extra=b""):
    return (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Bulkhead-Outcome: ok\r\n%s\r\n"
            % (len(body), extra)) + body


def new_connection():
    conn = C.Connection(0, None)
    conn.connection_made(FakeTransport())
    return conn


def read_fed(conn, data, step):
    """The ``Answer`` ``read_answer`` returns while ``data`` is fed in reads of ``step``."""
    async def main():
        conn.h1.start_request("POST")
        task = asyncio.ensure_future(conn.read_answer())
        await asyncio.sleep(0)
        feed(conn, data, step)
        return await asyncio.wait_for(task, WAIT)
    return asyncio.run(main())


@pytest.fixture
def in_place(monkeypatch):
    """Counts the bodies read in place (``new_bytes`` calls)."""
    made = []
    original = C.new_bytes

    def counting(size):
        made.append(size)
        return original(size)
    monkeypatch.setattr(C, "new_bytes", counting)
    return made


@pytest.mark.parametrize("step", [1 << 30, 256 * 1024, 65536 + 13, 4096])
def test_a_large_body_is_read_in_place_whatever_the_reads(in_place, step):
    body = os.urandom(C._DIRECT_FROM * 3 + 5)
    conn = new_connection()
    got = read_fed(conn, answer(body), step)
    assert type(got.body) is bytes and got.body == body
    assert got.response.status == 200 and got.keep_alive
    assert in_place == [len(body)]          # the whole body, the bytes read with the head too
    assert conn.h1.reusable


def test_a_body_under_the_threshold_takes_the_parser_path(in_place):
    body = os.urandom(C._DIRECT_FROM - 1)
    got = read_fed(new_connection(), answer(body), 65536)
    assert got.body == body and in_place == []


def test_one_byte_at_a_time_small_answer():
    got = read_fed(new_connection(), answer(b"hello", b"X-A: b\r\n"), 1)
    assert got.body == b"hello" and got.response.getheader("x-a") == "b"


def test_without_ctypes_a_large_body_still_arrives_whole(monkeypatch):
    monkeypatch.setattr(C, "new_bytes", lambda size: None)
    body = os.urandom(C._DIRECT_FROM * 2)
    assert read_fed(new_connection(), answer(body), 100000).body == body


def test_the_end_of_the_connection_mid_body_fails_the_answer(in_place):
    body = os.urandom(C._DIRECT_FROM * 2)
    conn = new_connection()

    async def main():
        conn.h1.start_request("POST")
        task = asyncio.ensure_future(conn.read_answer())
        await asyncio.sleep(0)
        feed(conn, answer(body)[:C._DIRECT_FROM + 300], 65536)
        conn.eof_received()
        conn.connection_lost(None)
        with pytest.raises(BadResponse, match="bytes before the end of the body"):
            await asyncio.wait_for(task, WAIT)
    asyncio.run(main())
    assert in_place == [len(body)] and conn._body is None
    assert conn.dropped()


def test_an_answer_whole_before_it_is_awaited_is_returned_at_once():
    conn = new_connection()

    async def main():
        conn.h1.start_request("GET")
        feed(conn, answer(b"early"), 1 << 20)    # read while the request was being written
        return await asyncio.wait_for(conn.read_answer(), WAIT)
    assert asyncio.run(main()).body == b"early"


def test_unasked_bytes_pause_reading_until_an_answer_is_awaited():
    conn = new_connection()
    conn.h1.start_request("GET")
    data = answer(b"y" * (300 * 1024))
    feed(conn, data[:C.HEAD_LIMIT * 2 + 10], 65536)
    assert not conn.transport.reading        # bounded: nothing read on while nobody waits

    async def main():
        task = asyncio.ensure_future(conn.read_answer())
        await asyncio.sleep(0)
        assert conn.transport.reading
        feed(conn, data[C.HEAD_LIMIT * 2 + 10:], 65536)
        return await asyncio.wait_for(task, WAIT)
    assert asyncio.run(main()).body == b"y" * (300 * 1024)


def test_drain_waits_while_writing_is_paused_and_fails_when_lost():
    conn = new_connection()

    async def main():
        await conn.drain()                        # not paused: returns at once
        conn.pause_writing()
        waiting = asyncio.ensure_future(conn.drain())
        await asyncio.sleep(0)
        assert not waiting.done()
        conn.resume_writing()
        await asyncio.wait_for(waiting, WAIT)
        conn.pause_writing()
        waiting = asyncio.ensure_future(conn.drain())
        await asyncio.sleep(0)
        conn.connection_lost(ConnectionResetError("reset"))
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(waiting, WAIT)
        with pytest.raises(ConnectionResetError):
            await conn.drain()
    asyncio.run(main())


# -- over real sockets ---------------------------------------------------------------------------


class OneAnswerServer(object):
    """Reads one request head per connection and writes ``answers`` (a list of byte strings,
    each written with its own sendall), then closes if ``close``."""

    def __init__(self, answers, close=False):
        self.answers = answers
        self.close = close
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = "http://127.0.0.1:%d" % self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    head += chunk
                for part in self.answers:
                    conn.sendall(part)
                if not self.close:
                    conn.recv(1)        # the client closes

    def stop(self):
        self.sock.close()


@pytest.mark.parametrize("split", ["head apart", "with the head"])
def test_a_64_mib_answer_over_tcp(split, in_place):
    body = os.urandom(1 << 20) * 64
    data = answer(body)
    head_len = len(data) - len(body)
    cut = head_len if split == "head apart" else head_len + 12345
    server = OneAnswerServer([data[:cut], data[cut:]])

    async def main():
        async with bulkhead.AsyncClient(server.url) as client:
            return await client.call("faces", b"x")
    try:
        got = asyncio.run(asyncio.wait_for(main(), WAIT))
    finally:
        server.stop()
    assert type(got) is bytes and len(got) == len(body) and got == body
    assert in_place == [len(body)]


def test_a_connection_closed_mid_body_is_a_transport_error_not_resent():
    body_len = 4 << 20
    server = OneAnswerServer([answer(b"z" * body_len)[:1 << 20]], close=True)

    async def main():
        async with bulkhead.AsyncClient(server.url) as client:
            with pytest.raises(bulkhead.TransportError) as info:
                await client.call("faces", b"x")
            return info.value
    try:
        error = asyncio.run(asyncio.wait_for(main(), WAIT))
    finally:
        server.stop()
    assert error.job_may_have_run and "not sent again" in str(error)


# -- the client's connection slots ---------------------------------------------------------------


def test_slots_go_first_come_first_served_and_survive_cancellation():
    from bulkhead.aio import _Slots

    async def main():
        slots = _Slots(1)
        slots.free -= 1                               # taken
        order = []

        async def take(name):
            await slots.wait()
            order.append(name)

        first = asyncio.ensure_future(take("first"))
        second = asyncio.ensure_future(take("second"))
        third = asyncio.ensure_future(take("third"))
        await asyncio.sleep(0)
        first.cancel()                                # cancelled while waiting: leaves the line
        await asyncio.sleep(0)
        slots.release()                               # to "second", never to the counter
        await asyncio.wait_for(second, WAIT)
        assert order == ["second"] and slots.free == 0
        slots.release()                               # handed to "third" ...
        third.cancel()                                # ... which is cancelled before it runs
        with pytest.raises(asyncio.CancelledError):
            await third
        assert slots.free == 1 and order == ["second"]   # its slot came back
        slots.free -= 1
        fourth = asyncio.ensure_future(take("fourth"))
        fifth = asyncio.ensure_future(take("fifth"))
        await asyncio.sleep(0)
        fourth.cancel()                               # cancelled, and before it runs again ...
        slots.release()                               # ... a release drops it from the line
        with pytest.raises(asyncio.CancelledError):
            await fourth
        await asyncio.wait_for(fifth, WAIT)
        assert order == ["second", "fifth"] and slots.free == 0
    asyncio.run(main())
