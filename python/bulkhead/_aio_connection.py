"""One keep-alive connection of ``bulkhead.AsyncClient``: an ``asyncio.BufferedProtocol`` that
feeds what the socket reads straight to the connection's HTTP/1.1 state (``bulkhead._h1``) and
wakes the one request waiting for its answer.

Why a protocol and not ``asyncio`` streams: a ``StreamReader`` copies every read into its own
buffer, then again into the bytes ``read()`` returns, and pauses and resumes the transport every
128 KiB of a large body; each ``read()`` is one more future and one more loop wake-up.  Here a
small answer costs one ``recv_into`` into a kept buffer, one copy into the parser, and one future
set when the answer is whole.  A large ``Content-Length`` body (``_DIRECT_FROM`` or more) is read
by the transport straight into the ``bytes`` object the call returns (``bulkhead._fresh_bytes``:
on huge pages where the kernel allows), with no copy after the socket's.

Writes go to the transport; ``drain`` waits while the transport says its buffer is full
(``pause_writing``), as ``StreamWriter.drain`` does.  Nothing here decides what to send again or
what an answer means: that is ``bulkhead.aio``'s.
"""

import asyncio
import os
import socket
from select import POLLIN, poll

from ._fresh_bytes import new_bytes
from ._h1 import (
    HEAD_LIMIT, NEED_DATA, BadResponse, ClientConnection, ProtocolError, read_whole)

_READ_BUFFER = 256 * 1024
_DIRECT_FROM = 256 * 1024      # a body still due of this size or more is read in place
# A larger body goes to the transport in pieces of this size, each written once the socket took
# the one before: a body handed over whole is copied into the transport's buffer first, which
# made a 64 MiB call 1.5x slower.
_WRITE_PIECE = 256 * 1024
_EARLY_ANSWER_MAX = 1 << 20     # an early answer is a short problem document


