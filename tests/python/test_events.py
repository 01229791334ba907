"""GET /v1/events (Server-Sent Events) and `bulkhead events`."""

import json
import os
import select
import socket
import subprocess
import time

from conftest import wait_until


def _read_events(d, since, want, timeout=15):
    """Opens the stream, returns the first `want` events (id, kind, data) within the timeout."""
    host, port = d.url[len("http://"):].rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=timeout)
    try:
        s.sendall(b"GET /v1/events?since=%d HTTP/1.1\r\nHost: x\r\n\r\n" % since)
        data = b""
        deadline = time.monotonic() + timeout
        events = []
        while len(events) < want:
            assert time.monotonic() < deadline, "only %d events: %r" % (len(events), data[-2000:])
            s.settimeout(max(0.1, deadline - time.monotonic()))
            chunk = s.recv(65536)
            assert chunk, "stream closed early"
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            if not sep:
                continue
            assert head.startswith(b"HTTP/1.1 200"), head
            assert b"text/event-stream" in head
            events = []
            for block in body.split(b"\n\n")[:-1]:
                fields = dict(line.split(b": ", 1) for line in block.split(b"\n") if b": " in line)
                events.append((int(fields[b"id"]), fields[b"event"].decode(),
                               json.loads(fields[b"data"])))
        return events
    finally:
        s.close()


def test_event_stream_reports_start_ready_crash_and_resumes_with_since(start_daemon):
    d = start_daemon({"ev": {"handler": "by_payload", "workers": 1, "retries": 0,
                             "poison_after": 0}})
    d.wait_ready("ev")
    assert d.job("ev", b"crash").outcome == "crashed"
    d.wait_ready("ev")
    events = _read_events(d, 0, 5)
    kinds = [k for _, k, _ in events]
    assert kinds[:2] == ["started", "ready"], kinds
    crash = [e for _, k, e in events if k == "crashed"]
    assert crash and "SIGSEGV" in crash[0]["detail"] and crash[0]["pool"] == "ev"
    ids = [i for i, _, _ in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    # Resuming after the crash only replays what came later.
    later = _read_events(d, ids[2], 1)
    assert later[0][0] > ids[2]


def test_bulkhead_events_cli_follows_the_stream(start_daemon):
    d = start_daemon({"ev": {"handler": "echo", "workers": 1}})
    d.wait_ready("ev")
    binary = os.environ.get("BULKHEAD_BIN") or os.path.join(
        os.path.dirname(__file__), "..", "..", "build", "bulkhead")
    proc = subprocess.Popen([binary, "events", "--url", d.url], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        lines = []
        deadline = time.monotonic() + 10
        buffered = b""
        while len(lines) < 2 and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], max(0, deadline - time.monotonic()))
            if not ready:
                break
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            buffered += chunk
            *complete, buffered = buffered.split(b"\n")
            lines += [c.decode() for c in complete]
        assert len(lines) == 2, lines
        assert "started" in lines[0] and "ev-1" in lines[0]
        assert "ready" in lines[1]
    finally:
        proc.kill()
        proc.wait(5)
