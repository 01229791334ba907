"""Blocking HTTP client of the bulkhead daemon (docs/api.md).

    with bulkhead.Client() as client:                 # $BULKHEAD_URL or http://127.0.0.1:8787
        out = client.call("faces", b"...", timeout=5)  # bytes, or raises a JobFailed subclass
        obj = client.call_json("faces", {"x": 1})

Deadlines: ``call(..., timeout=5)`` sends ``X-Bulkhead-Deadline: 5000ms`` (the whole job: queue
and every attempt) and ``X-Bulkhead-Timeout: 5000ms`` (an attempt's run limit, which daemons
without the deadline header honour), and waits for the answer a little longer than that
(``timeout + max(timeout_margin, 10%)``), so the caller gets ``JobTimedOut`` (with ``stage``
``"queued"`` or ``"running"``), not a ``ClientTimeout``, while the daemon is alive.

Connections: a ``Client`` may be shared by threads.  It pools keep-alive connections (TCP with
``TCP_NODELAY``, or Unix sockets for ``unix:/path``): a request takes the most recently used idle
one (or opens one) and puts it back after the answer, so each thread in a request has its own
and a thread calling in a loop gets its own back, with no lock (the pool is a list: pop and
append are atomic under the GIL).  ``close()`` closes the idle ones, a busy one when its request
ends.  A forked child opens its own (it never writes on its parent's).

Lean: a request is ONE buffer and one ``sendall`` (a large body goes with its head in
one ``sendmsg``, uncopied); a job's head (request line, ``Host``, deadline headers) is encoded
once per pool and timeout; octet-stream goes without ``Content-Type``.  On 64-bit Linux the answer
wait is a kernel timeout (``SO_RCVTIMEO``/``SO_SNDTIMEO``, set when it changes), not Python's,
which polls before every read and write.  A call is one ``poll(0)`` (the idle check below), one
write, one read and the parsing of the answer.

Resending is careful because a job is not idempotent.  Before a request goes out on a connection
that served earlier requests, the client checks that the server has not closed it while it was
idle, and reconnects if so.  If sending still fails on such a connection, the request did not reach
the server complete, so it is sent once more on a fresh connection, unless the server already
answered it: a request the daemon refuses early (a payload over its ``max_request_body``: 413,
``PayloadTooLarge``) breaks the send when the daemon closes, and the client then reads the answer
the daemon wrote before closing instead of reporting a broken pipe.  Once a request has been sent
completely, a broken connection or a client-side timeout raises ``TransportError`` (or
``ClientTimeout``) with ``job_may_have_run = True``: the job is never sent twice.  ``GET``s
(``pools``, ``health``, job status polls), ``DELETE``s and submits that carry an
``Idempotency-Key`` are retried once on a fresh connection in that case too.

Async (journaled) jobs, docs/api.md "Async jobs":

    handle = client.submit("faces", b"...", idempotency_key="req-42")   # 202, returns at once
    handle.id, handle.duplicate
    out = handle.result(timeout=60)     # long-polls GET /v1/jobs/{id}; bytes or the same
                                        # exceptions as call(); ClientTimeout if still running
    handle.status()                     # {"job": .., "state": "queued"|"running"} or
                                        # {"job": .., "state": "finished", "outcome": .., ...}
    handle.cancel()                     # True: cancel accepted; False: already finished
    client.job("17")                    # a handle for a job id known from elsewhere

This module is the blocking transport only: it opens the socket, writes bytes and reads bytes.
The HTTP/1.1 wire format (request encoding, answer parsing, keep-alive, the ``max_response_body``
bound) is ``bulkhead._h1``'s, what an answer means (URL, payload and header encoding, answers
into values or exceptions) is ``bulkhead._http``'s, and the settings and request plans of a client
and a job handle are ``bulkhead._client_core``'s, all shared with ``bulkhead.aio.AsyncClient``, so
both clients write the same requests and raise the same exceptions for the same answers.
"""

import json
import socket
import time
from select import POLLIN, poll

