"""The blocking client's lean request path: its pool of keep-alive connections shared
by threads, one write per request, minimal headers, and kernel socket timeouts; against the
in-process HTTP peer of conftest.py."""

import os
import socket
import threading

import pytest

import bulkhead
from bulkhead import client as client_module
from conftest import WAIT

JOBS = "/v1/pools/faces/jobs"


def ok(body=b"result"):
    return (200, {"Content-Type": "application/octet-stream", "X-Bulkhead-Outcome": "ok"}, body)


def echo(req):
    return ok(req.body[::-1])


def test_threads_calling_at_once_get_a_connection_each_and_keep_it(daemon):
    barrier = threading.Barrier(3, timeout=WAIT)

    def together(req):
        barrier.wait()          # all three are in a request at the same time
        return ok()
    daemon.routes[("POST", JOBS)] = together
    errors = []
    client = bulkhead.Client(daemon.url)

    def run():
        try:
            client.call("faces", b"x")
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert not errors and daemon.connections == 3
    daemon.routes[("POST", JOBS)] = ok()
    for _ in range(5):                  # later calls, from any thread, reuse those connections
        client.call("faces", b"x")
    worker = threading.Thread(target=client.call, args=("faces", b"x"))
    worker.start()
    worker.join(WAIT)
    assert daemon.connections == 3 and len(client._idle) == 3
    client.close()
    assert client._idle == []
    daemon.wait_closed(3)


def test_close_while_another_thread_is_in_a_request(daemon):
    inside = threading.Event()
    go_on = threading.Event()

    def slow(req):
        inside.set()
        go_on.wait(WAIT)
        return ok(b"late")
    daemon.routes[("POST", JOBS)] = slow
    client = bulkhead.Client(daemon.url)
    results = []
    worker = threading.Thread(target=lambda: results.append(client.call("faces", b"x")))
    worker.start()
    assert inside.wait(WAIT)
    client.close()                      # the busy connection is left to finish its request
    go_on.set()
    worker.join(WAIT)
    assert results == [b"late"]
    assert client._idle == []           # ... and is closed then, not put back
    daemon.wait_closed(1)
    daemon.routes[("POST", JOBS)] = ok()
    assert client.call("faces", b"x") == b"result"
    assert daemon.connections == 2
    client.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_opens_its_own_connection(daemon):
    daemon.routes[("POST", JOBS)] = ok()
    with bulkhead.Client(daemon.url) as client:
        client.call("faces", b"x")
        pid = os.fork()
        if pid == 0:                                       # the child
            code = 1
            try:
                code = 0 if client.call("faces", b"y") == b"result" else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        client.call("faces", b"z")                         # the parent's connection still works
    assert daemon.connections == 2
    assert [r.connection for r in daemon.requests] == [1, 2, 1]


def test_a_call_sends_only_the_headers_it_needs(daemon):
    daemon.routes[("POST", JOBS)] = ok(b"1")
    with bulkhead.Client(daemon.url) as client:
        client.call("faces", b"abc")
        client.call("faces", b"abc", timeout=2)
        client.call("faces", "text")
        client.call_json("faces", {"a": 1}, allow_poison=True)
    names = [sorted(r.headers.keys()) for r in daemon.requests]
    assert names[0] == ["Content-Length", "Host"]        # octet-stream goes without its name
    assert names[1] == ["Content-Length", "Host", "X-Bulkhead-Deadline", "X-Bulkhead-Timeout"]
    assert daemon.requests[2].headers["Content-Type"] == "text/plain; charset=utf-8"
    assert daemon.requests[3].headers["Content-Type"] == "application/json"
    assert daemon.requests[3].headers["X-Bulkhead-Allow-Poison"] == "1"


@pytest.mark.parametrize("size", [100, 1 << 20])
def test_a_request_is_one_write(daemon, monkeypatch, size):
    daemon.routes[("POST", JOBS)] = echo
    writes = []
    for name in ("sendall", "sendmsg"):
        original = getattr(socket.socket, name)

        def spy(self, data, *args, _original=original, _name=name):
            writes.append(_name)
            return _original(self, data, *args)
        monkeypatch.setattr(socket.socket, name, spy)
    payload = bytes(range(256)) * (size // 256)
    with bulkhead.Client(daemon.url) as client:
        client.call("faces", b"warm")          # connecting writes nothing through these
        del writes[:]
        assert client.call("faces", payload) == payload[::-1]
    # small: head and body in one buffer; large: head and body in one sendmsg (the body is not
    # copied), then whatever the socket buffer did not take at once
    assert writes[0] == ("sendall" if size <= 65536 else "sendmsg")
    assert len(writes) == 1 or writes[1:] == ["sendall"] * (len(writes) - 1)


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_large_payloads_round_trip(daemon, unix_daemon, transport):
    server = daemon if transport == "tcp" else unix_daemon
    server.routes[("POST", JOBS)] = echo
    payload = os.urandom(3 << 20)
    with bulkhead.Client(server.url, timeout=20) as client:
        for _ in range(2):
            assert client.call("faces", payload) == payload[::-1]
            assert client.call("faces", b"small") == b"llams"
    assert server.connections == 1


def test_heads_are_kept_per_pool_and_timeout_within_a_bound(daemon, monkeypatch):
    daemon.routes[("POST", JOBS)] = ok()
    monkeypatch.setattr(bulkhead._client_core, "_HEADS_MAX", 4)
    with bulkhead.Client(daemon.url) as client:
        for i in range(10):
            client.call("faces", b"x", timeout=1 + i)
        assert len(client._heads) <= 4
        assert daemon.requests[-1].headers["X-Bulkhead-Deadline"] == "10000ms"
        with pytest.raises(TypeError):
            client.call("faces", b"x", timeout=True)   # == 1, but not a timeout
        client.call("faces", b"x", timeout=1)
        with pytest.raises(TypeError):
            client.call("faces", b"x", timeout=True)
        with pytest.raises(TypeError):
            client.call(["faces"], b"x")               # unhashable: the error it always was
        with pytest.raises(ValueError):
            client.call("", b"x")


@pytest.mark.skipif(not client_module._KERNEL_TIMEOUTS, reason="kernel socket timeouts")
def test_a_kernel_timeout_is_set_only_when_it_changes(daemon, monkeypatch):
    daemon.routes[("POST", JOBS)] = ok()
    calls = []
    original = client_module._Connection.set_timeout
    monkeypatch.setattr(client_module._Connection, "set_timeout",
                        lambda self, t: (calls.append(t), original(self, t)))
    with bulkhead.Client(daemon.url) as client:
        client.timeout_margin = 1.0
        for _ in range(3):
            client.call("faces", b"x", timeout=2)
        client.call("faces", b"x")
        assert client._sock.gettimeout() is None       # blocking: no poll() per read and write
    assert calls == [pytest.approx(3.0), None]
