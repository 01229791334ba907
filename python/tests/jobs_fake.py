"""An in-thread HTTP peer implementing the job endpoints of docs/api.md in memory, for the client
tests (sync ``Client`` + ``JobHandle`` and ``bulkhead.aio``):

- ``POST /v1/pools/{pool}/jobs?wait=0`` -> ``202`` + ``Location``, ``Idempotency-Key`` duplicates;
  without ``wait=0`` it answers like a sync call once the job has finished;
- ``GET /v1/jobs/{id}?wait=D`` long-polls (``202`` running / the final answer / ``404`` / ``400``);
- ``DELETE /v1/jobs/{id}`` (``202`` cancelling / ``409`` already_finished / ``404``);
- ``GET /healthz`` and ``GET /v1/pools``.

Jobs do not run by themselves: a test finishes one with ``finish(id, answer)`` (or lets
``on_submit`` do it).  Every wait is bounded and event-driven: ``wait_polling(n)`` returns once
``n`` long-polls are blocked in the server, so a test can finish a job while a client waits.
"""

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import ThreadingUnixStreamServer
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

import bulkhead

WAIT = 15.0    # bound of every wait in these tests
PROBLEM = "application/problem+json"
JSON = "application/json"


# (outcome, HTTP status, exception class, extra headers): every outcome of docs/api.md, and one
# this client version does not know.
OUTCOMES = [
    ("handler_error", 422, bulkhead.HandlerError, {}),
    ("crashed", 502, bulkhead.WorkerCrashed, {}),
    ("hung", 504, bulkhead.WorkerHung, {}),
    ("timed_out", 504, bulkhead.JobTimedOut, {}),
    ("oom_killed", 502, bulkhead.OomKilled, {}),
    ("resource_exhausted", 502, bulkhead.ResourceExhausted, {}),
    ("poison", 502, bulkhead.Poisoned, {}),
    ("overloaded", 503, bulkhead.Overloaded, {"Retry-After": "2"}),
    ("unavailable", 503, bulkhead.Unavailable, {"Retry-After": "1"}),
    ("cancelled", 409, bulkhead.Cancelled, {}),
    ("some_future_outcome", 500, bulkhead.JobFailed, {}),
]


def ok(body=b"result", content_type="application/octet-stream", **headers):
    all_headers = {"Content-Type": content_type, "X-Bulkhead-Outcome": "ok",
                   "X-Bulkhead-Attempts": "1"}
    all_headers.update(headers)
    return (200, all_headers, body)


def problem_doc(outcome, status, **extra):
    doc = {"type": "https://bulkhead.dev/problems/%s" % outcome,
           "title": outcome.replace("_", " "), "status": status,
           "detail": "the %s detail" % outcome, "outcome": outcome, "job": "17", "pool": "faces",
           "attempts": [], "timings": {"queue_ms": 0.1}}
    doc.update(extra)
    return doc


def failure(outcome, status, headers=None, **extra):
    all_headers = {"Content-Type": PROBLEM, "X-Bulkhead-Outcome": outcome}
    all_headers.update(headers or {})
    return (status, all_headers, json.dumps(problem_doc(outcome, status, **extra)).encode())


def api_error(status, kind, detail=""):
    doc = {"type": "https://bulkhead.dev/problems/%s" % kind, "title": kind.replace("_", " "),
           "status": status, "error": kind, "detail": detail}
    return (status, {"Content-Type": PROBLEM}, json.dumps(doc).encode())


def _json(status, obj, **headers):
    all_headers = {"Content-Type": JSON}
    all_headers.update(headers)
    return (status, all_headers, json.dumps(obj).encode())


_DURATION = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(ms|s|m)$")


def parse_duration(text):
    """Seconds for ``250ms`` / ``10s`` / ``2m``, or None."""
    match = _DURATION.match(text or "")
    if not match:
        return None
    return float(match.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0}[match.group(2)]


class FakeJob(object):
    def __init__(self, job_id, pool, payload, headers, key):
        self.id = job_id
        self.pool = pool
        self.payload = payload
        self.headers = headers
        self.key = key
        self.state = "queued"
        self.answer = None      # (status, headers, body) once finished
        self.runs = 1

    @property
    def finished(self):
        return self.answer is not None