from . import _client_socket as _sockets
from ._client_socket import _KERNEL_TIMEOUTS, _TIMED_OUT, _Connection, _send_parts  # noqa: F401
from ._fresh_bytes import read_new_bytes
from ._h1 import NEED_DATA, SENT, LocalProtocolError, ProtocolError, TooLarge, encode_request
# The sans-I/O helpers live in ._http; the names are kept here too for code that imported them
# from this module.
from ._client_core import ClientCore, JobHandleCore, ResultRounds, quarantine_entries
from ._http import (  # noqa: F401
    ACK_TIMEOUT, DEFAULT_MAX_RESPONSE_BODY, DEFAULT_URL, MAX_POLL_WAIT, TIMEOUT_MARGIN, URL_ENV,
    PollClock, _as_bytes, _describe, _json_object, _runs, answer_timeout, cancel_answer,
    check_job_id, check_max_response_body, check_wait_timeout, encode_json_payload,
    encode_payload, error_from_response, final_summary, final_value, health_answer,
    idempotency_header, job_path, job_request_headers, job_state, parse_retry_after, parse_url,
    poll_path, pool_jobs_path, problem_from_body, resolve_url, submit_answer, timeout_header,
    wait_param)
from .errors import TransportError

__all__ = ["Client", "JobHandle", "DEFAULT_URL"]

# After a send fails, the bound on reading the rest of an answer the server had already started
# to write (it refused the request early, e.g. 413, and closed).
EARLY_ANSWER_WAIT = 5.0
# Answers to requests with a body this large are read head first (peeked), then the body in one
# MSG_WAITALL read into the bytes object returned: no copy and one allocation of fresh pages,
# where pieces joined afterwards cost two (each a page fault per 4 KiB).
_WHOLE_BODY = 1024 * 1024
_HEAD_PEEK = 8192


def _receive_whole(sock, size):
    """Up to ``size`` bytes (fewer only if the server closed first), read with MSG_WAITALL
    straight into the bytes object returned (``_fresh_bytes``: on huge pages when large)."""
    data = read_new_bytes(size, lambda view, _: sock.recv_into(view, 0, socket.MSG_WAITALL))
    return sock.recv(size, socket.MSG_WAITALL) if data is None else data


# -- the blocking client --------------------------------------------------------------------------


