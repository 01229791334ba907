"""The HTTP client against a tiny in-process HTTP peer serving canned responses (docs/api.md)."""

import json
import pickle
import socket

import pytest

import bulkhead
from bulkhead import _h1
from bulkhead import client as client_module
from bulkhead import client as C
from bulkhead import errors as E

PROBLEM = "application/problem+json"


def problem(outcome, status, **extra):
    doc = {"type": "https://bulkhead.dev/problems/%s" % outcome, "title": outcome.replace("_", " "),
           "status": status, "detail": "the %s detail" % outcome, "outcome": outcome,
           "job": "17", "pool": "faces", "attempts": [], "timings": {"queue_ms": 0.1}}
    doc.update(extra)
    return doc


def canned(status, doc, headers=None):
    all_headers = {"Content-Type": PROBLEM, "X-Bulkhead-Outcome": doc.get("outcome", "")}
    all_headers.update(headers or {})
    return (status, all_headers, json.dumps(doc).encode())


CRASH_ATTEMPT = {
    "attempt": 1, "worker": "faces-2", "pid": 4242, "outcome": "crashed", "signal": "SIGABRT",
    "signal_number": 6, "exit_code": None, "core_dumped": False, "cause": "killed by signal",
    "stderr_tail": "line 1\nline 2\nline 3\nline 4\nline 5\nline 6\n"
                   "free(): double free detected in tcache 2\n",
    "stderr_dropped_bytes": 0, "stacks": "Fatal Python error: Aborted\n", "run_ms": 41.2,
}

JOBS = "/v1/pools/faces/jobs"


def ok(body=b"result", content_type="application/octet-stream"):
    return (200, {"Content-Type": content_type, "X-Bulkhead-Outcome": "ok"}, body)


