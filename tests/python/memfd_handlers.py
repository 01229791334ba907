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


def _payload_fd(size):
    """The fd of this job's payload file (a memoryview job keeps it open while it runs)."""
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink("/proc/self/fd/" + name)
        except OSError:
            continue
        if target.startswith("/memfd:bulkhead-payload") and os.fstat(int(name)).st_size >= size:
            return int(name)
    raise AssertionError("no payload memfd among this worker's fds")


def file_facts(payload: memoryview, ctx):
    """Which file the payload came in, its size, and whether it reads as zeros past the payload
    (a reused file held a longer payload before)."""
    fd = _payload_fd(len(payload))
    st = os.fstat(fd)
    tail = os.pread(fd, st.st_size - len(payload), len(payload))
    return {"inode": st.st_ino, "file_size": st.st_size, "tail_zero": tail.count(0) == len(tail),
            "first": payload[0], "last": payload[-1], "size": len(payload),
            "uniform": payload.tobytes().count(payload[0]) == len(payload)}


_KEPT = []


def keep_a_view(payload: memoryview, ctx):
    """b"keep...": keeps a view of the payload past the job; b"show...": what the first kept view
    reads now; else the payload's file's inode."""
    if payload[:4] == b"keep":
        _KEPT.append(payload[4:20])
    if payload[:4] == b"show":
        return bytes(_KEPT[0])
    if payload[:4] == b"fds?":
        return "\n".join(sorted(os.readlink("/proc/self/fd/" + fd)
                                for fd in os.listdir("/proc/self/fd")))
    return str(os.fstat(_payload_fd(len(payload))).st_ino)
