"""The bulkhead API as the clients speak it (docs/api.md), sans-I/O: no sockets, no event loop.

``bulkhead.client.Client`` (blocking) and ``bulkhead.aio.AsyncClient`` (asyncio) are thin
transports over this module and ``bulkhead._h1`` (the HTTP/1.1 wire format): this one builds what
goes out (URLs, payloads, headers, the socket timeout that goes with a job's deadline) and reads
what comes back (status, headers and body) into values or the exception of the outcome, so both
clients raise the same exceptions for the same answers.  It never sees bytes on the wire.
"""

import json
import os
import time
from urllib.parse import quote, urlsplit

from .errors import ApiError, ClientTimeout, error_from_problem

DEFAULT_URL = "http://127.0.0.1:8787"
URL_ENV = "BULKHEAD_URL"   # the daemon's URL when none is passed (as for the CLI)
# A sync call waits for its answer this much longer than its timeout (or 10% of it, if more): the
# daemon answers a deadline only once the worker is gone, after the stacks are taken (200 ms) and
# the SIGTERM grace (kill_grace, 1 s by default).  Raise ``timeout_margin`` for a longer grace.
TIMEOUT_MARGIN = 2.0
TIMEOUT_SLACK = 0.1
# Results are held in memory whole: a bound keeps a wrong Content-Length (or a peer that is not
# the daemon) from taking all of it.  The daemon's own results are at most a pool's max_payload.
DEFAULT_MAX_RESPONSE_BODY = 1 << 30
# The longest ``wait`` of one long-poll of a job (the daemon allows up to 60 s): a poll that comes
# back empty after this long is simply sent again, and a dead peer is noticed within it (plus the
# margin).
MAX_POLL_WAIT = 30.0
# Socket timeout of the requests that the daemon answers without running anything: submit (the
# 202 comes once the job is journaled), status, cancel.
ACK_TIMEOUT = 30.0


def check_max_response_body(value):
    """Validates a client's ``max_response_body``: an int >= 0, or None for no bound."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                              or value < 0):
        raise ValueError("max_response_body must be an int >= 0 or None, got %r" % (value,))


def resolve_url(url):
    """``url``, or when it is None ``$BULKHEAD_URL``, or ``DEFAULT_URL``."""
    if url is None:
        url = os.environ.get(URL_ENV) or DEFAULT_URL
    return url


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


def answer_timeout(timeout, margin):
    """How long a sync call with a deadline of ``timeout`` seconds waits for its answer: longer
    than the daemon takes to answer the deadline itself, so the caller gets the typed outcome
    (``JobTimedOut`` and its ``stage``) rather than a ``ClientTimeout``.  None: no limit."""
    if timeout is None:
        return None
    return timeout + max(margin or 0.0, timeout * TIMEOUT_SLACK)


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


def job_request_headers(timeout, idempotency_key=None, deadline=False, allow_poison=False):
    """The extra headers of a job submission (sync or async).

    ``timeout`` goes out as ``X-Bulkhead-Timeout`` (the run limit of an attempt, replacing the
    pool's ``job_timeout``) and, with ``deadline``, also as ``X-Bulkhead-Deadline``: the caller's
    budget for the whole job, queue and every attempt included.  A daemon that predates the
    deadline header still bounds the run with the first one.  ``allow_poison`` runs a payload
    the daemon quarantined instead of refusing it as ``poison``."""
    headers = []
    if timeout is not None:
        value = timeout_header(timeout)
        headers.append(("X-Bulkhead-Timeout", value))
        if deadline:
            headers.append(("X-Bulkhead-Deadline", value))
    if idempotency_key is not None:
        headers.append(("Idempotency-Key", idempotency_header(idempotency_key)))
    if allow_poison:
        headers.append(("X-Bulkhead-Allow-Poison", "1"))
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
    ``getheader(name)`` (``bulkhead._h1.Response``)."""
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


def health_answer(status, response, data):
    """``/healthz``'s body for 200 and 503, or raises."""
    if status in (200, 503):
        body = _json_object(data)
        if body is not None and "outcome" not in body and "error" not in body:
            return body
    raise error_from_response(status, response, data)


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