class Client(ClientCore):
    """Client of one bulkhead daemon, over keep-alive connections (one per thread in a request
    at the same time; the client may be shared by threads).

    ``url``: ``http://HOST:PORT`` or ``unix:/path/to.sock``; None (the default) takes
    ``$BULKHEAD_URL``, else ``http://127.0.0.1:8787``.
    ``timeout``: default timeout in seconds for ``call``/``call_json`` (the job's deadline, sent
    as ``X-Bulkhead-Deadline`` and ``X-Bulkhead-Timeout``) and ``submit`` (its run limit, sent as
    ``X-Bulkhead-Timeout``); None leaves the pool's ``job_timeout`` and no deadline.  A call
    waits for its answer ``timeout + max(timeout_margin, 10% of timeout)`` seconds; with no
    timeout it waits as long as the daemon takes.  ``max_response_body``: the largest answer
    body read, in bytes (1 GiB by default, None: no bound); a larger one raises
    ``ResponseTooLarge`` (as ``AsyncClient``).

    Attributes one may tune: ``timeout_margin`` (2 s: covers the daemon's stack capture and the
    default 1 s ``kill_grace``; raise it for pools with a longer grace), ``max_poll_wait`` (30 s:
    the longest ``wait`` of one long-poll in ``JobHandle.result``), ``ack_timeout`` (30 s: socket
    timeout of submit, status and cancel requests; None waits forever).
    """

    _name = "Client"

    def __init__(self, url=None, timeout=None, max_response_body=DEFAULT_MAX_RESPONSE_BODY):
        ClientCore.__init__(self, url, timeout, max_response_body)
        self._idle = []               # idle connections, the most recently used last
        self._generation = 0          # bumped by close(): older connections are not reused
        self._last = None             # the connection of the latest request (tests, debugging)

    # -- public API ------------------------------------------------------------------------------

    def call(self, pool, payload, timeout=None, allow_poison=False):
        """Run one job on ``pool``; returns the handler's result as bytes.

        ``payload``: bytes-like, or str (sent as UTF-8).  ``timeout``: seconds (default: the
        client's), the job's whole budget: past it the job ends ``timed_out`` (``JobTimedOut``,
        whose ``stage`` says whether it was still queued or running).  Raises a ``JobFailed``
        subclass for any outcome but ``ok``, ``ApiError`` subclasses for refused requests
        (``PayloadTooLarge`` for a payload over the daemon's limit), ``TransportError`` when the
        daemon cannot be reached.  ``allow_poison``: run it even if the daemon quarantined this
        payload (without it such a job is refused at once: ``Poisoned``).
        """
        answer = self._call(pool, payload, timeout, allow_poison, False)
        return answer[2] if answer[0] == 200 else final_value(answer)

    def call_json(self, pool, obj, timeout=None, allow_poison=False):
        """Run one job with a JSON payload and parse the JSON result.

        ``obj``: a dict or list (JSON-encoded here), or already-encoded bytes/str.
        """
        return json.loads(final_value(self._call(pool, obj, timeout, allow_poison, True)))

    def submit(self, pool, payload, timeout=None, idempotency_key=None, allow_poison=False):
        """Submit one job to run in the background (``POST .../jobs?wait=0``); returns a
        ``JobHandle`` as soon as the daemon has journaled the job (``202``).

        ``payload`` and ``timeout`` as for ``call`` (``timeout`` is the job's run deadline, not
        how long to wait for it: see ``JobHandle.result``).  ``idempotency_key``: a string
        (printable ASCII); submitting again with the same key runs nothing new and returns a
        handle to the same job with ``duplicate`` True.  A submit with a key is also resent
        once if the connection is lost before the answer; without one it is never resent
        (``TransportError.job_may_have_run``).

        Raises like ``call`` when the daemon refuses the job (``UnknownPool``, ``Overloaded``,
        ``BadRequest``, ...).
        """
        return self._submit(pool, self._submit_plan(pool, payload, timeout, idempotency_key,
                                                    allow_poison))

    def submit_json(self, pool, obj, timeout=None, idempotency_key=None, allow_poison=False):
        """``submit`` with a JSON payload (see ``call_json``); read the result with
        ``JobHandle.result_json``."""
        return self._submit(pool, self._submit_plan(pool, obj, timeout, idempotency_key,
                                                    allow_poison, as_json=True))

    def pools(self):
        """``GET /v1/pools``: the pools, their counters and workers (a dict)."""
        return json.loads(final_value(self._request("GET", self._prefix + "/v1/pools",
                                                    idempotent=True)))

    def pool(self, name):
        """``GET /v1/pools/{name}``: that pool, its workers with their sample history, recycles
        by cause, limits and recent events (a dict); ``UnknownPool`` if the daemon has none."""
        return json.loads(final_value(self._request("GET", self._pool_view_path(name),
                                                    idempotent=True)))

    def quarantine(self):
        """``GET /v1/quarantine``: the quarantined payloads of every pool, a list of dicts
        (``pool``, ``fingerprint``, ``job``, ``age_s``, ``detail``, ``attempts``)."""
        return quarantine_entries(json.loads(final_value(self._request(
            "GET", self._prefix + "/v1/quarantine", idempotent=True))))

    def events(self, since=0, timeout=None, reconnect=True):
        """``GET /v1/events``: an iterator of the daemon's events (dicts with ``id``, ``kind``,
        ``pool``, ``worker``, ``detail``, ...), those it keeps after id ``since`` first, then
        each as it happens.  ``timeout``: seconds to wait for each next event (None: for ever),
        then ``ClientTimeout``.  A dropped stream is reopened after the last id yielded
        (``reconnect=False``: the iteration ends).  Close it with ``close()`` or ``with``;
        see ``bulkhead._events_io``."""
        from ._events_io import EventStream
        return EventStream(self, since, timeout, reconnect)

    def health(self):
        """``GET /healthz``: ``{"status": "ok"}``, or ``{"status": "shutting_down"}`` (503)."""
        return health_answer(*self._request("GET", self._prefix + "/healthz", idempotent=True))

    def close(self):
        """Close the idle connections (a later call opens a new one); a connection busy in
        another thread closes when its request ends."""
        self._generation += 1         # read by a request in flight before it puts one back
        idle = self._idle
        while idle:
            try:
                conn = idle.pop()
            except IndexError:        # another thread took the last one
                break
            conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    @property
    def _sock(self):
        """The socket of the latest request, or None (for tests and debugging)."""
        conn = self._last
        return None if conn is None else conn.sock

    # -- internals -------------------------------------------------------------------------------

    def _call(self, pool, payload, timeout, allow_poison, as_json):
        """The answer to a sync job: ``_job_request``'s one buffer, no resend once sent."""
        try:
            path, request, wait = self._job_request(pool, payload, timeout, allow_poison, as_json)
        except LocalProtocolError as exc:
            raise self._cannot_encode(exc) from exc
        return self._roundtrip("POST", path, request, wait, False)

    def _submit(self, pool, plan):
        path, body, content_type, headers, idempotent = plan
        answer = self._request("POST", path, body, content_type, headers, self.ack_timeout,
                               idempotent)
        return JobHandle(self, **submit_answer(*answer, pool))

    def _cannot_encode(self, exc):
        return TransportError("cannot send request to bulkhead at %s: %s"
                              % (self.url, _describe(exc)))

    def _request(self, method, path, body=None, content_type=None, headers=(), sock_timeout=None,
                 idempotent=False):
        """``(status, response, body)`` of one request (the general path: any method and
        headers; ``call`` encodes its own)."""
        try:
            request = encode_request(method, path, self._host, headers, body, content_type)
        except LocalProtocolError as exc:
            raise self._cannot_encode(exc) from exc
        return self._roundtrip(method, path, request, sock_timeout, idempotent)

    def _connect(self, sock_timeout):
        if self._kind == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(sock_timeout)
                sock.connect(self._where)
            except BaseException:
                sock.close()
                raise
        else:
            sock = socket.create_connection(self._where, sock_timeout)
            try:   # latency depends on it (the request goes out in one write: nothing to merge)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        try:
            conn = _Connection(sock, sock_timeout, self.max_response_body, self._generation)
            if _KERNEL_TIMEOUTS:
                sock.settimeout(None)      # blocking: the kernel bounds reads and writes
                if sock_timeout is not None:
                    conn.set_timeout(sock_timeout)
        except BaseException:
            sock.close()
            raise
        return conn

    def _take_idle(self):
        """The most recently used idle connection that can carry a request, or None: not one
        that predates a close() or a fork, nor one the server closed while it was idle."""
        idle = self._idle
        while idle:
            try:
                conn = idle.pop()
            except IndexError:
                return None
            if (conn.generation == self._generation and conn.epoch == _sockets.fork_epoch
                    and not conn.dropped()):
                return conn
            conn.close()
        return None

    def _roundtrip(self, method, path, request, sock_timeout, idempotent):
        """Sends ``request`` (the parts of ``bulkhead._h1.finish_request``) on an idle
        connection (or a new one) and reads the answer: ``(status, response, body)``.  The
        connection goes back to the pool only after a whole answer that allows it: one
        interrupted mid-request (KeyboardInterrupt) is simply not reused."""
        retried = False
        while True:
            conn = self._take_idle()
            reused = conn is not None
            try:
                if not reused:
                    conn = None
                    conn = self._connect(sock_timeout)
                elif sock_timeout != conn.timeout:
                    conn.set_timeout(sock_timeout)
                self._last = conn
                h1 = conn.h1
                h1.max_body = self.max_response_body   # it may have been changed
                h1.start_request(method)
                if len(request) == 1:
                    conn.sock.sendall(request[0])
                else:
                    _send_parts(conn.sock, request)
            except OSError as exc:
                answer = None
                if conn is not None:
                    answer = self._early_answer(conn)
                    conn.close()
                if answer is not None:
                    return answer.response.status, answer.response, answer.body
                if reused and not retried and not isinstance(exc, _TIMED_OUT):
                    retried = True   # never reached the server complete: safe to send again
                    continue
                raise TransportError("cannot send request to bulkhead at %s: %s"
                                     % (self.url, _describe(exc))) from exc
            try:
                answer = self._read_answer(conn, len(request) > 1 and
                                           len(request[-1]) >= _WHOLE_BODY)
            except _TIMED_OUT as exc:
                conn.close()
                raise self._no_answer_in_time(sock_timeout, method, path, True) from exc
            except TooLarge as exc:
                conn.close()    # the body was not read: the connection cannot carry more
                raise self._answer_too_large(method, path, exc) from None
            except (OSError, ProtocolError) as exc:
                conn.close()
                if idempotent and not retried:
                    retried = True
                    continue
                raise self._lost_after_sending(method, path, exc, idempotent) from exc
            if h1.reusable and conn.generation == self._generation:
                h1.start_next_cycle()
                self._idle.append(conn)
            else:
                conn.close()
            return answer.response.status, answer.response, answer.body

    def _read_answer(self, conn, large_request=False):
        """The ``Answer`` to the request just written (the socket's timeout bounds each read).
        Nothing of it is buffered yet (a connection is reused only with nothing left over), so
        the loop reads first."""
        h1 = conn.h1
        sock = conn.sock
        recv_into = sock.recv_into
        buffer, view = conn.buffer, conn.view
        if large_request:
            head = sock.recv(_HEAD_PEEK, socket.MSG_PEEK)
            end = head.find(b"\r\n\r\n")
            if end >= 0:     # take the head alone: the body is then read whole, below
                h1.receive_data(sock.recv(end + 4))
                event = h1.next_event()
                if event is not NEED_DATA:
                    return event
        while True:
            wanted = h1.body_bytes_wanted
            if wanted >= _WHOLE_BODY:
                data = _receive_whole(sock, wanted)
                if data:
                    h1.receive_body(data)
                else:
                    h1.receive_data(b"")
            else:
                count = recv_into(buffer)
                h1.receive_data(view[:count] if count else b"")
            event = h1.next_event()
            if event is not NEED_DATA:
                return event

    def _early_answer(self, conn):
        """The ``Answer`` the server wrote before our request was sent completely (it refused it
        from the headers, e.g. 413, and closed, which broke the send), or None.  Only called once
        sending failed, so whatever is readable was written in reply to this request: the check
        before sending found the idle connection clean.  No waiting for it: a send fails when the
        server reset or closed the connection, and TCP and Unix sockets deliver what it wrote
        before that first."""
        sock = conn.sock
        if conn.h1.our_state != SENT:
            return None
        try:
            readable = poll()
            readable.register(sock, POLLIN)
            if not readable.poll(0):
                return None
            sock.settimeout(EARLY_ANSWER_WAIT)   # the connection is closed right after
            return self._read_answer(conn)
        except (OSError, ValueError, ProtocolError):
            return None   # nothing usable arrived: report the send failure


