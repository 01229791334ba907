"""Large payloads by memfd (docs/protocol.md, "Large payloads by memfd"): what a worker does
with a supervisor's mistakes. A ``JOB_FD`` without its fd, smaller than it says, with a body of
the wrong size or with more fds than one read takes is a protocol error (exit 4); the fds it does
take are close-on-exec; fd frames decode only where fds are accepted. The worker and its helpers
are test_worker_memfd.py's.
"""

import json
import os
import socket
import struct

import pytest

from bulkhead import _protocol as P
from test_worker_memfd import THIS, THRESHOLD, memfd_worker, run_fd_job, sealed_memfd, send_job_fd


@pytest.mark.parametrize("declared, actual", [(100, None), (200, 100), (0, 0), (1, 0)])
def test_a_job_fd_without_its_fd_or_smaller_than_said_is_a_protocol_error(ready_worker, declared,
                                                                          actual):
    proc = memfd_worker(ready_worker, "handlers_for_tests:view_echo")
    if actual is None:                  # no fd with the frame
        proc.send_raw(P.encode_fd_frame(P.JOB_FD, 1, declared))
    else:
        fd = sealed_memfd(b"s" * actual)
        try:
            send_job_fd(proc, 1, fd, size=declared)
        finally:
            os.close(fd)
    assert proc.wait() == 4
    assert ("without a file descriptor" if actual is None else
            "declares %d bytes but its file descriptor holds %d" % (declared, actual)
            ) in proc.read_stderr()


@pytest.mark.parametrize("length", [0, 4, 7, 9, 16])
def test_job_fd_with_a_body_other_than_8_bytes_is_a_protocol_error(ready_worker, length):
    proc = memfd_worker(ready_worker, "handlers_for_tests:echo")
    fd = sealed_memfd(b"p" * 100)
    try:
        data = struct.pack("<2sBBIQ", b"BK", 1, P.JOB_FD, length, 1) + b"\x01" * length
        proc.sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))])
    finally:
        os.close(fd)
    assert proc.wait() == 4
    assert "JOB_FD body of %d bytes" % length in proc.read_stderr()


def test_more_fds_than_fit_in_one_read_is_a_protocol_error(ready_worker):
    proc = memfd_worker(ready_worker, "handlers_for_tests:echo")
    fds = [sealed_memfd(b"m" * 10) for _ in range(5)]
    try:
        send_job_fd(proc, 1, fds[0], fds=fds)
    finally:
        for fd in fds:
            os.close(fd)
    assert proc.wait() == 4
    assert "MSG_CTRUNC" in proc.read_stderr()


def test_received_fds_are_close_on_exec(ready_worker):
    proc = memfd_worker(ready_worker, THIS + "memfds_are_cloexec")
    frame, fd = run_fd_job(proc, 1, b"c" * THRESHOLD)
    facts = json.loads(frame.body)
    assert fd is None and facts["fds"] >= 1 and facts["cloexec"] == facts["fds"], facts


def test_fd_frames_decode_only_where_accepted_and_only_with_8_byte_bodies():
    def decode(accept, data):
        decoder = P.FrameDecoder(accept)
        decoder.feed(data)
        return decoder.next()
    data = P.encode_fd_frame(P.JOB_FD, 3, 1 << 40)
    assert data == struct.pack("<2sBBIQQ", b"BK", 1, 0x83, 8, 3, 1 << 40)
    assert decode(P.SUPERVISOR_TO_WORKER_FD, data) == P.Frame(P.JOB_FD, 3, data[16:])
    for accept in (P.SUPERVISOR_TO_WORKER, P.WORKER_TO_SUPERVISOR_FD, P.ALL_TYPES):
        with pytest.raises(P.ProtocolError, match="type 0x83"):    # only where fds are taken
            decode(accept, data)
    for length in (0, 7, 9, 1 << 20):       # refused from the header, before any body
        with pytest.raises(P.ProtocolError, match="RESULT_BYTES_FD body of %d bytes" % length):
            decode(P.WORKER_TO_SUPERVISOR_FD,
                   struct.pack("<2sBBIQ", b"BK", 1, P.RESULT_BYTES_FD, length, 1))
    with pytest.raises(ValueError):         # an fd frame needs its fd
        P.encode_frame(P.RESULT_BYTES_FD, 1, bytes(8))
    with pytest.raises(ValueError):
        P.encode_fd_frame(P.JOB, 1, 8)
