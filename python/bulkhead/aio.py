"""asyncio client of the bulkhead daemon (docs/api.md), standard library only.

    async with bulkhead.AsyncClient() as client:           # $BULKHEAD_URL or :8787
        out = await client.call("faces", b"...", timeout=5)  # bytes, or raises a JobFailed subclass
        obj = await client.call_json("faces", {"x": 1})
        handle = await client.submit("faces", b"...", idempotency_key="req-42")
        out = await handle.result(timeout=60)

This module is the asyncio transport only: it moves bytes over the loop's connections
(``bulkhead._aio_connection``: a protocol that parses as it reads, a large body read straight
into the bytes returned; ``unix:/path`` URLs as for ``Client``).  The HTTP/1.1 wire
format is ``bulkhead._h1``'s, the meaning of answers ``bulkhead._http``'s and the request plans
``bulkhead._client_core``'s, all shared with the blocking ``Client``, so both raise the same
exceptions for the same answers, send the same deadline headers and wait for an answer as long.
Both read answer bodies up to ``max_response_body`` bytes (1 GiB by default); a larger one
raises ``ResponseTooLarge``.

Requests are lean as ``Client``'s: a call's request is one buffer and one write, its head
(request line, ``Host``, deadline headers) encoded once per pool and timeout, and a bytes
payload goes without a ``Content-Type`` (octet-stream is what a body without one means).

Connections: each ``AsyncClient`` keeps a small pool of keep-alive connections, at most
``max_connections`` (default 8).  Concurrent awaits on one client run in parallel on different
connections up to that number; more wait (first come, first served) for a connection to come
free.  A waiting ``handle.result()`` holds a connection for each long-poll (up to
``max_poll_wait`` seconds), so size ``max_connections`` for the results you await at once, or use
several clients.  ``max_connections=1`` serializes every request of the client.  Sequential
requests reuse one connection.

Resending follows the blocking client: a request that could not be written on a reused idle
connection is sent again on a fresh one; once written, a lost connection or a client-side timeout
raises ``TransportError`` / ``ClientTimeout`` with ``job_may_have_run = True`` and a job is never
sent twice.  ``GET``s, ``DELETE``s and submits with an ``Idempotency-Key`` are resent once.  A
request the daemon refused before reading all of it (413 for a payload over its
``max_request_body``) raises that answer (``PayloadTooLarge``), not the broken send.

Cancellation: cancelling a task awaiting a request (``asyncio.wait_for``, ``task.cancel()``)
closes that request's connection; the daemon is not told.  A cancelled ``call`` may still run the
job; a cancelled ``handle.result()`` leaves the job running (``await handle.cancel()`` stops it).

A client belongs to the event loop that uses it; used from another loop later (a second
``asyncio.run``), it drops its idle connections and opens new ones.  Not thread-safe.
"""

import asyncio
import collections
import json

from ._aio_connection import connect
from ._client_core import ClientCore, JobHandleCore, ResultRounds, quarantine_entries
from ._h1 import BadResponse, TooLarge, encode_request
from ._http import (
    DEFAULT_MAX_RESPONSE_BODY, _describe, cancel_answer, final_value, health_answer,
    submit_answer)
from .errors import TransportError

__all__ = ["AsyncClient", "AsyncJobHandle", "DEFAULT_MAX_CONNECTIONS", "DEFAULT_MAX_RESPONSE_BODY"]

DEFAULT_MAX_CONNECTIONS = 8


# asyncio.timeout (3.11+) bounds the awaits of the task itself; wait_for runs the round trip as
# a task of its own, ~10 us more per call.
_timeout = getattr(asyncio, "timeout", None)


class _Slots(object):
    """The client's connection slots: a counter, and the requests waiting for a slot (first come,
    first served).  asyncio.Semaphore does the same with three coroutines per request."""

    __slots__ = ("free", "_waiters")

    def __init__(self, count):
        self.free = count
        self._waiters = collections.deque()

    async def wait(self):
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter           # a slot handed over by release()
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release()     # handed over as we were cancelled: pass it on
            else:
                try:
                    self._waiters.remove(waiter)
                except ValueError:
                    pass           # a release() already dropped it, cancelled, from the line
            raise

    def release(self):
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)     # the slot goes to it, never back to the counter
                return
        self.free += 1


class _Attempt(object):
    __slots__ = ("sent",)

    def __init__(self):
        self.sent = False