class Request(object):
    def __init__(self, method, target, headers, body, connection, wfile):
        self.method = method
        self.target = target                 # path with query
        parts = urlsplit(target)
        self.path = parts.path
        self.query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        self.headers = headers
        self.body = body
        self.connection = connection
        self.wfile = wfile


class FakeJobsDaemon(object):
    """See the module docstring.  Tunables: ``pools`` (known pool names), ``on_submit(job)``
    (called for each new job, outside the lock: may ``finish`` it), ``honour_wait`` (False: polls
    answer at once, like a daemon that ignores ``wait``), ``overrides[(method, target)]`` (a
    function ``request -> (status, headers, body)``, or None to drop the connection without an
    answer; ``handle_default(request)`` gives the normal answer), ``close_after_response`` (close
    each connection after its answer without saying so).  Recorded: ``requests``,
    ``connections``, ``closed``."""

    def __init__(self, unix_path=None):
        self.pools = {"faces", "slow"}
        self.jobs = {}
        self.keys = {}
        self.next_id = 1
        self.on_submit = None
        self.honour_wait = True
        self.overrides = {}
        self.requests = []
        self.connections = 0
        self.polling = 0
        self.closed = 0
        self.close_after_response = False
        self.cond = threading.Condition()
        self.release = threading.Event()
        daemon = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                with daemon.cond:
                    daemon.connections += 1
                    self.connection_id = daemon.connections

            def log_message(self, *args):
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                request = Request(self.command, self.path, self.headers, body,
                                  self.connection_id, self.wfile)
                with daemon.cond:
                    daemon.requests.append(request)
                    daemon.cond.notify_all()
                override = daemon.overrides.get((self.command, self.path))
                if override is not None:
                    response = override(request)
                else:
                    response = daemon.handle_default(request)
                if response is None:        # drop the connection without an answer
                    self.close_connection = True
                    return
                status, headers, payload = response
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                self.wfile.flush()
                if daemon.close_after_response:
                    self.close_connection = True

            do_GET = do_POST = do_DELETE = _handle

        if unix_path is None:
            self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
            self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        else:
            class UnixHandler(Handler):
                def address_string(self):
                    return "unix"
            self.server = ThreadingUnixStreamServer(unix_path, UnixHandler)
            self.url = "unix:" + unix_path
        self.server.daemon_threads = True
        print_error = self.server.handle_error

        def handle_error(request, client_address):
            import sys
            if not isinstance(sys.exc_info()[1], OSError):   # a client that went away is normal
                print_error(request, client_address)
        self.server.handle_error = handle_error
        close_request = self.server.shutdown_request

        def shutdown_request(request):
            close_request(request)
            with self.cond:
                self.closed += 1
                self.cond.notify_all()
        self.server.shutdown_request = shutdown_request
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    # -- what tests call ---------------------------------------------------------------------------

    def add_job(self, pool="faces", payload=b"", state="queued"):
        """A job journaled without a submission over HTTP (e.g. by another process)."""
        with self.cond:
            job = self._new_job(pool, payload, {}, None)
            job.state = state
            return job

    def finish(self, job_id, answer):
        with self.cond:
            job = self.jobs[str(job_id)]
            job.answer = answer
            job.state = "finished"
            self.cond.notify_all()

    def set_state(self, job_id, state, runs=None):
        with self.cond:
            job = self.jobs[str(job_id)]
            job.state = state
            if runs is not None:
                job.runs = runs

    def wait_polling(self, count=1, timeout=WAIT):
        """Returns once ``count`` long-polls are blocked waiting for jobs."""
        with self.cond:
            if not self.cond.wait_for(lambda: self.polling >= count, timeout):
                raise AssertionError("%d long-polls waiting, expected %d"
                                     % (self.polling, count))

    def wait_requests(self, count, timeout=WAIT):
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.requests) >= count, timeout):
                raise AssertionError("%d requests, expected %d" % (len(self.requests), count))

    def wait_closed(self, count, timeout=WAIT):
        """Returns once the server has closed ``count`` connections."""
        with self.cond:
            if not self.cond.wait_for(lambda: self.closed >= count, timeout):
                raise AssertionError("%d connections closed, expected %d" % (self.closed, count))

    def requests_to(self, method, path):
        return [r for r in self.requests if r.method == method and r.path == path]

    def close(self):
        self.release.set()
        with self.cond:
            self.cond.notify_all()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(WAIT)

    # -- the API -----------------------------------------------------------------------------------

    def handle_default(self, req):
        segments = req.path.split("/")
        if req.path == "/healthz" and req.method == "GET":
            return _json(200, {"status": "ok"})
        if req.path == "/v1/pools" and req.method == "GET":
            return _json(200, {"pools": [{"name": name} for name in sorted(self.pools)]})
        if len(segments) == 5 and segments[:3] == ["", "v1", "pools"] and segments[4] == "jobs":
            if req.method != "POST":
                return api_error(405, "method_not_allowed")
            return self._submit(req, unquote(segments[3]))
        if len(segments) == 4 and segments[:3] == ["", "v1", "jobs"]:
            job_id = unquote(segments[3])
            if not job_id.isdigit():
                return api_error(400, "bad_request", "malformed job id %r" % job_id)
            if req.method == "GET":
                return self._poll(req, job_id)
            if req.method == "DELETE":
                return self._cancel(job_id)
            return api_error(405, "method_not_allowed")
        return api_error(404, "not_found", "no route %s %s" % (req.method, req.path))

    def _new_job(self, pool, payload, headers, key):
        job = FakeJob(str(self.next_id), pool, payload, headers, key)
        self.next_id += 1
        self.jobs[job.id] = job
        if key is not None:
            self.keys[key] = job.id
        return job

    def _submit(self, req, pool):
        if pool not in self.pools:
            return api_error(404, "unknown_pool", "no pool named %r" % pool)
        timeout = req.headers.get("X-Bulkhead-Timeout")
        if timeout is not None and not parse_duration(timeout):
            return api_error(400, "bad_request", "bad X-Bulkhead-Timeout %r" % timeout)
        key = req.headers.get("Idempotency-Key")
        duplicate = False
        with self.cond:
            if key is not None and key in self.keys:
                job = self.jobs[self.keys[key]]
                duplicate = True
            else:
                job = self._new_job(pool, req.body, dict(req.headers), key)
        if not duplicate and self.on_submit is not None:
            self.on_submit(job)
        if req.query.get("wait") == "0":
            body = {"job": job.id, "pool": job.pool, "duplicate": duplicate, "state": job.state}
            return _json(202, body, Location="/v1/jobs/%s" % job.id,
                         **{"X-Bulkhead-Job": job.id})
        with self.cond:       # a sync call: answer once the job has finished
            self.cond.wait_for(lambda: job.finished or self.release.is_set(), WAIT)
            if not job.finished:
                return None
            return self._final(job)

    def _final(self, job):
        status, headers, body = job.answer
        headers = dict(headers, **{"X-Bulkhead-Job": job.id, "X-Bulkhead-Runs": str(job.runs)})
        return (status, headers, body)

    def _poll(self, req, job_id):
        wait = 0.0
        if "wait" in req.query:
            wait = parse_duration(req.query["wait"])
            if wait is None:
                return api_error(400, "bad_request", "bad wait %r" % req.query["wait"])
            wait = min(wait, 60.0)
        with self.cond:
            job = self.jobs.get(job_id)
            if job is None:
                return api_error(404, "unknown_job", "no job %s" % job_id)
            if not job.finished and wait > 0 and self.honour_wait:
                self.polling += 1
                self.cond.notify_all()
                try:
                    self.cond.wait_for(lambda: job.finished or self.release.is_set(), wait)
                finally:
                    self.polling -= 1
            if job.finished:
                return self._final(job)
            headers = {"X-Bulkhead-Job": job.id}
            if job.runs > 1:     # the real daemon does not say on 202s; a later one might
                headers["X-Bulkhead-Runs"] = str(job.runs)
            return _json(202, {"job": job.id, "state": job.state}, **headers)

    def _cancel(self, job_id):
        with self.cond:
            job = self.jobs.get(job_id)
            if job is None:
                return api_error(404, "unknown_job", "no job %s" % job_id)
            if job.finished:
                return api_error(409, "already_finished", "job %s has finished" % job_id)
            job.answer = failure("cancelled", 409, job=job.id, pool=job.pool)
            job.state = "finished"
            self.cond.notify_all()
            return _json(202, {"job": job.id, "state": "cancelling"})


@pytest.fixture
def jobs_daemon():
    server = FakeJobsDaemon()
    yield server
    server.close()


@pytest.fixture
def jobs_unix_daemon(tmp_path):
    server = FakeJobsDaemon(unix_path=str(tmp_path / "bulkhead.sock"))
    yield server
    server.close()
