"""Reused payload memfds (docs/protocol.md, "Large payloads by memfd"): a pool's next large job
body is read into a file the pool used before, which holds exactly the new payload and zeros after
it; a file a handler kept a view of is never written again; another pool never gets it; unused
files go. Each job waits for the daemon to have the file back (/metrics), not for time."""

import os
import re

import pytest

from conftest import wait_until
from test_memfd import _pool

M = "memfd_handlers:"
MIB = 1024 * 1024


def _server(**more):
    server = {"listen": "127.0.0.1:0", "memfd_threshold": "64KiB", "journal": ""}
    server.update(more)
    return server


def _metric(d, name):
    text = d.http("GET", "/metrics").body.decode()
    match = re.search(r"^%s (\S+)$" % re.escape(name), text, re.M)
    assert match, "no %s in /metrics" % name
    return float(match.group(1))


def _files_back(d, count):
    wait_until(lambda: _metric(d, "bulkhead_payload_files_idle") >= count, 30,
               "%d payload file(s) back in the cache" % count)


@pytest.mark.parametrize("mode", ["spawn", "zygote"])
def test_a_pools_next_payload_reuses_its_file_with_the_old_tail_wiped(start_daemon, mode):
    extra = {"mode": "zygote"} if mode == "zygote" else {}
    d = start_daemon({"facts": _pool(M + "file_facts", **extra),
                      "other": _pool(M + "file_facts", **extra)}, server=_server())
    first = d.job("facts", b"a" * (3 * MIB), timeout=60).json
    assert first["size"] == 3 * MIB and first["tail_zero"] and first["file_size"] >= 3 * MIB
    _files_back(d, 1)
    reuses = _metric(d, "bulkhead_payload_file_reuses_total")

    # Shorter: the same file, the earlier payload's last MiB wiped.
    second = d.job("facts", b"b" * (2 * MIB), timeout=60).json
    assert second["inode"] == first["inode"], (first, second)
    assert (second["first"], second["size"], second["uniform"]) == (ord("b"), 2 * MIB, True)
    assert second["tail_zero"], second
    assert _metric(d, "bulkhead_payload_file_reuses_total") == reuses + 1
    _files_back(d, 1)

    # Another pool never gets this pool's file.
    other = d.job("other", b"c" * (2 * MIB), timeout=60).json
    assert other["inode"] != first["inode"] and other["tail_zero"]

    # Byte-exact through a reused file, odd sizes either way.
    _files_back(d, 2)
    for size in (2 * MIB + 12345, 2 * MIB - 1, 3 * MIB):
        payload = os.urandom(size)
        _files_back(d, 2)
        r = d.job("facts", payload, timeout=60).json
        assert r["inode"] == first["inode"] and r["size"] == size and r["tail_zero"], r
        assert (r["first"], r["last"]) == (payload[0], payload[-1])


def test_a_reused_file_round_trips_byte_exact_through_a_view_echo(start_daemon):
    d = start_daemon({"view": _pool(M + "echo_view")},
                     server=_server(memfd_result_threshold="64KiB"))
    for size in (3 * MIB + 7, 2 * MIB + 1, 3 * MIB + 7, 65536, 3 * MIB):
        payload = os.urandom(size)
        r = d.job("view", payload, timeout=60)
        assert r.status == 200 and r.body == payload, (size, r.status)
        _files_back(d, 1)
    assert _metric(d, "bulkhead_payload_file_reuses_total") >= 3


def test_a_file_a_handler_kept_a_view_of_is_never_written_again(start_daemon):
    d = start_daemon({"keep": _pool(M + "keep_a_view")}, server=_server())
    size = 2 * MIB
    kept_inode = d.job("keep", b"keep" + b"A" * size, timeout=60).body
    # A small job after it: the first job's file is back by then unless it was kept. The worker
    # said PAYLOAD_KEPT before answering, so it is not.
    fds = d.job("keep", b"fds?").body.decode()
    assert "bulkhead-payload" not in fds, fds       # its mapping stays, not its fd
    assert _metric(d, "bulkhead_payload_files_idle") == 0
    other_inode = d.job("keep", b"next" + b"B" * size, timeout=60).body
    assert other_inode != kept_inode
    _files_back(d, 1)       # the second file, which nobody kept
    assert d.job("keep", b"next" + b"C" * size, timeout=60).body == other_inode
    # What the handler kept still reads as the first job's bytes.
    assert d.job("keep", b"show" + b"D" * size, timeout=60).body == b"A" * 16


def test_unused_files_go_after_a_while(start_daemon):
    d = start_daemon({"facts": _pool(M + "file_facts")}, server=_server())
    assert d.job("facts", b"x" * (2 * MIB), timeout=60).json["tail_zero"]
    _files_back(d, 1)
    assert _metric(d, "bulkhead_payload_files_idle_bytes") >= 2 * MIB
    wait_until(lambda: _metric(d, "bulkhead_payload_files_idle_bytes") == 0, 60,
               "the unused payload file dropped")
    assert _metric(d, "bulkhead_payload_files_idle") == 0


def test_a_body_cut_short_in_a_reused_file_leaves_it_for_the_next_job_whole(start_daemon):
    """A client that goes away mid-body: the file it was filling goes back unlent, and the next
    job in it gets its own bytes, wiped past them."""
    d = start_daemon({"facts": _pool(M + "file_facts")}, server=_server())
    first = d.job("facts", b"a" * (3 * MIB), timeout=60).json
    _files_back(d, 1)
    reuses = _metric(d, "bulkhead_payload_file_reuses_total")
    sock = d.raw_socket()
    sock.sendall(b"POST /v1/pools/facts/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                 % (3 * MIB) + b"z" * (2 * MIB))
    wait_until(lambda: _metric(d, "bulkhead_payload_file_reuses_total") > reuses, 30,
               "the cut body taken into the pool's file")
    sock.close()
    _files_back(d, 1)
    whole = d.job("facts", b"b" * (2 * MIB + 1), timeout=60).json
    assert whole["inode"] == first["inode"], (first, whole)
    assert (whole["first"], whole["size"], whole["uniform"]) == (ord("b"), 2 * MIB + 1, True)
    assert whole["tail_zero"], whole


def test_with_payload_file_cache_zero_every_body_gets_a_new_file(start_daemon):
    d = start_daemon({"facts": _pool(M + "file_facts")},
                     server=_server(payload_file_cache="0"))
    inodes = set()
    for fill in (b"a", b"b", b"c"):
        r = d.job("facts", fill * (2 * MIB), timeout=60).json
        assert r["uniform"] and r["tail_zero"] and r["file_size"] == 2 * MIB, r
        inodes.add(r["inode"])
        # With reuse on, the file would be back by this round trip (as _files_back waits for).
        assert _metric(d, "bulkhead_payload_files_idle") == 0
    assert len(inodes) == 3
    assert _metric(d, "bulkhead_payload_file_reuses_total") == 0


def test_a_body_for_a_pool_that_is_not_here_keeps_no_file(start_daemon):
    d = start_daemon({"facts": _pool(M + "file_facts")}, server=_server())
    for _ in range(3):
        assert d.job("nope", b"n" * (2 * MIB), timeout=60).status == 404
    assert d.job("facts", b"f" * (2 * MIB), timeout=60).json["uniform"]
    _files_back(d, 1)
    assert _metric(d, "bulkhead_payload_files_idle") == 1   # the pool's own, nothing for "nope"