# -- success paths -------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(1 << 20) - 1, 1 << 20, 3 * (1 << 20) + 7])
def test_large_answers_to_large_requests_are_read_whole_and_exact(daemon, size):
    # a large request's answer is read head first, then its body in one read (client.py)
    daemon.routes[("POST", JOBS)] = lambda req: ok(req.body[::-1])
    client = C.Client(daemon.url, timeout=30)
    payload = bytes(range(251)) * (size // 251) + b"z" * (size % 251)
    for _ in range(2):                                   # and the connection is reused after it
        assert client.call("faces", payload) == payload[::-1]
    assert client.call("faces", b"small") == b"llams"
    assert daemon.connections == 1


def test_call_returns_the_body_and_sends_the_payload(daemon):
    daemon.routes[("POST", JOBS)] = lambda req: ok(req.body[::-1])
    with bulkhead.Client(daemon.url) as client:
        assert client.call("faces", b"abc") == b"cba"
        assert client.call("faces", "héllo") == "héllo".encode()[::-1]
        assert client.call("faces", bytearray(b"xy")) == b"yx"
        assert client.call("faces", memoryview(b"xyz")) == b"zyx"
        assert client.call("faces", b"") == b""
    req = daemon.requests[0]
    assert req.method == "POST" and req.path == JOBS
    assert req.headers["Content-Length"] == "3"
    assert "X-Bulkhead-Timeout" not in req.headers


def test_one_keep_alive_connection_for_many_calls(daemon):
    daemon.routes[("POST", JOBS)] = ok()
    daemon.routes[("GET", "/healthz")] = (200, {"Content-Type": "application/json"},
                                          b'{"status":"ok"}')
    with bulkhead.Client(daemon.url) as client:
        for _ in range(20):
            client.call("faces", b"x")
        client.health()
    assert len(daemon.requests) == 21
    assert {r.connection for r in daemon.requests} == {1}
    assert daemon.connections == 1


@pytest.mark.parametrize("timeout, header", [(5, "5000ms"), (0.25, "250ms"), (0.0001, "1ms"),
                                             (1.0005, "1001ms"), (120, "120000ms")])
def test_timeout_header(daemon, timeout, header):
    daemon.routes[("POST", JOBS)] = ok()
    with bulkhead.Client(daemon.url) as client:
        client.call("faces", b"x", timeout=timeout)
    assert daemon.requests[0].headers["X-Bulkhead-Timeout"] == header


def test_client_default_timeout_applies_to_calls(daemon):
    daemon.routes[("POST", JOBS)] = ok()
    with bulkhead.Client(daemon.url, timeout=2) as client:
        client.call("faces", b"x")
        client.call("faces", b"x", timeout=3)
    assert [r.headers["X-Bulkhead-Timeout"] for r in daemon.requests] == ["2000ms", "3000ms"]


@pytest.mark.parametrize("bad", [0, -1, float("nan"), "5s", True])
def test_bad_timeouts_are_refused_locally(daemon, bad):
    with bulkhead.Client(daemon.url) as client:
        with pytest.raises((ValueError, TypeError)):
            client.call("faces", b"x", timeout=bad)
    assert daemon.requests == []


def test_pool_names_are_quoted(daemon):
    daemon.routes[("POST", "/v1/pools/a%2Fb%20c/jobs")] = ok(b"quoted")
    with bulkhead.Client(daemon.url) as client:
        assert client.call("a/b c", b"") == b"quoted"


def test_call_json(daemon):
    def route(req):
        assert req.headers["Content-Type"] == "application/json"
        return ok(json.dumps({"got": json.loads(req.body)}).encode(), "application/json")
    daemon.routes[("POST", JOBS)] = route
    with bulkhead.Client(daemon.url) as client:
        assert client.call_json("faces", {"x": [1, 2]}) == {"got": {"x": [1, 2]}}
        assert client.call_json("faces", [1]) == {"got": [1]}
        assert client.call_json("faces", b'{"raw": true}') == {"got": {"raw": True}}
        assert client.call_json("faces", '"text"') == {"got": "text"}


def test_pools_and_health(daemon):
    pools = {"pools": [{"name": "faces", "workers_target": 2, "workers": []}]}
    daemon.routes[("GET", "/v1/pools")] = (200, {"Content-Type": "application/json"},
                                           json.dumps(pools).encode())
    daemon.routes[("GET", "/healthz")] = (200, {"Content-Type": "application/json"},
                                          b'{"status":"ok"}')
    with bulkhead.Client(daemon.url) as client:
        assert client.pools() == pools
        assert client.health() == {"status": "ok"}
        daemon.routes[("GET", "/healthz")] = (503, {"Content-Type": "application/json"},
                                              b'{"status":"shutting_down"}')
        assert client.health() == {"status": "shutting_down"}


def test_unix_socket_url(unix_daemon):
    unix_daemon.routes[("POST", JOBS)] = ok(b"over unix")
    with bulkhead.Client(unix_daemon.url) as client:
        assert client.call("faces", b"x") == b"over unix"
        assert client.call("faces", b"x") == b"over unix"
    assert unix_daemon.connections == 1


# -- outcome -> exception ------------------------------------------------------------------


@pytest.mark.parametrize("outcome, status, cls", [
    ("handler_error", 422, bulkhead.HandlerError),
    ("crashed", 502, bulkhead.WorkerCrashed),
    ("hung", 504, bulkhead.WorkerHung),
    ("timed_out", 504, bulkhead.JobTimedOut),
    ("oom_killed", 502, bulkhead.OomKilled),
    ("resource_exhausted", 502, bulkhead.ResourceExhausted),
    ("poison", 502, bulkhead.Poisoned),
    ("overloaded", 429, bulkhead.Overloaded),
    ("overloaded", 503, bulkhead.Overloaded),
    ("unavailable", 503, bulkhead.Unavailable),
    ("cancelled", 409, bulkhead.Cancelled),
    ("some_future_outcome", 500, bulkhead.JobFailed),
])
def test_outcomes_map_to_exceptions(daemon, outcome, status, cls):
    doc = problem(outcome, status, attempts=[dict(CRASH_ATTEMPT, outcome=outcome)])
    daemon.routes[("POST", JOBS)] = canned(status, doc)
    with bulkhead.Client(daemon.url) as client:
        with pytest.raises(bulkhead.JobFailed) as info:
            client.call("faces", b"x")
        exc = info.value
        assert type(exc) is cls
        assert isinstance(exc, bulkhead.BulkheadError)
        assert exc.outcome == outcome
        assert exc.status == status
        assert exc.problem == doc
        assert exc.attempts == doc["attempts"]
        assert exc.detail == "the %s detail" % outcome
        assert exc.job_id == "17" and exc.pool == "faces"
        # the connection survives error responses
        daemon.routes[("POST", JOBS)] = ok()
        assert client.call("faces", b"x") == b"result"
    assert daemon.connections == 1
    assert bulkhead.OUTCOME_EXCEPTIONS.get(outcome, bulkhead.JobFailed) is cls


def test_crash_message_names_signal_and_stderr_tail(daemon):
    doc = problem("crashed", 502, detail="worker faces-2 (pid 4242) was killed by SIGABRT",
                  attempts=[CRASH_ATTEMPT])
    daemon.routes[("POST", JOBS)] = canned(502, doc)
    with bulkhead.Client(daemon.url) as client:
        with pytest.raises(bulkhead.WorkerCrashed) as info:
            client.call("faces", b"x")
    text = str(info.value)
    assert text.startswith("crashed (HTTP 502): worker faces-2 (pid 4242) was killed by SIGABRT")
    assert "signal SIGABRT (6)" in text
    assert "free(): double free detected in tcache 2" in text
    assert "line 6" in text and "line 1" not in text   # only the last lines
    assert info.value.last_attempt["signal"] == "SIGABRT"


def test_handler_error_exposes_the_remote_exception(daemon):
    error = {"type": "ValueError", "message": "bad input",
             "traceback": "Traceback (most recent call last):\n  File \"h.py\", line 3, in h\n"
                          "ValueError: bad input\n"}
    doc = problem("handler_error", 422, attempts=[{"attempt": 1, "outcome": "handler_error",
                                                   "error": error}])
    daemon.routes[("POST", JOBS)] = canned(422, doc)
    with bulkhead.Client(daemon.url) as client:
        with pytest.raises(bulkhead.HandlerError) as info:
            client.call("faces", b"x")
    exc = info.value
    assert exc.error_type == "ValueError"
    assert exc.error_message == "bad input"
    assert exc.remote_traceback == error["traceback"]
    assert "ValueError: bad input" in str(exc)


@pytest.mark.parametrize("value, expected", [("3", 3.0), ("0.5", 0.5), (None, None),
                                             ("garbage", None),
                                             ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)])
