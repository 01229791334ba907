"""Large payloads by memfd (docs/protocol.md): bodies of memfd_threshold bytes or more reach the
worker as a sealed memfd it maps read-only, large results come back the same way and leave by
sendfile. Byte-exact on both sides of the threshold through sync, async (journaled) and zygote
pools; the daemon's heap never holds the payload; fds are not leaked; a worker that hands back a
memfd it could still change, or one of another size, is killed and nobody else is harmed."""

import json
import os

import pytest

from conftest import wait_until

T = 64 * 1024  # the threshold these tests set: small, so that many sizes are cheap
M = "memfd_handlers:"


def _server(tmp_path, **more):
    # Results by memfd from the same 64 KiB (the default is 16 MiB), so small sizes test both.
    server = {"listen": "127.0.0.1:0", "memfd_threshold": "64KiB",
              "memfd_result_threshold": "64KiB", "journal": str(tmp_path / "journal.db"),
              "max_request_body": "80MiB"}
    server.update(more)
    return server


def _pool(handler, **more):
    keys = {"handler": handler, "workers": 1, "max_payload": "80MiB", "job_timeout": "60s"}
    keys.update(more)
    return keys


def _fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def _status_kb(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError("no %s in /proc/%d/status" % (field, pid))


SIZES = [0, 1, T - 1, T, T + 1, 3 * 1024 * 1024 + 7]


@pytest.mark.parametrize("mode", ["spawn", "zygote"])
def test_sizes_either_side_of_the_threshold_round_trip_byte_exact(start_daemon, tmp_path, mode):
    extra = {"mode": "zygote"} if mode == "zygote" else {}
    d = start_daemon({"bytes": _pool("echo", **extra), "view": _pool(M + "echo_view", **extra),
                      "kind": _pool(M + "view_kind", **extra)}, server=_server(tmp_path))
    for size in SIZES:
        payload = os.urandom(size)
        for pool in ("bytes", "view"):
            r = d.job(pool, payload, timeout=60)
            assert r.status == 200, (pool, size, r)
            assert r.body == payload, (pool, size)
        kind = d.job("kind", payload).json
        # At and above the threshold the handler's view is over a mapping of the daemon's memfd;
        # below it, over the inline frame's buffer.
        assert (kind["obj"] == "mmap") == (size >= T), (size, kind)
        assert kind["size"] == size and kind["readonly"], kind


def test_async_journaled_jobs_round_trip_memfd_payloads_and_results(start_daemon, tmp_path):
    d = start_daemon({"view": _pool(M + "echo_view")}, server=_server(tmp_path))
    payloads = [os.urandom(n) for n in (T - 1, T, 5 * 1024 * 1024)]
    locations = []
    for p in payloads:
        r = d.http("POST", "/v1/pools/view/jobs?wait=0", body=p)
        assert r.status == 202, r
        locations.append(r.headers["location"])
    for p, location in zip(payloads, locations):
        done = d.http("GET", location + "?wait=30s", timeout=40)
        assert done.status == 200 and done.body == p, (len(p), done.status)
        # Asked again (a second reader of the same stored result): the same bytes.
        again = d.http("GET", location)
        assert again.body == p


def test_large_results_of_a_bytes_handler_come_back_whole(start_daemon, tmp_path):
    d = start_daemon({"big": _pool(M + "big_result")}, server=_server(tmp_path))
    for size in (T - 1, T, T + 1, 20 * 1024 * 1024):
        r = d.job("big", str(size).encode(), timeout=60)
        assert r.status == 200, r
        assert r.body == b"r" * size, size
        assert int(r.headers["content-length"]) == size


def test_a_handler_that_writes_into_its_payload_fails_cleanly_and_the_worker_goes_on(
        start_daemon, tmp_path):
    d = start_daemon({"w": _pool(M + "write_into_view"), "view": _pool(M + "echo_view")},
                     server=_server(tmp_path))
    pid = d.workers("w")[0]["pid"]
    r = d.job("w", b"z" * (T + 5))
    assert r.status == 422 and r.json["outcome"] == "handler_error", r
    assert "TypeError" in json.dumps(r.json), r.json
    assert d.workers("w")[0]["pid"] == pid
    payload = os.urandom(T + 5)
    assert d.job("view", payload).body == payload


@pytest.mark.limit(240)
def test_no_fd_is_leaked_by_a_thousand_memfd_jobs(start_daemon, tmp_path):
    d = start_daemon({"view": _pool(M + "echo_view"), "bytes": _pool("echo")},
                     server=_server(tmp_path, journal=""))
    payload = os.urandom(T + 100)
    conn = d.connection(timeout=60)
    for pool in ("view", "bytes"):     # warm: each worker has answered once
        conn.request("POST", "/v1/pools/%s/jobs" % pool, body=payload)
        assert conn.getresponse().read() == payload
    workers = {pool: d.workers(pool)[0]["pid"] for pool in ("view", "bytes")}

    def counts():
        now = {"daemon": _fd_count(d.proc.pid)}
        now.update({pool: _fd_count(pid) for pool, pid in workers.items()})
        return now
    before = counts()
    try:
        for i in range(500):
            for pool in ("view", "bytes"):
                conn.request("POST", "/v1/pools/%s/jobs" % pool, body=payload)
                resp = conn.getresponse()
                body = resp.read()
                assert resp.status == 200 and body == payload, (i, pool, resp.status)
    finally:
        conn.close()
    assert {p: d.workers(p)[0]["pid"] for p in workers} == workers, "a worker was replaced"
    # Counted from outside, a process can hold an fd for a moment (a /proc read, a connection
    # the client closed first, a worker's job fd until its answer is out), before as after: wait
    # for the counts to be no higher than before. A leak of one fd per job would leave a
    # thousand more, for ever.
    seen = []

    def settled():
        seen.append(counts())
        now = seen[-1]
        return all(now[who] <= before[who] for who in before)
    try:
        wait_until(settled, 10, "fd counts back to where they were")
    except AssertionError:
        raise AssertionError("fds before %r, after %r" % (before, seen[-1])) from None


@pytest.mark.limit(240)
def test_a_64_mib_job_stays_out_of_the_daemons_heap_and_fits_a_128_mib_worker(
        start_daemon, tmp_path):
    d = start_daemon({"view": _pool(M + "echo_view", memory_limit="128MiB")},
                     server=_server(tmp_path, journal="", memfd_threshold="256KiB"))
    small = d.job("view", b"warm")
    assert small.status == 200, small
    hwm_before = _status_kb(d.proc.pid, "VmHWM")
    payload = os.urandom(64 * 1024 * 1024)
    for _ in range(2):
        r = d.job("view", payload, timeout=120)
        assert r.status == 200, r
        assert r.body == payload
    grew_mib = (_status_kb(d.proc.pid, "VmHWM") - hwm_before) / 1024.0
    # Read into memory the body alone would be 64 MiB of the daemon's heap, and the result as
    # much again; through a memfd the daemon holds a 256 KiB buffer.
    assert grew_mib < 24, "the daemon's peak RSS grew by %.1f MiB for a 64 MiB job" % grew_mib


@pytest.mark.parametrize("mode", ["spawn", "zygote"])
def test_a_bytes_handler_gets_its_payloads_inline_below_the_result_threshold(
        start_daemon, tmp_path, mode):
    # A memfd spares a copy only for a memoryview handler (the worker maps it); a bytes handler
    # copies the payload anyway, so its payloads go inline below memfd_result_threshold, as its
    # results do (core/payload_path.h). Seen in the daemon's peak RSS: an inline body is read
    # into its heap, a memfd body is not. The handlers answer with the size alone, so that only
    # the payload's way shows.
    extra = {"mode": "zygote"} if mode == "zygote" else {}
    d = start_daemon({"bytes": _pool(M + "size_of", **extra),
                      "view": _pool(M + "view_kind", **extra)},
                     server=_server(tmp_path, journal="", memfd_result_threshold="16MiB"))
    for pool in ("bytes", "view"):     # a job answered: the worker's READY said what it takes
        assert d.job(pool, b"warm").status == 200

    def grew_mib(pool, payload):
        before = _status_kb(d.proc.pid, "VmHWM")
        r = d.job(pool, payload, timeout=120)
        assert r.status == 200, (pool, len(payload), r)
        if pool == "bytes":
            assert r.body == str(len(payload)).encode()
        else:
            assert r.json["obj"] == "mmap" and r.json["size"] == len(payload), r.json
        return (_status_kb(d.proc.pid, "VmHWM") - before) / 1024.0

    eight = os.urandom(8 * 1024 * 1024)
    assert grew_mib("view", eight) < 4       # by memfd, from memfd_threshold (64 KiB)
    # From memfd_result_threshold on, a bytes handler's payload goes by memfd too. Before any
    # inline job, so that no freed block of the heap is reused.
    assert grew_mib("bytes", os.urandom(24 * 1024 * 1024)) < 4
    assert grew_mib("bytes", eight) >= 7     # inline: the body went through the heap


@pytest.mark.parametrize("handler", ["unsealed_result", "wrong_size_result"])
def test_a_worker_that_hands_back_a_memfd_it_could_change_is_killed_alone(
        start_daemon, tmp_path, handler):
    d = start_daemon({"liar": _pool(M + handler), "view": _pool(M + "echo_view")},
                     server=_server(tmp_path, journal=""))
    liar = d.workers("liar")[0]["pid"]
    other = d.workers("view")[0]["pid"]
    r = d.job("liar", b"x")
    assert r.status == 502 and r.json["outcome"] == "crashed", r
    cause = r.json["attempts"][0]["cause"]
    assert cause.startswith("protocol_error") and "RESULT_BYTES_FD" in cause, r.json
    wait_until(lambda: d.workers("liar") and d.workers("liar")[0]["pid"] not in (None, liar),
               30, "a replacement for the lying worker")
    assert d.workers("view")[0]["pid"] == other
    payload = os.urandom(T * 2)
    assert d.job("view", payload).body == payload


def test_a_large_payload_that_kills_workers_is_quarantined_by_its_bytes(start_daemon, tmp_path):
    d = start_daemon({"mixed": _pool(M + "crash_on_prefix", workers=2, retries=3)},
                     server=_server(tmp_path, journal=""))
    d.wait_ready("mixed")
    crash = b"crash" + os.urandom(T * 2)
    first = d.job("mixed", crash)
    assert (first.status, first.outcome) == (502, "crashed"), first
    assert first.json["quarantined"] is True, first
    # The fingerprint is the bytes' own, whether they came inline or in a memfd.
    expected = 1469598103934665603
    for byte in crash:
        expected = ((expected ^ byte) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    assert first.json["fingerprint"] == "fnv1a64:%016x:%d" % (expected, len(crash))
    again = d.job("mixed", crash)
    assert (again.status, again.outcome) == (422, "poison"), again
    # Another large payload is not refused, and one byte of difference is another payload.
    other = crash[:-1] + bytes([crash[-1] ^ 1])
    assert d.job("mixed", other).outcome == "crashed"
    fine = os.urandom(T * 2)
    assert d.job("mixed", fine).body == fine


def test_memfd_bodies_and_results_over_a_unix_socket(start_daemon, tmp_path):
    # sendfile(2) to a Unix stream socket, and a body read from one into a memfd.
    d = start_daemon({"view": _pool(M + "echo_view"), "big": _pool(M + "big_result")},
                     server={"memfd_threshold": "64KiB", "memfd_result_threshold": "64KiB",
                             "journal": "", "max_request_body": "80MiB"}, unix=True)
    payload = os.urandom(9 * 1024 * 1024 + 3)
    assert d.job("view", payload, timeout=60).body == payload
    assert d.job("big", str(T + 1).encode()).body == b"r" * (T + 1)
