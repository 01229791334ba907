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
(``pools``, ``health``) are retried once on a fresh connection in that case too.
"""

import http.client
import json
import socket
from select import POLLIN, poll
from urllib.parse import quote, urlsplit

from .errors import ClientTimeout, TransportError, error_from_problem

__all__ = ["Client", "DEFAULT_URL"]

DEFAULT_URL = "http://127.0.0.1:8787"
# The client waits this much longer than a job's timeout: the daemon still has to capture stacks,
# stop the worker (SIGTERM, grace, SIGKILL) and answer with the evidence.
TIMEOUT_MARGIN = 5.0
_COALESCE = 64 * 1024   # bodies up to this size go out in the same send() as the headers


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


class Client(object):
    """Client of one bulkhead daemon, over one keep-alive connection.  Not thread-safe: use one
    ``Client`` per thread.

    ``url``: ``http://HOST:PORT`` (default ``http://127.0.0.1:8787``) or ``unix:/path/to.sock``.
    ``timeout``: default job timeout in seconds for ``call``/``call_json`` (sent as
    ``X-Bulkhead-Timeout``; None leaves the pool's ``job_timeout``).  The socket waits that long
    plus ``timeout_margin`` seconds; with no timeout it waits as long as the daemon takes.
    """

    timeout_margin = TIMEOUT_MARGIN

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
        if isinstance(payload, bytes):
            content_type = "application/octet-stream"
        elif isinstance(payload, str):
            payload = payload.encode("utf-8")
            content_type = "text/plain; charset=utf-8"
        else:
            payload = _as_bytes(payload)
            content_type = "application/octet-stream"
        return self._job(pool, payload, content_type, timeout)

    def call_json(self, pool, obj, timeout=None):
        """Run one job with a JSON payload and parse the JSON result.

        ``obj``: a dict or list (JSON-encoded here), or already-encoded bytes/str.
        """
        if isinstance(obj, (dict, list)):
            payload = json.dumps(obj, separators=(",", ":")).encode("utf-8")
        elif isinstance(obj, str):
            payload = obj.encode("utf-8")
        else:
            payload = _as_bytes(obj)
        return json.loads(self._job(pool, payload, "application/json", timeout))

    def pools(self):
        """``GET /v1/pools``: the pools, their counters and workers (a dict)."""
        status, response, data = self._request("GET", self._prefix + "/v1/pools", None, None,
                                                None, idempotent=True)
        if status != 200:
            raise self._error(status, response, data)
        return json.loads(data)

    def health(self):
        """``GET /healthz``: ``{"status": "ok"}``, or ``{"status": "shutting_down"}`` (503)."""
        status, response, data = self._request("GET", self._prefix + "/healthz", None, None,
                                                None, idempotent=True)
        if status in (200, 503):
            try:
                body = json.loads(data)
            except ValueError:
                body = None
            if isinstance(body, dict) and "outcome" not in body and "error" not in body:
                return body
        raise self._error(status, response, data)

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

    def _job(self, pool, payload, content_type, timeout):
        path = self._job_paths.get(pool)
        if path is None:
            if not isinstance(pool, str) or not pool:
                raise ValueError("pool must be a non-empty string, got %r" % (pool,))
            path = self._job_paths[pool] = "%s/v1/pools/%s/jobs" % (self._prefix,
                                                                   quote(pool, safe=""))
        if timeout is None:
            timeout = self.timeout
        status, response, data = self._request("POST", path, payload, content_type, timeout,
                                               idempotent=False)
        if status == 200:
            return data
        raise self._error(status, response, data)

    def _error(self, status, response, data):
        problem = problem_from_body(status, response.reason, response.getheader("Content-Type"),
                                    data, response.getheader("X-Bulkhead-Outcome"))
        return error_from_problem(status, problem,
                                  parse_retry_after(response.getheader("Retry-After")))

    def _idle_connection_dropped(self):
        """True if the server closed (or wrote to) our idle keep-alive connection."""
        sock = self._conn.sock
        if sock is not self._polled_sock:
            self._poller = poll()
            self._poller.register(sock, POLLIN)
            self._polled_sock = sock
        return bool(self._poller.poll(0))

    def _request(self, method, path, body, content_type, timeout, idempotent):
        conn = self._conn
        header = None
        sock_timeout = None
        if timeout is not None:
            header = timeout_header(timeout)
            sock_timeout = timeout + self.timeout_margin
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
                if header is not None:
                    conn.putheader("X-Bulkhead-Timeout", header)
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

