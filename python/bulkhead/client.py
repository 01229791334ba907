"""Blocking HTTP client of the bulkhead daemon (docs/api.md).

    with bulkhead.Client() as client:                 # http://127.0.0.1:8787
        out = client.call("faces", b"...", timeout=5)  # bytes, or raises a JobFailed subclass
        obj = client.call_json("faces", {"x": 1})

A ``Client`` holds ONE persistent keep-alive connection (TCP with ``TCP_NODELAY``, or a Unix
socket for ``unix:/path``) and is meant for ONE thread at a time: it takes no locks.  Give each
thread its own ``Client``.

Resending is careful because a job is not idempotent.  Before a request goes out on a connection
that served earlier requests, the client checks that the server has not closed it while it was
idle, and reconnects if so.  If sending still fails on such a connection, the request did not reach
the server complete, so it is sent once more on a fresh connection.  Once a request has been sent
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

The sans-I/O helpers of this module (URL, payload and header encoding, reading answers into
values or exceptions) are shared with ``bulkhead.aio.AsyncClient``, so both clients raise the same
exceptions for the same answers.
"""

import http.client
import json
import socket
import time
from select import POLLIN, poll
from urllib.parse import quote, urlsplit

from .errors import ApiError, ClientTimeout, TransportError, error_from_problem

__all__ = ["Client", "JobHandle", "DEFAULT_URL"]

DEFAULT_URL = "http://127.0.0.1:8787"
# The client waits this much longer than a job's timeout: the daemon still has to capture stacks,
# stop the worker (SIGTERM, grace, SIGKILL) and answer with the evidence.
TIMEOUT_MARGIN = 5.0
_COALESCE = 64 * 1024   # bodies up to this size go out in the same send() as the headers
# The longest ``wait`` of one long-poll of a job (the daemon allows up to 60 s): a poll that comes
# back empty after this long is simply sent again, and a dead peer is noticed within it (plus the
# margin).
MAX_POLL_WAIT = 30.0
# Socket timeout of the requests that the daemon answers without running anything: submit (the
# 202 comes once the job is journaled), status, cancel.
ACK_TIMEOUT = 30.0


class _ConnectionMixin(object):
    """Sends headers and a small body in one segment (http.client sends them separately, which
    costs a syscall and wakes the server twice)."""

    def _send_output(self, message_body=None, encode_chunked=False):
        buffer = getattr(self, "_buffer", None)
        if (type(message_body) is bytes and len(message_body) <= _COALESCE
                and not encode_chunked and isinstance(buffer, list)):
            buffer.extend((b"", b""))
            msg = b"\r\n".join(buffer)
            del buffer[:]
            self.send(msg + message_body)
            return
        super()._send_output(message_body, encode_chunked=encode_chunked)