def test_retry_after(daemon, value, expected):
    headers = {"Retry-After": value} if value is not None else {}
    daemon.routes[("POST", JOBS)] = canned(429, problem("overloaded", 429), headers)
    with bulkhead.Client(daemon.url) as client:
        with pytest.raises(bulkhead.Overloaded) as info:
            client.call("faces", b"x")
    assert info.value.retry_after == expected


def test_unavailable_retry_after(daemon):
    daemon.routes[("POST", JOBS)] = canned(503, problem("unavailable", 503), {"Retry-After": "7"})
    with bulkhead.Client(daemon.url) as client:
        with pytest.raises(bulkhead.Unavailable) as info:
            client.call("faces", b"x")
    assert info.value.retry_after == 7.0
    assert "retry after 7 s" in str(info.value)


@pytest.mark.parametrize("status, kind, cls", [
    (404, "unknown_pool", bulkhead.UnknownPool),
    (404, "not_found", bulkhead.ApiError),
    (400, "bad_request", bulkhead.BadRequest),
    (405, "method_not_allowed", bulkhead.BadRequest),
    (411, "length_required", bulkhead.BadRequest),
    (413, "payload_too_large", bulkhead.PayloadTooLarge),
    (500, "internal", bulkhead.ApiError),
])
def test_api_errors(daemon, status, kind, cls):
    doc = {"type": "about:blank", "title": kind, "status": status, "error": kind,
           "detail": "about %s" % kind}
    daemon.routes[("POST", JOBS)] = (status, {"Content-Type": PROBLEM}, json.dumps(doc).encode())
    with bulkhead.Client(daemon.url) as client:
        with pytest.raises(bulkhead.ApiError) as info:
            client.call("faces", b"x")
    exc = info.value
    assert type(exc) is cls and isinstance(exc, bulkhead.BulkheadError)
    assert not isinstance(exc, bulkhead.JobFailed)
    assert exc.status == status and exc.error == kind and exc.problem == doc
    assert str(exc) == "HTTP %d %s: about %s" % (status, kind, kind)


def test_non_json_error_body(daemon):
    daemon.routes[("POST", JOBS)] = (502, {"Content-Type": "text/html"}, b"<h1>Bad gateway</h1>")
    with bulkhead.Client(daemon.url) as client:
        with pytest.raises(bulkhead.ApiError) as info:
            client.call("faces", b"x")
    assert info.value.status == 502
    assert "Bad gateway" in info.value.detail


def test_outcome_header_is_used_when_the_body_lacks_it(daemon):
    daemon.routes[("POST", JOBS)] = (502, {"Content-Type": "text/plain",
                                           "X-Bulkhead-Outcome": "crashed"}, b"crashed")
    with bulkhead.Client(daemon.url) as client:
        with pytest.raises(bulkhead.WorkerCrashed):
            client.call("faces", b"x")