class AsyncClient(ClientCore):
    """asyncio client of one bulkhead daemon.

    ``url``: ``http://HOST:PORT`` or ``unix:/path/to.sock``; None (the default) takes
    ``$BULKHEAD_URL``, else ``http://127.0.0.1:8787``.
    ``timeout``: default timeout in seconds, as for ``Client``: a call's deadline (sent as
    ``X-Bulkhead-Deadline`` and ``X-Bulkhead-Timeout``; the call waits for its answer
    ``timeout + max(timeout_margin, 10%)``), a submit's run limit.  ``max_connections``: the most
    keep-alive connections this client opens at once (concurrent requests beyond it wait their
    turn).  ``max_response_body``: the largest answer body read, in bytes (None: no bound).

    Tunable attributes as on ``Client``: ``timeout_margin``, ``max_poll_wait``, ``ack_timeout``.
    Use it as ``async with AsyncClient(...) as client:`` or ``await client.close()`` at the end.
    """

    _name = "AsyncClient"

    def __init__(self, url=None, timeout=None, max_connections=DEFAULT_MAX_CONNECTIONS,
                 max_response_body=DEFAULT_MAX_RESPONSE_BODY):
        if (isinstance(max_connections, bool) or not isinstance(max_connections, int)
                or max_connections < 1):
            raise ValueError("max_connections must be an int >= 1, got %r" % (max_connections,))
        ClientCore.__init__(self, url, timeout, max_response_body)
        self.max_connections = max_connections
        self._loop = None
        self._slots = None
        self._idle = []
        self._generation = 0

    # -- public API ------------------------------------------------------------------------------

    async def call(self, pool, payload, timeout=None, allow_poison=False):
        """Run one job on ``pool``; returns the handler's result as bytes.  As ``Client.call``."""
        answer = await self._call(pool, payload, timeout, allow_poison, False)
        return answer[2] if answer[0] == 200 else final_value(answer)

    async def call_json(self, pool, obj, timeout=None, allow_poison=False):
        """Run one job with a JSON payload and parse the JSON result.  As ``Client.call_json``."""
        return json.loads(final_value(await self._call(pool, obj, timeout, allow_poison, True)))

    async def submit(self, pool, payload, timeout=None, idempotency_key=None, allow_poison=False):
        """Submit one job to run in the background; returns an ``AsyncJobHandle`` once the daemon
        has journaled it.  As ``Client.submit``."""
        return await self._submit(pool, self._submit_plan(pool, payload, timeout,
                                                          idempotency_key, allow_poison))

    async def submit_json(self, pool, obj, timeout=None, idempotency_key=None,
                          allow_poison=False):
        """``submit`` with a JSON payload; read the result with ``AsyncJobHandle.result_json``."""
        return await self._submit(pool, self._submit_plan(pool, obj, timeout, idempotency_key,
                                                          allow_poison, as_json=True))

    def job(self, job_id, pool=None):
        """An ``AsyncJobHandle`` for an existing job id (nothing is sent until it is used)."""
        return ClientCore.job(self, job_id, pool)

    async def pools(self):
        """``GET /v1/pools``: the pools, their counters and workers (a dict)."""
        return json.loads(final_value(await self._request("GET", self._prefix + "/v1/pools",
                                                          idempotent=True)))

    async def pool(self, name):
        """``GET /v1/pools/{name}`` (a dict); ``UnknownPool`` if the daemon has none."""
        return json.loads(final_value(await self._request("GET", self._pool_view_path(name),
                                                          idempotent=True)))

    async def quarantine(self):
        """``GET /v1/quarantine``: the quarantined payloads (a list of dicts)."""
        return quarantine_entries(json.loads(final_value(await self._request(
            "GET", self._prefix + "/v1/quarantine", idempotent=True))))

    def events(self, since=0, timeout=None, reconnect=True):
        """``GET /v1/events`` as an async iterator (``async for event in client.events()``),
        as ``Client.events``; it has a connection of its own, outside ``max_connections``."""
        from ._events_io import AsyncEventStream
        return AsyncEventStream(self, since, timeout, reconnect)

    async def health(self):
        """``GET /healthz``: ``{"status": "ok"}``, or ``{"status": "shutting_down"}`` (503)."""
        return health_answer(*await self._request("GET", self._prefix + "/healthz",
                                                  idempotent=True))

    async def close(self):
        """Close the idle connections; connections busy with a request close when it ends.  The
        client stays usable: a later request opens a new connection."""
        self._bind_loop()
        self._generation += 1
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        for conn in idle:
            await conn.wait_closed()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc_info):
        await self.close()

    # -- internals -------------------------------------------------------------------------------

    async def _call(self, pool, payload, timeout, allow_poison, as_json):
        """The answer to a sync job: its request in one buffer, the head encoded once per pool
        and timeout (``_job_request``, as ``Client``'s), never resent once written."""
        path, request, wait = self._job_request(pool, payload, timeout, allow_poison, as_json)
        return await self._send("POST", path, request, wait, False)

    async def _submit(self, pool, plan):
        path, body, content_type, headers, idempotent = plan
        answer = await self._request("POST", path, body, content_type, headers,
                                     self.ack_timeout, idempotent)
        return AsyncJobHandle(self, **submit_answer(*answer, pool))

    def _bind_loop(self):
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            for conn in self._idle:      # they belong to the previous loop
                conn.abort()
            self._idle = []
            self._loop = loop
            self._slots = _Slots(self.max_connections)

    async def _request(self, method, path, body=None, content_type=None, headers=(),
                       timeout=None, idempotent=False):
        """``(status, response, body)`` of one request.  ``timeout`` bounds connecting, sending
        and the whole answer (not the wait for a free connection)."""
        self._bind_loop()
        request = encode_request(method, path, self._host, headers, body, content_type)
        return await self._send(method, path, request, timeout, idempotent)

    async def _send(self, method, path, request, timeout, idempotent):
        """``_request`` for a request already encoded (``bulkhead._h1.finish_request``'s parts:
        one, unless the body is large)."""
        self._bind_loop()
        slots = self._slots
        if slots.free:
            slots.free -= 1
        else:
            await slots.wait()
        try:
            attempt = _Attempt()
            if timeout is None:
                return await self._roundtrip(method, path, request, idempotent, attempt)
            try:
                if _timeout is not None:      # no task of its own, unlike wait_for
                    async with _timeout(timeout):
                        return await self._roundtrip(method, path, request, idempotent,
                                                     attempt)
                return await asyncio.wait_for(
                    self._roundtrip(method, path, request, idempotent, attempt), timeout)
            except asyncio.TimeoutError:
                # the timeout cancelled the round trip, which closed its connection
                raise self._no_answer_in_time(timeout, method, path, attempt.sent) from None
        finally:
            slots.release()

    async def _roundtrip(self, method, path, request, idempotent, attempt):
        retried = False
        while True:
            conn = self._take_idle()
            reused = conn is not None
            if conn is None:
                conn = await self._connect()
            attempt.sent = False
            reading = False
            try:
                conn.h1.max_body = self.max_response_body   # it may have been changed
                conn.h1.start_request(method)
                closed = conn.write_at_once(request)
                if closed is None:          # a large body: written piece by piece
                    closed = await conn.write_request(request, attempt)
                if closed:                  # a write failed at once
                    # ... maybe because the server already answered and closed (a part went out)
                    early = conn.early_answer(method)
                    conn.abort()
                    if early is not None:
                        return early.response.status, early.response, early.body
                    if reused and not retried:
                        retried = True      # never reached the server complete: send again
                        continue
                    raise TransportError("cannot send request to bulkhead at %s: the "
                                         "connection closed" % self.url)
                attempt.sent = True
                if conn.must_drain:
                    await conn.drain()
                reading = True
                answer = await conn.read_answer()
            except TooLarge as exc:
                conn.abort()    # the body was not read: the connection cannot carry more
                raise self._answer_too_large(method, path, exc) from None
            except (OSError, EOFError, ValueError, BadResponse) as exc:
                early = None if reading else conn.early_answer(method)
                conn.abort()
                if early is not None:
                    return early.response.status, early.response, early.body
                if idempotent and not retried:
                    retried = True
                    continue
                raise self._lost_after_sending(method, path, exc, idempotent) from exc
            except BaseException:
                conn.abort()   # cancelled (or worse) mid-request: the connection's state is lost
                raise
            if conn.h1.reusable and conn.generation == self._generation:
                conn.h1.start_next_cycle()
                self._idle.append(conn)
            else:
                conn.close()
            return answer.response.status, answer.response, answer.body

    def _take_idle(self):
        while self._idle:
            conn = self._idle.pop()       # the most recently used: the likeliest to be alive
            if not conn.dropped():
                return conn
            conn.abort()
        return None

    async def _connect(self):
        try:
            return await connect(self._kind, self._where, self._generation,
                                 self.max_response_body)
        except OSError as exc:
            raise TransportError("cannot connect to bulkhead at %s: %s"
                                 % (self.url, _describe(exc))) from exc


