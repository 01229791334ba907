"""Handlers for test_memfd.py: what a worker sees of a payload that came as a memfd, and workers
that lie about the memfds they send back."""

import array
import fcntl
import os
import socket
import struct
import time

RESULT_BYTES_FD = 0x14


def echo_view(payload: memoryview, ctx):
    return payload


def view_kind(payload: memoryview, ctx):
    """How the payload reached the handler: an mmap (memfd) or a buffer (inline frame)."""
    return {"obj": type(payload.obj).__name__, "size": len(payload), "readonly": payload.readonly}


def write_into_view(payload: memoryview, ctx):
    payload[0] = 1
    return b"wrote"


def big_result(payload, ctx):
    """b"r" * int(payload): a result of a chosen size."""
    return b"r" * int(payload)


def fd_count(payload, ctx):
    return str(len(os.listdir("/proc/self/fd")))


def _send_result_fd(ctx, fd, size):
    sock = socket.socket(fileno=os.dup(int(os.environ["BULKHEAD_CONTROL_FD"])))
    header = struct.pack("<2sBBIQ", b"BK", 1, RESULT_BYTES_FD, 8, ctx.job_id)
    sock.sendmsg([header + struct.pack("<Q", size)],
                 [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]).tobytes())])
    sock.detach()
    time.sleep(60)  # the supervisor must act on the frame, not on this worker's exit


def unsealed_result(payload, ctx):
    """RESULT_BYTES_FD with a memfd it could still change after handing it over."""
    fd = os.memfd_create("liar", os.MFD_ALLOW_SEALING)
    os.write(fd, b"x" * 100)
    _send_result_fd(ctx, fd, 100)


def wrong_size_result(payload, ctx):
    """RESULT_BYTES_FD whose sealed memfd is smaller than the frame says."""
    fd = os.memfd_create("liar", os.MFD_ALLOW_SEALING)
    os.write(fd, b"x" * 100)
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK
                | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
    _send_result_fd(ctx, fd, 1000)


def crash_on_prefix(payload, ctx):
    """Segfaults on a payload starting with b"crash"; echoes anything else."""
    if payload[:5] == b"crash":
        import ctypes
        ctypes.string_at(0)
    return payload


def size_of(payload, ctx):
    """A bytes handler with a short answer: the payload's size."""
    return str(len(payload))
