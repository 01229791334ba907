"""The HTTP API: success headers and content types, listing, and malformed or excessive requests
(the daemon answers with a typed error or closes the connection, and keeps serving)."""

import os
import threading
import time

import pytest

from conftest import wait_until

PROBLEM = "application/problem+json"


def _recv_all(sock, limit=1 << 20):
    """Reads until EOF, a complete-looking response head, or the socket timeout."""
    data = b""
    try:
        while len(data) < limit:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            if b"\r\n\r\n" in data:
                head, _, rest = data.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                if len(rest) >= length:
                    break
    except (ConnectionResetError, BrokenPipeError):
        pass
    return data


def _status_of(raw):
    if not raw:
        return None
    first = raw.split(b"\r\n", 1)[0].split()
    return int(first[1]) if len(first) >= 2 and first[1].isdigit() else None


# -- success --------------------------------------------------------------------------------


def test_ok_response_headers(daemon):
    r = daemon.job("echo", b"hello")
    assert r.status == 200, r
    assert r.body == b"hello"
    h = r.headers
    assert h["content-type"] == "application/octet-stream"
    assert h["x-bulkhead-outcome"] == "ok"
    assert h["x-bulkhead-job"]
    assert h["x-bulkhead-attempts"] == "1"
    assert h["x-bulkhead-worker"].startswith("echo")
    for name in ("x-bulkhead-queue-ms", "x-bulkhead-run-ms", "x-bulkhead-total-ms"):
        assert float(h[name]) >= 0, name
    assert float(h["x-bulkhead-total-ms"]) >= float(h["x-bulkhead-run-ms"])
    r2 = daemon.job("echo", b"hello")
    assert r2.headers["x-bulkhead-job"] != h["x-bulkhead-job"]


def test_result_content_types(start_daemon):
    d = start_daemon({"b": {"handler": "echo"}, "t": {"handler": "echo_text"},
                      "j": {"handler": "echo_dict"}, "l": {"handler": "echo_list"}})
    rb = d.job("b", b"\xff\x00")
    assert (rb.status, rb.headers["content-type"], rb.body) == (
        200, "application/octet-stream", b"\xff\x00")
    rt = d.job("t", "héllo".encode())
    assert rt.status == 200
    assert rt.headers["content-type"] == "text/plain; charset=utf-8"
    assert rt.body.decode("utf-8") == "héllo"
    rj = d.job("j", b"abc")
    assert rj.headers["content-type"] == "application/json"
    assert rj.json == {"payload": "abc", "len": 3}
    rl = d.job("l", b"")
    assert rl.headers["content-type"] == "application/json"
    assert rl.json == [1, "two", {"three": 3}]


def test_worker_env_and_context(start_daemon):
    d = start_daemon({"who": {"handler": "whoami", "preload": "preload_value"}})
    [w] = d.wait_ready("who")
    r = d.job("who", b"ctx")
    assert r.status == 200, r
    info = r.json
    assert info["pid"] == w["pid"]
    assert info["pgid"] == info["pid"], "each worker runs in its own process group"
    assert info["worker_id"] == w["id"] == r.headers["x-bulkhead-worker"]
    assert info["pool"] == "who"
    assert str(info["job_id"]) == r.headers["x-bulkhead-job"]
    assert info["preloaded"]["model"] == "tiny"


def test_large_payload_roundtrip(daemon):
    payload = os.urandom(8 * 1024 * 1024)
    r = daemon.job("echo", payload, timeout=30)
    assert r.status == 200, r
    assert r.body == payload


# The daemon reads a body of 64 KiB or more straight into the request, a smaller one through
# the HTTP parser: both sides of that line, byte-exact, each followed on the same connection by
# a small request (nothing of one body may leak into the next request).
@pytest.mark.parametrize("size", [0, 1, 65535, 65536, 65537, 3 * 1024 * 1024 + 5])
def test_bodies_either_side_of_the_direct_read_roundtrip_on_one_connection(daemon, size):
    payload = os.urandom(size)
    conn = daemon.connection(timeout=60)
    try:
        for body in (payload, b"after"):
            conn.request("POST", "/v1/pools/echo/jobs", body=body)
            resp = conn.getresponse()
            assert resp.status == 200
            assert resp.read() == body
    finally:
        conn.close()