class JobHandle(JobHandleCore):
    """A job submitted with ``Client.submit`` (or named with ``Client.job``).

    ``id`` (str), ``pool`` (None when the handle was made from a bare id), ``duplicate`` (True
    when the daemon matched the ``Idempotency-Key`` of an earlier submission, which includes a
    submission this client resent after losing the first answer), ``location`` (the ``Location``
    header).

    The handle sends its requests through the ``Client`` that made it (and its connections), so
    any thread may use it.  Once the job's final answer has been read it is kept in the handle:
    ``result()`` and ``status()`` do not ask the daemon again.
    """

    _name = "JobHandle"

    def result(self, timeout=None):
        """Wait for the job and return its result as bytes, or raise its outcome's exception,
        exactly like ``Client.call`` would have.

        ``timeout``: seconds to wait (None: as long as it takes; 0: look once).  When it passes
        first, raises ``ClientTimeout`` (``job_may_have_run`` True): the job keeps running and
        ``result`` may be called again.  Long-polls ``GET /v1/jobs/{id}?wait=...`` in rounds of at
        most ``client.max_poll_wait`` seconds.
        """
        rounds = ResultRounds(self, timeout)
        while not rounds.done:
            if rounds.pause:
                time.sleep(rounds.pause)
            method, path, wait = rounds.next_poll()
            rounds.answered(self.client._request(method, path, sock_timeout=wait,
                                                 idempotent=True))
        return final_value(self._final)

    def result_json(self, timeout=None):
        """``result`` parsed as JSON."""
        return json.loads(self.result(timeout))

    def status(self):
        """The job's state, without waiting: ``{"job", "state": "queued"|"running"}`` (plus
        ``runs`` when the daemon says), or for a finished job ``{"job", "state": "finished",
        "outcome", "http_status"}``.  Raises ``ApiError`` for an unknown job (404,
        ``error == "unknown_job"``)."""
        if self._final is None:
            method, path, wait = self._poll_plan(0, self.client.ack_timeout)
            state = self._take(self.client._request(method, path, sock_timeout=wait,
                                                    idempotent=True))
            if state is not None:
                return state
        return self._summary()

    def cancel(self):
        """``DELETE /v1/jobs/{id}``: True if the cancel was accepted (the job will end
        ``cancelled``: ``result`` raises ``Cancelled``), False if the job had already finished.
        Raises ``ApiError`` for an unknown job."""
        return cancel_answer(*self.client._request("DELETE", self._path,
                                                   sock_timeout=self.client.ack_timeout,
                                                   idempotent=True))


Client._handle_class = JobHandle