class _TCPConnection(_ConnectionMixin, http.client.HTTPConnection):
    def connect(self):
        super().connect()
        # http.client sets it too (3.8+); keep it explicit, latency depends on it.
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _UnixConnection(_ConnectionMixin, http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.unix_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def parse_url(url):
    """``("unix", path, "")`` or ``("tcp", (host, port), path_prefix)`` for a daemon URL."""
    if not isinstance(url, str) or not url:
        raise ValueError("bulkhead URL must be a non-empty string, got %r" % (url,))
    if url.startswith("unix:"):
        path = url[len("unix:"):]
        if path.startswith("//"):       # unix:///run/bulkhead.sock
            path = path[2:]
        if not path:
            raise ValueError("unix socket URL %r has no path" % url)
        return "unix", path, ""
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise ValueError("bulkhead URL %r: expected http://HOST:PORT or unix:/PATH" % url)
    if not parts.hostname:
        raise ValueError("bulkhead URL %r has no host" % url)
    port = parts.port if parts.port is not None else 80
    return "tcp", (parts.hostname, port), parts.path.rstrip("/")


def timeout_header(seconds):
    """The ``X-Bulkhead-Timeout`` value for a timeout in seconds: whole milliseconds, rounded
    up (so no timeout turns into 0)."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError("timeout must be a number of seconds, got %r" % (seconds,))
    if not seconds > 0:   # also refuses NaN
        raise ValueError("timeout must be positive, got %r" % (seconds,))
    ms = int(seconds * 1000)
    if ms < seconds * 1000:
        ms += 1
    return "%dms" % ms


def parse_retry_after(value):
    """``Retry-After`` (delta-seconds or an HTTP date) in seconds, or None."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            from email.utils import parsedate_to_datetime
            import time
            when = parsedate_to_datetime(value)
            seconds = when.timestamp() - time.time()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


def problem_from_body(status, reason, content_type, data, outcome_header=None):
    """The problem document of an error response (a dict, whatever the body was)."""
    problem = None
    if data and content_type and "json" in content_type.lower():
        try:
            problem = json.loads(data)
        except ValueError:
            problem = None
    if not isinstance(problem, dict):
        text = data[:2000].decode("utf-8", "replace") if data else ""
        problem = {"status": status, "title": reason or "", "detail": text.strip()}
    if outcome_header and "outcome" not in problem and "error" not in problem:
        problem = dict(problem, outcome=outcome_header)
    return problem


# -- sans-I/O pieces shared with bulkhead.aio ---------------------------------------------------


def encode_payload(payload):
    """``(bytes, content_type)`` for a job payload: bytes-like as ``application/octet-stream``,
    str as UTF-8 ``text/plain``."""
    if isinstance(payload, bytes):
        return payload, "application/octet-stream"
    if isinstance(payload, str):
        return payload.encode("utf-8"), "text/plain; charset=utf-8"
    return _as_bytes(payload), "application/octet-stream"


def encode_json_payload(obj):
    """The bytes of a JSON payload: a dict or list is encoded here, bytes-like or str is taken as
    already encoded."""
    if isinstance(obj, (dict, list)):
        return json.dumps(obj, separators=(",", ":")).encode("utf-8")
    if isinstance(obj, str):
        return obj.encode("utf-8")
    return _as_bytes(obj)


def pool_jobs_path(prefix, pool):
    """``{prefix}/v1/pools/{pool}/jobs`` (the pool name quoted)."""
    if not isinstance(pool, str) or not pool:
        raise ValueError("pool must be a non-empty string, got %r" % (pool,))
    return "%s/v1/pools/%s/jobs" % (prefix, quote(pool, safe=""))


def check_job_id(job_id):
    """A job id as the string the API uses (ints are accepted and converted)."""
    if isinstance(job_id, int) and not isinstance(job_id, bool):
        return str(job_id)
    if not isinstance(job_id, str) or not job_id:
        raise ValueError("job id must be a non-empty string, got %r" % (job_id,))
    return job_id


def job_path(prefix, job_id):
    """``{prefix}/v1/jobs/{id}`` (the id quoted)."""
    return "%s/v1/jobs/%s" % (prefix, quote(job_id, safe=""))


def idempotency_header(key):
    """The ``Idempotency-Key`` value: a non-empty string of printable ASCII, at most 1024
    characters (it is sent as an HTTP header; anything else is refused here)."""
    if not isinstance(key, str) or not key:
        raise ValueError("idempotency_key must be a non-empty string, got %r" % (key,))
    if len(key) > 1024 or any(not " " <= c <= "~" for c in key) or key != key.strip():
        raise ValueError("idempotency_key must be printable ASCII (no control characters, no "
                         "leading or trailing space), at most 1024 characters, got %r"
                         % (key[:80],))
    return key


def job_request_headers(timeout, idempotency_key=None):
    """The extra headers of a job submission (sync or async)."""
    headers = []
    if timeout is not None:
        headers.append(("X-Bulkhead-Timeout", timeout_header(timeout)))
    if idempotency_key is not None:
        headers.append(("Idempotency-Key", idempotency_header(idempotency_key)))
    return headers


def check_wait_timeout(timeout):
    """Validates a ``result(timeout=...)``: None (wait as long as it takes) or seconds >= 0."""
    if timeout is None:
        return
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError("timeout must be a number of seconds or None, got %r" % (timeout,))
    if not timeout >= 0:   # also refuses NaN
        raise ValueError("timeout must be >= 0, got %r" % (timeout,))


def wait_param(seconds):
    """The ``wait`` query value of a long-poll (``"30s"``, ``"1500ms"``), or None for no wait.
    Whole milliseconds, rounded up."""
    if not seconds > 0:
        return None
    ms = int(seconds * 1000)
    if ms < seconds * 1000:
        ms += 1
    if ms % 1000 == 0:
        return "%ds" % (ms // 1000)
    return "%dms" % ms


def poll_path(path, wait):
    """The path of one ``GET /v1/jobs/{id}``, waiting up to ``wait`` seconds."""
    value = wait_param(wait)
    return path if value is None else "%s?wait=%s" % (path, value)


class PollClock(object):
    """When to long-poll, for how long, and when to give up (shared by both job handles).

    ``next_wait()`` is the ``wait`` of the next poll: ``min(remaining, max_wait)``.
    ``after_pending(asked, took)`` is called after a poll came back unfinished; it returns None
    to give up (the timeout passed), else the seconds to pause first: 0 normally, a short growing
    pause when the daemon answered well before the wait it was asked for (so a daemon that does
    not long-poll is not flooded with requests).
    """

    def __init__(self, timeout, max_wait):
        check_wait_timeout(timeout)
        self.timeout = timeout
        self.max_wait = max_wait
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.early = 0

    def remaining(self):
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())

    def next_wait(self):
        remaining = self.remaining()
        return self.max_wait if remaining is None else min(remaining, self.max_wait)

    def after_pending(self, asked, took):
        remaining = self.remaining()
        if remaining is not None and remaining <= 0:
            return None
        if took < max(asked, 0.02) / 2:
            self.early += 1
            pause = min(1.0, 0.01 * (2 ** min(self.early, 10)))
            return pause if remaining is None else min(pause, remaining)
        self.early = 0
        return 0.0

    def timeout_error(self, job_id):
        return ClientTimeout("job %s did not finish within %g s; it keeps running on the daemon "
                             "(cancel() stops it, result() can wait again)"
                             % (job_id, self.timeout), job_may_have_run=True)


def error_from_response(status, response, data):
    """The exception for a non-200 answer.  ``response``: anything with ``reason`` and
    ``getheader(name)`` (``http.client.HTTPResponse``, ``bulkhead.aio``'s response)."""
    problem = problem_from_body(status, response.reason, response.getheader("Content-Type"),
                                data, response.getheader("X-Bulkhead-Outcome"))
    return error_from_problem(status, problem,
                              parse_retry_after(response.getheader("Retry-After")))


def _json_object(data):
    try:
        value = json.loads(data) if data else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _runs(response):
    value = response.getheader("X-Bulkhead-Runs")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def submit_answer(status, response, data, pool):
    """Reads the answer to ``POST .../jobs?wait=0`` into the keyword arguments of a job handle
    (``job_id``, ``pool``, ``duplicate``, ``location``, ``final``), or raises.

    ``202``: the job is journaled.  ``200`` (a daemon that ran the job synchronously, ignoring
    ``wait=0``): the handle is already finished, with the result.  Anything else (unknown pool,
    queue full, shutting down, ...) raises like ``call``: the job was not accepted.
    """
    location = response.getheader("Location")
    if status == 202:
        body = _json_object(data) or {}
        job_id = body.get("job")
        if job_id is None and location:
            job_id = location.rstrip("/").rsplit("/", 1)[-1] or None
        if job_id is None:
            job_id = response.getheader("X-Bulkhead-Job")
        if isinstance(job_id, int) and not isinstance(job_id, bool):
            job_id = str(job_id)
        if not isinstance(job_id, str) or not job_id:
            raise ApiError({"detail": "202 answer to a job submission names no job (body %r, "
                                      "Location %r)" % (data[:200], location)}, status)
        return {"job_id": job_id, "pool": body.get("pool") or pool,
                "duplicate": body.get("duplicate") is True, "location": location, "final": None}
    if status == 200:
        job_id = response.getheader("X-Bulkhead-Job")
        if not job_id:
            raise ApiError({"detail": "the daemon answered a job submission with 200 and no "
                                      "X-Bulkhead-Job header"}, status)
        return {"job_id": job_id, "pool": pool, "duplicate": False, "location": location,
                "final": (status, response, data)}
    raise error_from_response(status, response, data)


def job_state(status, response, data, job_id):
    """Reads an answer to ``GET /v1/jobs/{id}``: None when it is the job's final answer (``200``,
    or a problem carrying a job ``outcome``), else the ``202`` body (a dict with at least ``job``
    and ``state``, and ``runs`` when the daemon said).  Other answers (unknown or malformed id,
    ...) raise their exception."""
    if status == 200:
        return None
    if status == 202:
        body = _json_object(data) or {}
        body.setdefault("job", job_id)
        body.setdefault("state", "unknown")
        runs = _runs(response)
        if runs is not None:
            body.setdefault("runs", runs)
        return body
    problem = problem_from_body(status, response.reason, response.getheader("Content-Type"),
                                data, response.getheader("X-Bulkhead-Outcome"))
    if isinstance(problem.get("outcome"), str) and problem["outcome"]:
        return None
    raise error_from_problem(status, problem,
                             parse_retry_after(response.getheader("Retry-After")))


def final_value(final):
    """The result bytes of a final answer ``(status, response, data)``, or raises its exception
    (exactly what ``call`` does with the same answer)."""
    status, response, data = final
    if status == 200:
        return data
    raise error_from_response(status, response, data)


def final_summary(final, job_id):
    """``status()`` of a finished job: ``{"job", "state": "finished", "outcome", "http_status"}``
    plus ``runs`` when the daemon sent ``X-Bulkhead-Runs``."""
    status, response, data = final
    outcome = response.getheader("X-Bulkhead-Outcome")
    if status == 200:
        outcome = outcome or "ok"
    else:
        problem = problem_from_body(status, response.reason, response.getheader("Content-Type"),
                                    data, outcome)
        outcome = problem.get("outcome") or outcome
    summary = {"job": response.getheader("X-Bulkhead-Job") or job_id, "state": "finished",
               "outcome": outcome, "http_status": status}
    runs = _runs(response)
    if runs is not None:
        summary["runs"] = runs
    return summary


def cancel_answer(status, response, data):
    """Reads the answer to ``DELETE /v1/jobs/{id}``: True if the cancel was accepted, False if
    the job had already finished; raises for anything else (unknown job, ...)."""
    if status in (200, 202, 204):
        return True
    problem = problem_from_body(status, response.reason, response.getheader("Content-Type"),
                                data, None)
    if status == 409 and (problem.get("error") == "already_finished"
                          or (problem.get("outcome") and not problem.get("error"))):
        return False
    raise error_from_problem(status, problem,
                             parse_retry_after(response.getheader("Retry-After")))


# -- the blocking client --------------------------------------------------------------------------


class Client(object):
    """Client of one bulkhead daemon, over one keep-alive connection.  Not thread-safe: use one
    ``Client`` per thread.

    ``url``: ``http://HOST:PORT`` (default ``http://127.0.0.1:8787``) or ``unix:/path/to.sock``.
    ``timeout``: default job timeout in seconds for ``call``/``call_json``/``submit`` (sent as
    ``X-Bulkhead-Timeout``; None leaves the pool's ``job_timeout``).  The socket waits that long
    plus ``timeout_margin`` seconds; with no timeout it waits as long as the daemon takes.

    Attributes one may tune: ``timeout_margin`` (5 s), ``max_poll_wait`` (30 s: the longest
    ``wait`` of one long-poll in ``JobHandle.result``), ``ack_timeout`` (30 s: socket timeout of
    submit, status and cancel requests; None waits forever).
    """

    timeout_margin = TIMEOUT_MARGIN
    max_poll_wait = MAX_POLL_WAIT
    ack_timeout = ACK_TIMEOUT

    def __init__(self, url=DEFAULT_URL, timeout=None):
        if timeout is not None:
            timeout_header(timeout)  # validate now rather than on the first call
        kind, where, prefix = parse_url(url)
        self.url = url
        self.timeout = timeout
        if kind == "unix":
            self._conn = _UnixConnection(where, timeout=None)
        else:
            self._conn = _TCPConnection(where[0], where[1], timeout=None)
        self._prefix = prefix
        self._job_paths = {}
        self._sock_timeout = None
        self._poller = None
        self._polled_sock = None

    # -- public API ------------------------------------------------------------------------------

    def call(self, pool, payload, timeout=None):
        """Run one job on ``pool``; returns the handler's result as bytes.

        ``payload``: bytes-like, or str (sent as UTF-8).  ``timeout``: seconds (default: the
        client's).  Raises a ``JobFailed`` subclass for any outcome but ``ok``, ``ApiError``
        subclasses for refused requests, ``TransportError`` when the daemon cannot be reached.
        """
        payload, content_type = encode_payload(payload)
        return self._job(pool, payload, content_type, timeout)

    def call_json(self, pool, obj, timeout=None):
        """Run one job with a JSON payload and parse the JSON result.

        ``obj``: a dict or list (JSON-encoded here), or already-encoded bytes/str.
        """
        return json.loads(self._job(pool, encode_json_payload(obj), "application/json", timeout))

    def submit(self, pool, payload, timeout=None, idempotency_key=None):
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
        payload, content_type = encode_payload(payload)
        return self._submit(pool, payload, content_type, timeout, idempotency_key)

    def submit_json(self, pool, obj, timeout=None, idempotency_key=None):
        """``submit`` with a JSON payload (see ``call_json``); read the result with
        ``JobHandle.result_json``."""
        return self._submit(pool, encode_json_payload(obj), "application/json", timeout,
                            idempotency_key)

    def job(self, job_id, pool=None):
        """A ``JobHandle`` for an existing job id (from ``JobHandle.id``, another process, or the
        ``X-Bulkhead-Job`` / ``JobFailed.job_id`` of a sync call).  Nothing is sent until it is
        used; an unknown id raises ``ApiError`` (``error == "unknown_job"``, status 404) then."""
        return JobHandle(self, check_job_id(job_id), pool=pool)

    def pools(self):
        """``GET /v1/pools``: the pools, their counters and workers (a dict)."""
        status, response, data = self._request("GET", self._prefix + "/v1/pools", None, None,
                                                (), None, idempotent=True)
        if status != 200:
            raise error_from_response(status, response, data)
        return json.loads(data)

    def health(self):
        """``GET /healthz``: ``{"status": "ok"}``, or ``{"status": "shutting_down"}`` (503)."""
        status, response, data = self._request("GET", self._prefix + "/healthz", None, None,
                                                (), None, idempotent=True)
        return health_answer(status, response, data)

    def close(self):
        """Close the connection (a later call opens a new one)."""
        self._conn.close()
        self._poller = None
        self._polled_sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __repr__(self):
        return "Client(%r)" % (self.url,)

    # -- internals -------------------------------------------------------------------------------

    def _pool_path(self, pool):
        path = self._job_paths.get(pool)
        if path is None:
            path = self._job_paths[pool] = pool_jobs_path(self._prefix, pool)
        return path

    def _job(self, pool, payload, content_type, timeout):
        path = self._pool_path(pool)
        if timeout is None:
            timeout = self.timeout
        headers = job_request_headers(timeout)
        sock_timeout = None if timeout is None else timeout + self.timeout_margin
        status, response, data = self._request("POST", path, payload, content_type, headers,
                                               sock_timeout, idempotent=False)
        if status == 200:
            return data
        raise error_from_response(status, response, data)

    def _submit(self, pool, payload, content_type, timeout, idempotency_key):
        path = self._pool_path(pool) + "?wait=0"
        headers = job_request_headers(self.timeout if timeout is None else timeout,
                                      idempotency_key)
        status, response, data = self._request("POST", path, payload, content_type, headers,
                                               self.ack_timeout,
                                               idempotent=idempotency_key is not None)
        return JobHandle(self, **submit_answer(status, response, data, pool))

    def _error(self, status, response, data):
        return error_from_response(status, response, data)

    def _idle_connection_dropped(self):
        """True if the server closed (or wrote to) our idle keep-alive connection."""
        sock = self._conn.sock
        if sock is not self._polled_sock:
            self._poller = poll()
            self._poller.register(sock, POLLIN)
            self._polled_sock = sock
        return bool(self._poller.poll(0))

    def _request(self, method, path, body, content_type, headers, sock_timeout, idempotent):
        conn = self._conn
        if sock_timeout != self._sock_timeout:
            conn.timeout = sock_timeout
            if conn.sock is not None:
                conn.sock.settimeout(sock_timeout)
            self._sock_timeout = sock_timeout

        retried = False
        while True:
            # A socket exists only after an earlier request on it: it is a reused connection.
            reused = conn.sock is not None
            if reused and self._idle_connection_dropped():
                conn.close()
                reused = False
            try:
                conn.putrequest(method, path, skip_accept_encoding=True)
                if body is not None:
                    conn.putheader("Content-Type", content_type)
                    conn.putheader("Content-Length", str(len(body)))
                for name, value in headers:
                    conn.putheader(name, value)
                conn.endheaders(body)
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                if reused and not retried and not isinstance(exc, socket.timeout):
                    retried = True   # never reached the server complete: safe to send again
                    continue
                raise TransportError("cannot send request to bulkhead at %s: %s"
                                     % (self.url, _describe(exc))) from exc
            try:
                response = conn.getresponse()
                data = response.read()
            except socket.timeout as exc:
                conn.close()
                raise ClientTimeout("no response from bulkhead at %s within %g s (%s %s); the "
                                    "job may still be running" % (self.url, sock_timeout,
                                                                  method, path),
                                    job_may_have_run=True) from exc
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                if idempotent and not retried:
                    retried = True
                    continue
                raise TransportError("connection to bulkhead at %s lost after the request was "
                                     "sent (%s %s): %s; the job may have run, so it was not sent "
                                     "again" % (self.url, method, path, _describe(exc)),
                                     job_may_have_run=not idempotent) from exc
            return response.status, response, data


def health_answer(status, response, data):
    """``/healthz``'s body for 200 and 503, or raises."""
    if status in (200, 503):
        body = _json_object(data)
        if body is not None and "outcome" not in body and "error" not in body:
            return body
    raise error_from_response(status, response, data)


class JobHandle(object):
    """A job submitted with ``Client.submit`` (or named with ``Client.job``).

    ``id`` (str), ``pool`` (None when the handle was made from a bare id), ``duplicate`` (True
    when the daemon matched the ``Idempotency-Key`` of an earlier submission, which includes a
    submission this client resent after losing the first answer), ``location`` (the ``Location``
    header).

    The handle sends its requests through the ``Client`` that made it, so like that client it
    belongs to ONE thread at a time.  To wait for the job from another thread, give that thread
    its own client and use ``other_client.job(handle.id)``.  Once the job's final answer has been
    read it is kept in the handle: ``result()`` and ``status()`` do not ask the daemon again.
    """

    def __init__(self, client, job_id, pool=None, duplicate=False, location=None, final=None):
        self.client = client
        self.id = job_id
        self.pool = pool
        self.duplicate = duplicate
        self.location = location
        self._path = job_path(client._prefix, job_id)
        self._final = final

    def result(self, timeout=None):
        """Wait for the job and return its result as bytes, or raise its outcome's exception,
        exactly like ``Client.call`` would have.

        ``timeout``: seconds to wait (None: as long as it takes; 0: look once).  When it passes
        first, raises ``ClientTimeout`` (``job_may_have_run`` True): the job keeps running and
        ``result`` may be called again.  Long-polls ``GET /v1/jobs/{id}?wait=...`` in rounds of at
        most ``client.max_poll_wait`` seconds.
        """
        if self._final is None:
            clock = PollClock(timeout, self.client.max_poll_wait)
            while True:
                wait = clock.next_wait()
                started = time.monotonic()
                status, response, data = self._get(wait, wait + self.client.timeout_margin)
                if job_state(status, response, data, self.id) is None:
                    self._final = (status, response, data)
                    break
                pause = clock.after_pending(wait, time.monotonic() - started)
                if pause is None:
                    raise clock.timeout_error(self.id)
                if pause:
                    time.sleep(pause)
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
            status, response, data = self._get(0, self.client.ack_timeout)
            state = job_state(status, response, data, self.id)
            if state is not None:
                return state
            self._final = (status, response, data)
        return final_summary(self._final, self.id)

    def cancel(self):
        """``DELETE /v1/jobs/{id}``: True if the cancel was accepted (the job will end
        ``cancelled``: ``result`` raises ``Cancelled``), False if the job had already finished.
        Raises ``ApiError`` for an unknown job."""
        status, response, data = self.client._request("DELETE", self._path, None, None, (),
                                                      self.client.ack_timeout, idempotent=True)
        return cancel_answer(status, response, data)

    def _get(self, wait, sock_timeout):
        return self.client._request("GET", poll_path(self._path, wait), None, None, (),
                                    sock_timeout, idempotent=True)

    def __repr__(self):
        return "JobHandle(id=%r, pool=%r%s)" % (self.id, self.pool,
                                                 ", duplicate=True" if self.duplicate else "")


def _as_bytes(payload):
    if isinstance(payload, (bytes, bytearray)):
        return payload
    try:
        view = memoryview(payload)
    except TypeError:
        raise TypeError("payload must be bytes-like or str, got %s"
                        % type(payload).__name__) from None
    return view.tobytes()


def _describe(exc):
    text = str(exc)
    return "%s: %s" % (type(exc).__name__, text) if text else type(exc).__name__