class Connection(asyncio.BufferedProtocol):
    """One socket's transport and its HTTP/1.1 state (``h1``).  ``generation`` says when it was
    opened (before a client's ``close()``, it is not used again)."""

    def __init__(self, generation, max_body):
        self.generation = generation
        self.h1 = ClientConnection(max_body)
        self.transport = None
        self._buffer = bytearray(_READ_BUFFER)   # calloc'd: pages only as answers fill it
        self._view = memoryview(self._buffer)
        self._waiter = None           # the future of the answer being awaited
        self._body = None             # (bytes, writable view, filled) of a body read in place
        self._in_place = True         # False where bytes cannot be made in place (no ctypes)
        self._write_paused = False
        self._read_paused = False
        self._drain_waiter = None
        self._lost = None             # the exception once the connection is gone
        self._closed = None           # future set by connection_lost (wait_closed)
        self._poller = None           # poll(0) on the socket, for the idle check

    # -- asyncio.BufferedProtocol

    def connection_made(self, transport):
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.fileno() >= 0:
            self._poller = poll()
            self._poller.register(sock.fileno(), POLLIN)

    def get_buffer(self, sizehint):
        body = self._body
        if body is not None:
            return body[1][body[2]:]
        return self._view

    def buffer_updated(self, nbytes):
        body = self._body
        if body is not None:
            filled = body[2] + nbytes
            if filled < len(body[0]):
                self._body = (body[0], body[1], filled)
                return
            self._body = None
            body[1].release()
            self.h1.receive_body(body[0])
        else:
            with self._view[:nbytes] as data:
                try:
                    self.h1.receive_data(data)
                except ProtocolError:     # latched: the awaiting call has it from next_event
                    pass
        self._answer_if_whole()

    def eof_received(self):
        self._end()
        # Keep the transport open, half-closed, as asyncio's streams do: a request still being
        # written fails on its own (EPIPE, ECONNRESET) and the answer already read is found.
        return True

    def connection_lost(self, exc):
        # A fresh exception per connection: one raised again and again would grow its traceback.
        self._lost = exc if exc is not None else ConnectionResetError("the connection closed")
        if not self.h1.ended:
            self._end()
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(self._lost)
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)

    def pause_writing(self):
        self._write_paused = True

    def resume_writing(self):
        self._write_paused = False
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- reading

    def _end(self):
        """The peer closed (or the connection broke): the parser sees the end, and an awaited
        answer is finished or failed by it."""
        body = self._body
        if body is not None:          # the body's bytes object is dropped, never handed on
            self._body = None
            body[1].release()
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                waiter.set_exception(BadResponse(
                    "the connection closed %d bytes before the end of the body"
                    % (len(body[0]) - body[2])))
            return
        try:
            self.h1.receive_data(b"")
        except ProtocolError:         # latched: the awaiting call has it from next_event
            pass
        self._answer_if_whole()

    def _answer_if_whole(self):
        waiter = self._waiter
        if waiter is None or waiter.done():
            if waiter is None and self.h1.buffered > 2 * HEAD_LIMIT and not self._read_paused:
                self._read_paused = True      # unasked bytes: read on once an answer is awaited
                self.transport.pause_reading()
            return
        h1 = self.h1
        try:
            event = h1.next_event()
        except Exception as exc:  # noqa: BLE001 - BadResponse, TooLarge: the awaiting call's
            waiter.set_exception(exc)
            return
        if event is not NEED_DATA:
            waiter.set_result(event)
        elif h1.body_bytes_wanted >= _DIRECT_FROM and self._in_place and self._lost is None:
            self._read_body_in_place()

    def _read_body_in_place(self):
        """From now on the transport reads the body into the bytes object that becomes the
        answer's body; the part already taken is copied in first, once."""
        h1 = self.h1
        taken = h1.hand_back_body()
        made = new_bytes(h1.body_bytes_wanted)
        if made is None:              # no ctypes here: the parser's path, a copy per read
            self._in_place = False
            if taken:
                h1.receive_body(taken)
            return
        data, view = made
        view[:len(taken)] = taken
        self._body = (data, view, len(taken))

    async def read_answer(self):
        """The ``Answer`` to the request written on this connection."""
        self._waiter = waiter = asyncio.get_running_loop().create_future()
        try:
            if self.h1.buffered or self.h1.ended:
                self._answer_if_whole()   # it may be whole already, or the end already seen
            if self._read_paused and not waiter.done() and self._lost is None:
                self._read_paused = False
                self.transport.resume_reading()
            return await waiter
        finally:
            self._waiter = None

    def early_answer(self, method):
        """The answer the server wrote before our request was written completely (it refused
        it from the headers, e.g. 413, and closed, which broke the write), or None: what the
        parser holds, and what the kernel still holds when the write failed before the loop
        read it."""
        buffered = self.h1.trailing_data[0] + _unread(self.transport.get_extra_info("socket"))
        return read_whole(buffered, method, self.h1.max_body) if buffered else None

    # -- writing

    async def drain(self):
        if self._lost is not None:
            raise self._lost
        if not self._write_paused:
            return
        self._drain_waiter = asyncio.get_running_loop().create_future()
        try:
            await self._drain_waiter
        finally:
            self._drain_waiter = None

    @property
    def must_drain(self):
        """True when ``drain`` has something to wait for or raise."""
        return self._write_paused or self._lost is not None

    def write_at_once(self, request):
        """Writes a request whose parts are all small (the common case) without a coroutine:
        True if the transport closed on a write, False if written, None (nothing written) when
        a part is large: then ``write_request``."""
        for part in request:
            if len(part) >= 2 * _WRITE_PIECE:
                return None
        transport = self.transport
        for part in request:
            if transport.is_closing():
                return True
            transport.write(part)
        return transport.is_closing()

    async def write_request(self, request, attempt):
        """Writes the request's parts (one buffer, or a head and a large body): True if the
        transport closed on a write, which the caller handles (an early answer, or a resend:
        the server cannot have the whole request)."""
        transport = self.transport
        for part in request:
            if transport.is_closing():
                return True
            if len(part) < 2 * _WRITE_PIECE:
                transport.write(part)
            else:
                with memoryview(part) as whole:
                    for at in range(0, len(whole), _WRITE_PIECE):
                        if transport.is_closing():
                            return True
                        transport.write(whole[at:at + _WRITE_PIECE])
                        if transport.is_closing():
                            return True
                        attempt.sent = True     # as a timeout while draining says
                        await self.drain()
            if transport.is_closing():
                return True
        return False

    # -- the connection's life

    def dropped(self):
        """True if this idle connection cannot carry a request: the server closed it, reset it,
        or wrote to it unasked.  One poll(0) besides what the loop has seen: a close the loop
        has not read yet would otherwise take a job that cannot be sent again."""
        if self._lost is not None or self.transport.is_closing():
            return True
        if self.h1.buffered or self.h1.ended or self._poller is None:
            return True
        return bool(self._poller.poll(0))     # the fd is the open transport's own

    def abort(self):
        transport = self.transport
        try:
            transport.abort()
        except RuntimeError:          # its event loop is closed: close the socket itself
            sock = getattr(transport, "_sock", None)
            if sock is not None:
                sock.close()
                try:
                    transport._sock = None    # closed: nothing left for its __del__ to warn of
                except AttributeError:
                    pass

    def close(self):
        try:
            self.transport.close()
        except RuntimeError:
            self.abort()

    async def wait_closed(self):
        if self._lost is not None:
            return
        if self._closed is None:
            self._closed = asyncio.get_running_loop().create_future()
        await self._closed


async def connect(kind, where, generation, max_body):
    """A new ``Connection`` to ``where`` (a path for ``kind`` "unix", else ``(host, port)``);
    raises ``OSError`` as the loop's connect does."""
    loop = asyncio.get_running_loop()
    if kind == "unix":
        _, conn = await loop.create_unix_connection(
            lambda: Connection(generation, max_body), where)
    else:
        _, conn = await loop.create_connection(
            lambda: Connection(generation, max_body), where[0], where[1])
        sock = conn.transport.get_extra_info("socket")
        try:   # asyncio sets it too (3.7+); keep it explicit, latency depends on it
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):
            pass
    return conn


def _unread(sock):
    """What the kernel still holds for ``sock``, a transport's socket that stopped reading after
    a failed write but is not closed yet; never waits (the connection is dead: nothing more
    comes)."""
    try:
        fd = sock.fileno() if sock is not None else -1
        if fd < 0:
            return b""
        copy = socket.socket(fileno=os.dup(fd))
    except (OSError, ValueError):
        return b""
    chunks = []
    total = 0
    with copy:
        copy.setblocking(False)
        while total < _EARLY_ANSWER_MAX:
            try:
                data = copy.recv(65536)
            except OSError:      # EAGAIN: all of it; ECONNRESET: after all of it
                break
            if not data:
                break
            chunks.append(data)
            total += len(data)
    return b"".join(chunks)