def test_pools_error_is_mapped(daemon):
    with bulkhead.Client(daemon.url) as client:
        with pytest.raises(bulkhead.ApiError) as info:
            client.pools()          # no route: the peer answers 404 not_found
    assert info.value.status == 404 and info.value.error == "not_found"


# -- connection handling -------------------------------------------------------------------


def test_idle_connection_closed_by_the_server_is_replaced(daemon):
    daemon.routes[("POST", JOBS)] = ok()
    daemon.close_after_response = True     # closes after each response, without saying so
    with bulkhead.Client(daemon.url) as client:
        for i in range(3):
            assert client.call("faces", b"x") == b"result"
            daemon.wait_closed(i + 1)      # the connection is idle and closed by the server
    assert len(daemon.requests) == 3       # each job sent exactly once
    assert daemon.connections == 3


def test_send_failure_on_a_reused_connection_is_retried_once(unix_daemon, monkeypatch):
    # On a Unix socket, writing to a connection the peer closed fails at once (EPIPE): the
    # request never reached the server, so sending it again is safe.
    unix_daemon.routes[("POST", JOBS)] = ok()
    unix_daemon.close_after_response = True
    with bulkhead.Client(unix_daemon.url) as client:
        client.call("faces", b"x")
        unix_daemon.wait_closed(1)
        monkeypatch.setattr(client_module._Connection, "dropped",
                            lambda conn: False)   # let the send hit the dead socket
        starts = []
        start_request = _h1.ClientConnection.start_request
        monkeypatch.setattr(_h1.ClientConnection, "start_request",
                            lambda self, method: (starts.append(method),
                                                  start_request(self, method)))
        assert client.call("faces", b"x" * 300000) == b"result"
    assert len(starts) == 2                # the failed send, then the resend
    assert len(unix_daemon.requests) == 2
    assert unix_daemon.connections == 2


def test_a_request_interrupted_mid_answer_leaves_a_usable_client(daemon, monkeypatch):
    daemon.routes[("POST", JOBS)] = ok()
    with bulkhead.Client(daemon.url) as client:
        assert client.call("faces", b"x") == b"result"
        read_answer = client._read_answer

        def interrupted(conn, *args):
            client._read_answer = read_answer
            raise KeyboardInterrupt
        client._read_answer = interrupted
        with pytest.raises(KeyboardInterrupt):
            client.call("faces", b"x")
        monkeypatch.setattr(client_module._Connection, "dropped",
                            lambda conn: False)   # the unread answer alone must do
        assert client.call("faces", b"x") == b"result"
    assert daemon.connections == 2


def test_connection_lost_mid_response_is_not_resent(daemon):
    def break_mid_response(req):
        req.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
        req.wfile.flush()
        return None        # the peer closes the connection
    daemon.routes[("POST", JOBS)] = break_mid_response
    with bulkhead.Client(daemon.url) as client:
        with pytest.raises(bulkhead.TransportError) as info:
            client.call("faces", b"x")
        assert info.value.job_may_have_run is True
        assert "not sent again" in str(info.value)
        assert len(daemon.requests) == 1
        # the client recovers on the next call
        daemon.routes[("POST", JOBS)] = ok()
        assert client.call("faces", b"x") == b"result"


def test_connection_closed_without_response_is_not_resent(daemon):
    daemon.routes[("POST", JOBS)] = lambda req: None
    with bulkhead.Client(daemon.url) as client:
        daemon.routes[("POST", "/v1/pools/warm/jobs")] = ok()
        client.call("warm", b"")                       # a reused connection from here on
        with pytest.raises(bulkhead.TransportError) as info:
            client.call("faces", b"x")
    assert info.value.job_may_have_run
    assert [r.path for r in daemon.requests].count(JOBS) == 1


def test_gets_are_retried_once_after_a_lost_response(daemon):
    calls = []

    def flaky(req):
        calls.append(1)
        if len(calls) == 1:
            return None
        return (200, {"Content-Type": "application/json"}, b'{"pools":[]}')
    daemon.routes[("GET", "/v1/pools")] = flaky
    with bulkhead.Client(daemon.url) as client:
        assert client.pools() == {"pools": []}
    assert len(calls) == 2


def test_cannot_connect_is_a_transport_error():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()          # nothing listens on this port now
    with bulkhead.Client("http://127.0.0.1:%d" % port) as client:
        with pytest.raises(bulkhead.TransportError) as info:
            client.call("faces", b"x")
    assert not info.value.job_may_have_run
    assert isinstance(info.value.__cause__, ConnectionRefusedError)