class AsyncJobHandle(JobHandleCore):
    """A job submitted with ``AsyncClient.submit`` (or named with ``AsyncClient.job``): the
    asyncio twin of ``JobHandle`` (``id``, ``pool``, ``duplicate``, ``location``; ``await
    result()``, ``await result_json()``, ``await status()``, ``await cancel()``).  Its requests
    go through the client that made it (and its connection pool)."""

    _name = "AsyncJobHandle"

    async def result(self, timeout=None):
        """Wait for the job; its result as bytes, or its outcome's exception (as
        ``AsyncClient.call``).  After ``timeout`` seconds (None: no limit; 0: look once) raises
        ``ClientTimeout``; the job keeps running."""
        rounds = ResultRounds(self, timeout)
        while not rounds.done:
            if rounds.pause:
                await asyncio.sleep(rounds.pause)
            method, path, wait = rounds.next_poll()
            rounds.answered(await self.client._request(method, path, timeout=wait,
                                                       idempotent=True))
        return final_value(self._final)

    async def result_json(self, timeout=None):
        """``result`` parsed as JSON."""
        return json.loads(await self.result(timeout))

    async def status(self):
        """The job's state without waiting (see ``JobHandle.status``)."""
        if self._final is None:
            method, path, wait = self._poll_plan(0, self.client.ack_timeout)
            state = self._take(await self.client._request(method, path, timeout=wait,
                                                          idempotent=True))
            if state is not None:
                return state
        return self._summary()

    async def cancel(self):
        """True if the cancel was accepted, False if the job had already finished (see
        ``JobHandle.cancel``)."""
        return cancel_answer(*await self.client._request(
            "DELETE", self._path, timeout=self.client.ack_timeout, idempotent=True))


AsyncClient._handle_class = AsyncJobHandle