def test_a_large_body_sent_in_pieces_with_pipelined_request_behind_it(daemon):
    payload = os.urandom(300 * 1024)
    head = (b"POST /v1/pools/echo/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
            % len(payload))
    second = b"POST /v1/pools/echo/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nnext"
    sock = daemon.raw_socket(timeout=60)
    try:
        sock.sendall(head + payload[:1000])        # the head and a little of the body together
        sock.sendall(payload[1000:200000])
        sock.sendall(payload[200000:] + second)    # the body's end and the next request at once
        data = b""
        while data.count(b"HTTP/1.1 200") < 2 or not data.endswith(b"next"):
            chunk = sock.recv(1 << 20)
            assert chunk, data[:300]
            data += chunk
    finally:
        sock.close()
    first_head, _, rest = data.partition(b"\r\n\r\n")
    assert b"content-length: %d" % len(payload) in first_head.lower()
    assert rest[:len(payload)] == payload
    assert rest[len(payload):].startswith(b"HTTP/1.1 200")


def test_expect_100_continue_is_answered_before_the_body_is_sent(daemon):
    # curl sends `Expect: 100-continue` for bodies over 1 MiB and waits for this answer (a second
    # otherwise); the test waits for it too, and only then sends the body.
    payload = os.urandom(2 * 1024 * 1024)
    sock = daemon.raw_socket(timeout=60)
    try:
        sock.sendall(b"POST /v1/pools/echo/jobs HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(payload))
        interim = b""
        while b"\r\n\r\n" not in interim:
            chunk = sock.recv(4096)
            assert chunk, interim
            interim += chunk
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), interim[:200]
        sock.sendall(payload)
        raw = interim.partition(b"\r\n\r\n")[2] + _recv_all(sock, limit=4 << 20)
    finally:
        sock.close()
    assert _status_of(raw) == 200, raw[:300]
    assert raw.partition(b"\r\n\r\n")[2] == payload


def test_a_client_that_stops_inside_a_large_body_is_dropped_and_the_daemon_serves(daemon):
    sock = daemon.raw_socket(timeout=10)
    sock.sendall(b"POST /v1/pools/echo/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n"
                 b"\r\n" + b"x" * 100000)
    sock.close()
    daemon.assert_serving()
    r = daemon.job("echo", b"still here")
    assert r.status == 200 and r.body == b"still here"


def test_keep_alive_serves_several_requests(daemon):
    conn = daemon.connection(timeout=10)
    try:
        for i in range(5):
            conn.request("POST", "/v1/pools/echo/jobs", body=b"n%d" % i)
            resp = conn.getresponse()
            assert resp.status == 200
            assert resp.read() == b"n%d" % i
    finally:
        conn.close()