def test_missing_unix_socket_is_a_transport_error(tmp_path):
    with bulkhead.Client("unix:" + str(tmp_path / "nope.sock")) as client:
        with pytest.raises(bulkhead.TransportError):
            client.health()


def test_client_side_timeout(daemon):
    def stall(req):
        daemon.release.wait(30)
        return ok()
    daemon.routes[("POST", JOBS)] = stall
    with bulkhead.Client(daemon.url) as client:
        client.timeout_margin = 0.05
        with pytest.raises(bulkhead.ClientTimeout) as info:
            client.call("faces", b"x", timeout=0.05)
        assert info.value.job_may_have_run
        assert isinstance(info.value, bulkhead.TransportError)
    assert daemon.requests[0].headers["X-Bulkhead-Timeout"] == "50ms"


# -- pure helpers --------------------------------------------------------------------------


@pytest.mark.parametrize("url, parsed", [
    ("http://127.0.0.1:8787", ("tcp", ("127.0.0.1", 8787), "")),
    ("http://localhost:9000/", ("tcp", ("localhost", 9000), "")),
    ("http://[::1]:8787", ("tcp", ("::1", 8787), "")),
    ("http://example/prefix/", ("tcp", ("example", 80), "/prefix")),
    ("unix:/run/bulkhead.sock", ("unix", "/run/bulkhead.sock", "")),
    ("unix:///run/bulkhead.sock", ("unix", "/run/bulkhead.sock", "")),
])
def test_parse_url(url, parsed):
    assert C.parse_url(url) == parsed


@pytest.mark.parametrize("url", ["", "https://x:1", "ftp://x", "unix:", "127.0.0.1:8787",
                                 "http://"])
def test_parse_url_refuses(url):
    with pytest.raises(ValueError):
        C.parse_url(url)


def test_default_url(monkeypatch):
    monkeypatch.delenv("BULKHEAD_URL", raising=False)
    client = bulkhead.Client()
    assert client.url == "http://127.0.0.1:8787"
    client.close()


def test_error_from_problem_without_http():
    exc = E.error_from_problem(502, problem("oom_killed", 502))
    assert type(exc) is E.OomKilled and exc.status == 502
    assert type(E.error_from_problem(404, {"error": "unknown_pool"})) is E.UnknownPool
    assert type(E.error_from_problem(418, {})) is E.ApiError
    # a document with no status takes the HTTP one; JobFailed accepts a plain message too
    assert E.JobFailed("boom").detail == "boom"
    assert str(E.Cancelled()) == "cancelled"


def test_cluster_fields_of_a_failed_job():
    exc = E.error_from_problem(502, problem("crashed", 502, node="gpu-b", runs=2))
    assert exc.node == "gpu-b" and exc.runs == 2
    plain = E.error_from_problem(502, problem("crashed", 502))
    assert plain.node is None and plain.runs is None
    away = E.error_from_problem(503, {"error": "cluster_unavailable", "status": 503}, 1)
    assert type(away) is E.ApiError and away.error == "cluster_unavailable"
    assert away.retry_after == 1


def test_exceptions_pickle():
    exc = E.error_from_problem(502, problem("crashed", 502, attempts=[CRASH_ATTEMPT]), 1.5)
    copy = pickle.loads(pickle.dumps(exc))
    assert type(copy) is E.WorkerCrashed and copy.attempts == exc.attempts
    assert copy.retry_after == 1.5 and str(copy) == str(exc)
    t = pickle.loads(pickle.dumps(E.ClientTimeout("slow", job_may_have_run=True)))
    assert type(t) is E.ClientTimeout and t.job_may_have_run


def test_public_names():
    for name in bulkhead.__all__:
        assert hasattr(bulkhead, name), name
    assert bulkhead.__version__ == "0.1.0"
    assert set(E.OUTCOME_EXCEPTIONS) == {
        "handler_error", "crashed", "timed_out", "hung", "oom_killed", "resource_exhausted",
        "poison", "overloaded", "unavailable", "cancelled"}


def test_importing_bulkhead_does_not_load_the_client():
    import subprocess
    from conftest import PY_DIR, PYTHON
    code = ("import sys, bulkhead; assert 'http.client' not in sys.modules; "
            "assert 'bulkhead.client' not in sys.modules; bulkhead.Client; "
            "assert 'bulkhead.client' in sys.modules")
    subprocess.run([PYTHON, "-c", code], env={"PYTHONPATH": PY_DIR, "PYTHONDONTWRITEBYTECODE": "1"},
                   timeout=15, check=True)
