"""The transports of ``Client.events()`` and ``AsyncClient.events()``: one socket each, bytes
in and out.  What the bytes mean, which id to resume from and how long to wait before trying
again are ``bulkhead._sse``'s.

An event stream is a long-lived answer (``Connection: close``, no length), so it never uses the
clients' keep-alive pools: each stream opens its own connection, and a new one when the daemon
drops it (a restart, a reader that fell too far behind), asking for the events after the last
id it yielded, so none is lost or repeated while the daemon still keeps them (its last 1024).
Ids start over with each daemon, so before each connection the transport reads the daemon's
``uptime_s`` (``GET /v1/pools``): a daemon that started since the last connection is a new one,
and its stream is read from its first event.
"""

import asyncio
import collections
import socket
import time

from ._h1 import HEAD_LIMIT, ProtocolError
from ._http import _describe, _json_object, final_value
from ._sse import HEAD, Resume, StreamReader
from .errors import ClientTimeout, TransportError

_DROPPED = (OSError, ProtocolError, TransportError)   # the stream (or /v1/pools) failed

_READ = 65536


class _StreamCore(object):
    """What both transports share: the resumption state, the events read and not yet yielded,
    and the words of their errors."""

    def __init__(self, client, since, timeout, reconnect):
        self.client = client
        self.reconnect = reconnect
        self._resume = Resume(since, timeout, time.monotonic())
        self._pending = collections.deque()
        self._reader = None
        self._closed = False
        self.last_id = self._resume.since
        """The id of the last event yielded (``since`` before the first): pass it as ``since``
        to a later ``events()`` to go on where this one stopped."""

    def _yield(self):
        event = self._pending.popleft()
        ident = event.get("id")
        if isinstance(ident, int) and not isinstance(ident, bool):
            self.last_id = ident
        return event

    def __repr__(self):
        return "<%s %s since=%d>" % (type(self).__name__, self.client.url, self.last_id)

    def _took(self, data):
        """Feeds what one read returned (``b""``: the end); True while the connection goes on."""
        reader = self._reader
        in_head = reader.state == HEAD
        events = reader.receive_data(data)      # an error answer raises here
        if in_head and reader.state != HEAD and reader.response.status == 200:
            self._resume.opened()               # a live stream again: resuming is possible
        self._pending.extend(self._resume.take(events, time.monotonic(), reader.parser.retry))
        return not reader.ended

    def _uptime(self, asked, answer):
        answered = time.monotonic()
        document = _json_object(final_value(answer))
        self._resume.daemon_uptime((document or {}).get("uptime_s"), asked, answered)

    def _late(self):
        return ClientTimeout("no event from bulkhead at %s within %g s (GET /v1/events)"
                             % (self.client.url, self._resume.timeout))

    def _after_drop(self, exc):
        """Seconds to wait before connecting again, or raises: the first connection failed,
        reconnecting is off (then None: the iteration ends), or it kept failing."""
        self._reader = None
        if not self._resume.connected:
            raise TransportError("cannot follow events of bulkhead at %s: %s"
                                 % (self.client.url, _describe(exc) if exc else "no answer"))
        if not self.reconnect:
            self._closed = True
            return None
        delay = self._resume.next_try(time.monotonic())
        if delay is None:
            if self._resume.timeout is not None:
                raise self._late()     # the next event's deadline passes while reconnecting
            raise TransportError("event stream of bulkhead at %s lost, and connecting again "
                                 "kept failing: %s" % (self.client.url,
                                                       _describe(exc) if exc else "closed"))
        return delay