def test_a_head_answer_has_no_body_so_the_next_answer_on_the_connection_is_intact(daemon):
    sock = daemon.raw_socket(timeout=10)
    try:
        # Pipelined: a body after the HEAD answer would be read as the start of the GET's.
        sock.sendall(b"HEAD /livez HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"HEAD /readyz HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while data.count(b"HTTP/1.1 ") < 3 or not data.endswith(b"}"):
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
    finally:
        sock.close()
    answers = data.split(b"HTTP/1.1 ")[1:]
    assert len(answers) == 3, data
    for head in answers[:2]:
        fields, _, body = head.partition(b"\r\n\r\n")
        assert body == b"", head
        assert int(fields.lower().split(b"content-length: ")[1].split(b"\r\n")[0]) > 0, head
    assert answers[2].endswith(b'\r\n\r\n{"status":"ok"}'), answers[2]
    # A real client on one keep-alive connection: HEAD, then GET.
    conn = daemon.connection(timeout=10)
    try:
        conn.request("HEAD", "/livez")
        head = conn.getresponse()
        assert head.status == 200 and head.read() == b""
        conn.request("GET", "/livez")
        get = conn.getresponse()
        assert get.status == 200 and get.read() == b'{"status":"ok"}'
    finally:
        conn.close()


def test_pools_listing(daemon):
    r = daemon.http("GET", "/v1/pools")
    assert r.status == 200
    assert r.headers["content-type"].startswith("application/json")
    pools = {p["name"]: p for p in r.json["pools"]}
    assert set(pools) == {"echo", "whoami"}
    echo = pools["echo"]
    assert echo["handler"] == "fault_handlers:echo"
    assert echo["workers_target"] == 2
    for key in ("submitted", "ok", "crashed", "retries", "worker_starts"):
        assert key in echo["counters"], key
    daemon.wait_ready("echo")
    ws = daemon.workers("echo")
    assert len({w["id"] for w in ws}) == len(ws) == 2
    for w in ws:
        assert w["pid"] > 0 and w["state"] == "idle"


def test_healthz(daemon):
    r = daemon.healthz()
    assert r.status == 200
    assert r.json == {"status": "ok"}


# -- errors that are not job outcomes -------------------------------------------------------


def test_unknown_pool_is_404_problem(daemon):
    r = daemon.job("no-such-pool", b"x")
    assert r.status == 404, r
    assert r.headers["content-type"].startswith(PROBLEM)
    body = r.json
    assert body["error"] == "unknown_pool"
    assert body["status"] == 404
    assert "outcome" not in body


def test_unknown_route_is_404(daemon):
    r = daemon.http("GET", "/v1/nothing-here")
    assert r.status == 404, r
    assert r.headers["content-type"].startswith(PROBLEM)
    assert r.json["error"] == "not_found"


@pytest.mark.parametrize("value", ["soon", "5 parsecs", "-1s", "1e400s"])
def test_bad_timeout_header_is_400(daemon, value):
    r = daemon.job("echo", b"x", headers={"X-Bulkhead-Timeout": value})
    assert r.status == 400, (value, r)
    assert r.headers["content-type"].startswith(PROBLEM)
    assert r.json["error"] == "bad_request"
    daemon.assert_serving()


def test_timeout_header_sets_job_deadline(start_daemon):
    d = start_daemon({"slow": {"handler": "slow", "job_timeout": "30s"}})
    t0 = time.monotonic()
    r = d.job("slow", b"sleep:20", headers={"X-Bulkhead-Timeout": "300ms"})
    assert r.status == 504, r
    assert r.json["outcome"] == "timed_out"
    assert time.monotonic() - t0 < 10
    ok = d.job("slow", b"sleep:0", headers={"X-Bulkhead-Timeout": "2m"})
    assert ok.status == 200, ok


@pytest.mark.parametrize("method,path", [("PUT", "/v1/pools/echo/jobs"),
                                         ("DELETE", "/healthz"),
                                         ("POST", "/v1/pools")])
def test_wrong_method_is_405(daemon, method, path):
    r = daemon.http(method, path, body=b"")
    assert r.status == 405, r
    assert r.headers["content-type"].startswith(PROBLEM)
    daemon.assert_serving()


@pytest.mark.parametrize("garbage", [
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)) + b"\r\n\r\n",
    b"THIS IS NOT HTTP\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nBad header line without colon\r\n\r\n",
    b"POST /v1/pools/echo/jobs HTTP/1.1\r\nContent-Length: banana\r\n\r\n",
    b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n",
])
def test_garbage_on_the_socket_is_400_or_close(daemon, garbage):
    sock = daemon.raw_socket(timeout=10)
    try:
        try:
            sock.sendall(garbage)
        except (BrokenPipeError, ConnectionResetError):
            pass
        raw = _recv_all(sock)
    finally:
        sock.close()
    status = _status_of(raw)
    assert status in (None, 400, 414, 431), raw[:300]
    daemon.assert_serving()


def test_huge_content_length_is_413(daemon):
    sock = daemon.raw_socket(timeout=10)
    try:
        sock.sendall(b"POST /v1/pools/echo/jobs HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: 1099511627776\r\n\r\n" + b"x" * 1000)
        raw = _recv_all(sock)
    finally:
        sock.close()
    assert _status_of(raw) == 413, raw[:300]
    assert b"max_request_body" in raw, raw[:600]     # the answer names the key to raise
    daemon.assert_serving()


def test_queue_full_is_429_with_retry_after(start_daemon):
    d = start_daemon({"slow": {"handler": "slow", "workers": 1, "queue_limit": 1}})
    d.wait_ready("slow")
    results = {}

    def submit(name):
        results[name] = d.job("slow", b"wait:release", timeout=40)

    first = threading.Thread(target=submit, args=("first",), daemon=True)
    first.start()
    wait_until(lambda: d.pool_status("slow")["in_flight"] == 1, 10, "the first job to run")
    second = threading.Thread(target=submit, args=("second",), daemon=True)
    second.start()
    wait_until(lambda: d.pool_status("slow")["queue_length"] == 1, 10, "the second job queued")
    try:
        r = d.job("slow", b"sleep:0", timeout=10)
        assert r.status == 429, r
        assert r.headers["content-type"].startswith(PROBLEM)
        assert r.json["outcome"] == "overloaded"
        assert r.headers["x-bulkhead-outcome"] == "overloaded"
        assert int(r.headers["retry-after"]) >= 0
        assert d.pool_status("slow")["counters"]["overloaded"] >= 1
    finally:
        open(os.path.join(d.scratch, "release"), "w").close()
        first.join(30)
        second.join(30)
    assert results["first"].status == 200 and results["first"].body == b"released"
    assert results["second"].status == 200 and results["second"].body == b"released"
    assert d.job("slow", b"sleep:0").status == 200


def test_unix_socket_listener(start_daemon):
    d = start_daemon({"echo": {"handler": "echo"}}, unix=True)
    assert d.url.startswith("unix:/")
    d.assert_serving("echo", b"over a unix socket")