class EventStream(_StreamCore):
    """``Client.events()``: iterate for the daemon's events (dicts), oldest first; ``close()``
    (or leaving a ``with`` block) ends it.  ``last_id``: the id of the last event yielded."""

    def __init__(self, client, since=0, timeout=None, reconnect=True):
        _StreamCore.__init__(self, client, since, timeout, reconnect)
        self._sock = None

    def __iter__(self):
        return self

    def __next__(self):
        while not self._pending:
            if self._closed:
                raise StopIteration
            self._step()
        return self._yield()

    def close(self):
        self._closed = True
        self._pending.clear()
        self._drop_socket()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def _step(self):
        resume = self._resume
        if resume.late(time.monotonic()):
            self.close()
            raise self._late()
        failure = None
        try:
            if self._sock is None:
                self._connect()
            self._sock.settimeout(resume.wait(time.monotonic()))
            if self._took(self._sock.recv(_READ)):
                return
        except socket.timeout:
            self.close()
            raise self._late() from None
        except _DROPPED as exc:
            failure = exc
        except BaseException:
            self.close()      # an ApiError answer, KeyboardInterrupt: nothing to resume
            raise
        self._drop_socket()
        try:
            delay = self._after_drop(failure)
        except BaseException:
            self.close()
            raise
        if delay:
            time.sleep(delay)

    def _connect(self):
        client = self.client
        wait = self._resume.wait(time.monotonic())
        asked = time.monotonic()
        self._uptime(asked, client._request("GET", client._prefix + "/v1/pools", idempotent=True,
                                            sock_timeout=client.ack_timeout if wait is None
                                            else wait))
        if client._kind == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(wait)
                sock.connect(client._where)
            except BaseException:
                sock.close()
                raise
        else:
            sock = socket.create_connection(client._where, wait)
        self._sock = sock
        self._reader = StreamReader()
        sock.sendall(self._resume.request(client._prefix, client._host))

    def _drop_socket(self):
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()


class AsyncEventStream(_StreamCore):
    """``AsyncClient.events()``: ``async for event in stream``; ``await stream.close()`` (or
    ``async with``) ends it.  As ``EventStream`` otherwise."""

    def __init__(self, client, since=0, timeout=None, reconnect=True):
        _StreamCore.__init__(self, client, since, timeout, reconnect)
        self._streams = None

    def __aiter__(self):
        return self

    async def __anext__(self):
        while not self._pending:
            if self._closed:
                raise StopAsyncIteration
            await self._step()
        return self._yield()

    async def close(self):
        self._closed = True
        self._pending.clear()
        self._drop_streams()

    aclose = close

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc_info):
        await self.close()

    async def _step(self):
        resume = self._resume
        if resume.late(time.monotonic()):
            await self.close()
            raise self._late()
        failure = None
        try:
            if self._streams is None:
                await self._connect()
            read = self._streams[0].read(_READ)
            wait = resume.wait(time.monotonic())
            data = await (read if wait is None else asyncio.wait_for(read, wait))
            if self._took(data):
                return
        except asyncio.TimeoutError:
            await self.close()
            raise self._late() from None
        except _DROPPED + (EOFError,) as exc:
            failure = exc
        except BaseException:
            await self.close()
            raise
        self._drop_streams()
        try:
            delay = self._after_drop(failure)
        except BaseException:
            await self.close()
            raise
        if delay:
            await asyncio.sleep(delay)

    async def _connect(self):
        client = self.client
        wait = self._resume.wait(time.monotonic())
        asked = time.monotonic()
        self._uptime(asked, await client._request(
            "GET", client._prefix + "/v1/pools", idempotent=True,
            timeout=client.ack_timeout if wait is None else wait))
        if client._kind == "unix":
            opening = asyncio.open_unix_connection(client._where, limit=HEAD_LIMIT)
        else:
            opening = asyncio.open_connection(client._where[0], client._where[1],
                                              limit=HEAD_LIMIT)
        wait = self._resume.wait(time.monotonic())
        reader, writer = await (opening if wait is None else asyncio.wait_for(opening, wait))
        self._streams = (reader, writer)
        self._reader = StreamReader()
        writer.write(self._resume.request(client._prefix, client._host))
        await writer.drain()

    def _drop_streams(self):
        streams, self._streams = self._streams, None
        if streams is not None:
            try:
                streams[1].close()
            except RuntimeError:     # its event loop is closed already
                pass
