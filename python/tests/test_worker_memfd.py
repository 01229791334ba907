"""Large payloads and results as sealed memfds (docs/protocol.md, "Large payloads by memfd"): a
real ``python -m bulkhead.worker`` driven over its control socket by the test as supervisor,
which sends ``JOB_FD`` with its memfd as SCM_RIGHTS and receives ``RESULT_BYTES_FD`` the same way.
The handlers at the end are the workers' (``test_worker_memfd:NAME``): the worker imports this
module, so it imports nothing heavy at module level besides pytest.
"""

import fcntl
import json
import os
import socket
import struct
import subprocess

import pytest

from bulkhead import _protocol as P

THRESHOLD = 64 * 1024
ALL_SEALS = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL
WANTED_SEALS = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW
WAIT = 15.0
THIS = "test_worker_memfd:"


def sealed_memfd(data):
    """A memfd holding ``data``, sealed as the daemon seals a job's payload."""
    fd = os.memfd_create("test-payload", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    done = 0
    while done < len(data):
        done += os.write(fd, memoryview(data)[done:])
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, ALL_SEALS)
    return fd


def send_job_fd(proc, job_id, fd, size=None, fds=None):
    """JOB_FD: header and body in one sendmsg with ``fds`` (default: ``[fd]``) attached."""
    data = P.encode_fd_frame(P.JOB_FD, job_id, os.fstat(fd).st_size if size is None else size)
    fds = fds or [fd]
    rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("%di" % len(fds), *fds))]
    assert proc.sock.sendmsg([data], rights) == len(data)


def read_answer(proc, timeout=WAIT, heartbeats=False):
    """The next frame from the worker (but a heartbeat, unless ``heartbeats``, and PAYLOAD_KEPT,
    whose job id goes to ``proc.kept``) and, for RESULT_BYTES_FD, its fd; no other frame may
    bring one."""
    from conftest import _wait_readable
    while True:
        frame = proc.decoder.next()
        if frame is None:
            assert not proc.decoder.eof, "EOF instead of a frame; stderr:\n" + proc.read_stderr()
            assert _wait_readable(proc.sock.fileno(), timeout), \
                "no frame within %s s; stderr:\n%s" % (timeout, proc.read_stderr())
            data, ancillary, flags, _ = proc.sock.recvmsg(1 << 20, socket.CMSG_SPACE(16 * 4),
                                                          socket.MSG_CMSG_CLOEXEC)
            for level, kind, payload in ancillary:
                assert (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS)
                proc.fds.extend(struct.unpack("%di" % (len(payload) // 4), payload))
            assert not flags & socket.MSG_CTRUNC
            proc.decoder.feed(data) if data else proc.decoder.feed_eof()
        elif frame.type == P.PAYLOAD_KEPT:
            assert frame.body == b""
            proc.kept.append(frame.job_id)
        elif heartbeats or frame.type != P.HEARTBEAT:
            with_fd = frame.type == P.RESULT_BYTES_FD
            fd = proc.fds.pop(0) if with_fd and proc.fds else None
            if frame.type != P.HEARTBEAT:   # (a heartbeat's read may bring the result's fd)
                assert (fd is not None) == with_fd and not proc.fds, (frame, fd, proc.fds)
            return frame, fd


def result_bytes(frame, fd):
    """The bytes of a RESULT_BYTES(_FD) answer; checks an fd's seals and size, closes it."""
    if fd is None:
        assert frame.type == P.RESULT_BYTES, frame
        return bytes(frame.body)
    try:
        assert fcntl.fcntl(fd, fcntl.F_GET_SEALS) & WANTED_SEALS == WANTED_SEALS
        size = P.decode_fd_size(frame.body)
        assert os.fstat(fd).st_size == size
        data = os.pread(fd, size + 1, 0)
        assert len(data) == size
        return data
    finally:
        os.close(fd)


def run_fd_job(proc, job_id, data):
    """Send ``data`` as a JOB_FD; the answer frame and its fd (the test's memfd is closed)."""
    fd = sealed_memfd(data)
    try:
        send_job_fd(proc, job_id, fd)
    finally:
        os.close(fd)
    answer = read_answer(proc)
    assert answer[0].job_id == job_id
    return answer


def open_fds(proc):
    """The worker's open fds once it is idle: the answer of an inline job shows that it has
    ended the job before (a job's fds are closed after its answer is sent)."""
    proc.send(P.JOB, 1 << 40, b"sync")
    frame, fd = read_answer(proc)
    assert frame.job_id == 1 << 40 and fd is None
    return len(os.listdir("/proc/%d/fd" % proc.pid))


def memfd_worker(ready_worker, handler, threshold=THRESHOLD, env=None):
    env = dict(env or {}, BULKHEAD_MEMFD_THRESHOLD=None if threshold is None else str(threshold))
    proc = ready_worker(handler, env=env)
    proc.decoder, proc.fds = P.FrameDecoder(P.WORKER_TO_SUPERVISOR_FD), []    # fd frames too
    proc.kept = []
    return proc


@pytest.mark.parametrize("handler", ["handlers_for_tests:echo", "handlers_for_tests:view_echo"])
def test_payloads_of_every_size_come_back_byte_exact(ready_worker, handler):
    proc = memfd_worker(ready_worker, handler)
    # A view handler's echo of a JOB_FD goes back in that same memfd at any size: it is free.
    small_fd_answer = P.RESULT_BYTES_FD if handler.endswith("view_echo") else P.RESULT_BYTES
    cases = [(1, "fd", small_fd_answer), (THRESHOLD - 1, "inline", P.RESULT_BYTES),
             (THRESHOLD, "fd", P.RESULT_BYTES_FD), (THRESHOLD + 1, "fd", P.RESULT_BYTES_FD),
             (64 << 20, "fd", P.RESULT_BYTES_FD)]
    for job_id, (size, how, answer_type) in enumerate(cases, start=1):
        data = os.urandom(size) if size < (1 << 20) else os.urandom(1 << 16) * (size >> 16)
        if how == "fd":
            frame, fd = run_fd_job(proc, job_id, data)
        else:
            proc.send(P.JOB, job_id, data)
            frame, fd = read_answer(proc)
        assert frame.type == answer_type, (size, frame)
        got = result_bytes(frame, fd)
        assert len(got) == size and got == data, size
    assert proc.run_job(99, b"small") == P.Frame(P.RESULT_BYTES, 99, b"small")


@pytest.mark.parametrize("handler, facts", [
    # A memoryview handler: a read-only view of the mapping, which stays during the job.
    ("view_facts", {"type": "memoryview", "obj": "mmap", "readonly": True, "first": "q",
                    "memfd_mapped": True}),
    # Any other: bytes, and neither mapping nor fd is left during its job.
    ("bytes_facts", {"type": "bytes", "memfd_mapped": False, "memfd_fds": 0})])
def test_what_a_handler_gets_for_a_job_fd(ready_worker, handler, facts):
    proc = memfd_worker(ready_worker, THIS + handler)
    frame, fd = run_fd_job(proc, 1, b"q" * (THRESHOLD + 3))
    assert fd is None and json.loads(frame.body) == dict(facts, len=THRESHOLD + 3)


def test_a_write_into_the_view_is_a_handler_error_and_the_worker_lives(ready_worker):
    proc = memfd_worker(ready_worker, THIS + "view_write")
    frame, fd = run_fd_job(proc, 1, b"w" + b"a" * THRESHOLD)
    assert fd is None and frame.type == P.HANDLER_ERROR
    error = json.loads(frame.body)
    assert error["type"] == "TypeError" and "read-only" in error["message"]
    data = b"b" * (THRESHOLD + 1)
    assert result_bytes(*run_fd_job(proc, 2, data)) == data


def test_a_kept_view_fails_after_its_job(ready_worker):
    proc = memfd_worker(ready_worker, "handlers_for_tests:view_keep_then_touch")
    assert result_bytes(*run_fd_job(proc, 1, b"A" * THRESHOLD)) == b"kept"
    answer = result_bytes(*run_fd_job(proc, 2, b"B" * THRESHOLD))
    assert answer.startswith(b"ValueError") and b"released" in answer, answer[:200]


def test_numpy_arrays_kept_over_payload_views_keep_their_bytes(ready_worker):
    pytest.importorskip("numpy")
    proc = memfd_worker(ready_worker, THIS + "view_numpy_keep")
    for job_id in range(1, 15):
        data = bytes([job_id]) * (THRESHOLD + job_id)
        if job_id % 4 == 0:             # inline now and then: the decoder's kept buffer
            proc.send(P.JOB, job_id, data)
            frame, fd = read_answer(proc)
        else:
            frame, fd = run_fd_job(proc, job_id, data)
        assert frame.type == P.RESULT_BYTES_FD, frame       # a HANDLER_ERROR names the bad one
        assert result_bytes(frame, fd) == data
    # Each JOB_FD's mapping stays under its array: the daemon is told, before each answer, not
    # to write another payload into that file.
    assert proc.kept == [job_id for job_id in range(1, 15) if job_id % 4]


@pytest.mark.parametrize("handler", ["handlers_for_tests:echo", "handlers_for_tests:view_echo",
                                     THIS + "view_sum"])
def test_a_job_fds_mapping_is_gone_before_its_answer_and_nothing_is_kept(ready_worker, handler):
    """Once a job is answered the daemon may write the next payload into the same file: the
    worker must not map it any more by then."""
    proc = memfd_worker(ready_worker, handler)
    for job_id in (1, 2):
        frame, fd = run_fd_job(proc, job_id, b"m" * (THRESHOLD * 2))
        with open("/proc/%d/maps" % proc.pid) as maps:
            assert "test-payload" not in maps.read()
        if fd is not None:
            os.close(fd)
    assert proc.kept == []


@pytest.mark.parametrize("handler", ["handlers_for_tests:echo", "handlers_for_tests:view_echo"])
def test_a_file_larger_than_its_payload_gives_the_handler_the_payload_only(ready_worker, handler):
    """The daemon reuses a pool's files: one may be larger than the payload it holds now."""
    proc = memfd_worker(ready_worker, handler)
    fd = sealed_memfd(b"p" * (THRESHOLD + 5) + b"\0" * 4096)
    try:
        send_job_fd(proc, 1, fd, size=THRESHOLD + 5)
    finally:
        os.close(fd)
    frame, result = read_answer(proc)
    if result is not None and "view" in handler:    # its own file, given back with the size
        assert P.decode_fd_size(frame.body) == THRESHOLD + 5
        assert os.pread(result, THRESHOLD + 5, 0) == b"p" * (THRESHOLD + 5)
        os.close(result)
    else:
        assert result_bytes(frame, result) == b"p" * (THRESHOLD + 5)


def test_large_bytes_results_come_as_sealed_memfds_small_ones_inline(ready_worker):
    proc = memfd_worker(ready_worker, "handlers_for_tests:make_bytes")
    for job_id, size in enumerate([THRESHOLD, THRESHOLD + 1, 5 << 20, THRESHOLD - 1, 1, 0], 1):
        proc.send(P.JOB, job_id, b"%d" % size)
        frame, fd = read_answer(proc)
        if size >= THRESHOLD:           # result_bytes checks the seals and the size
            assert frame.type == P.RESULT_BYTES_FD and fd is not None
            assert len(frame.body) == 8 and P.decode_fd_size(frame.body) == size
        else:
            assert frame.type == P.RESULT_BYTES and fd is None
        assert result_bytes(frame, fd) == b"x" * size


def test_results_have_their_own_threshold_and_an_echoed_view_goes_back_by_fd_under_it(
        ready_worker):
    # The daemon passes both: payloads from 64 KiB by memfd, results only from 1 MiB.
    env = {"BULKHEAD_MEMFD_RESULT_THRESHOLD": str(1 << 20)}
    proc = memfd_worker(ready_worker, "handlers_for_tests:make_bytes", env=env)
    for job_id, size in enumerate([THRESHOLD, (1 << 20) - 1, 1 << 20], 1):
        proc.send(P.JOB, job_id, b"%d" % size)
        frame, fd = read_answer(proc)
        assert (frame.type == P.RESULT_BYTES_FD) is (size >= 1 << 20), (size, frame.type)
        assert result_bytes(frame, fd) == b"x" * size
    viewer = memfd_worker(ready_worker, "handlers_for_tests:view_echo", env=env)
    data = os.urandom(THRESHOLD + 4)
    sent = sealed_memfd(data)
    try:       # under the result threshold, but its own memfd costs nothing: it goes back
        send_job_fd(viewer, 1, sent)
        frame, fd = read_answer(viewer)
        assert frame.type == P.RESULT_BYTES_FD and os.fstat(fd).st_ino == os.fstat(sent).st_ino
        assert result_bytes(frame, fd) == data
    finally:
        os.close(sent)
    off = memfd_worker(ready_worker, "handlers_for_tests:view_echo",
                       env={"BULKHEAD_MEMFD_RESULT_THRESHOLD": "0"})
    frame, fd = run_fd_job(off, 1, data)          # result memfds off: even that goes inline
    assert fd is None and frame == P.Frame(P.RESULT_BYTES, 1, data)


def test_text_results_stay_inline_whatever_their_size(ready_worker):
    proc = memfd_worker(ready_worker, "handlers_for_tests:upper_text")
    data = b"abc" * THRESHOLD
    proc.send(P.JOB, 1, data)
    frame, fd = read_answer(proc)
    assert fd is None and frame == P.Frame(P.RESULT_TEXT, 1, data.upper())


@pytest.mark.parametrize("threshold", [None, 0])
def test_without_a_threshold_every_result_is_inline(ready_worker, threshold):
    proc = memfd_worker(ready_worker, "handlers_for_tests:view_echo", threshold=threshold)
    data = os.urandom(1 << 20)
    frame, fd = run_fd_job(proc, 1, data)
    assert fd is None and frame == P.Frame(P.RESULT_BYTES, 1, data)


def test_a_result_above_max_frame_is_still_a_handler_error(ready_worker):
    proc = memfd_worker(ready_worker, "handlers_for_tests:make_bytes",
                        env={"BULKHEAD_MAX_FRAME": str(THRESHOLD * 2)})
    proc.send(P.JOB, 1, b"%d" % (THRESHOLD * 2 + 1))
    frame, fd = read_answer(proc)
    assert fd is None and frame.type == P.HANDLER_ERROR
    assert json.loads(frame.body)["type"] == "ValueError"


@pytest.mark.parametrize("handler, same", [("handlers_for_tests:view_echo", True),
                                           (THIS + "view_mapping", True),
                                           (THIS + "view_cast", True), (THIS + "view_tail", False)])
def test_an_echoed_view_is_answered_with_the_jobs_own_memfd(ready_worker, handler, same):
    proc = memfd_worker(ready_worker, handler)
    data = os.urandom(THRESHOLD + 4)
    sent = sealed_memfd(data)
    try:
        send_job_fd(proc, 7, sent)
        frame, fd = read_answer(proc)
        assert frame.type == P.RESULT_BYTES_FD and fd is not None
        # The same memfd, not a copy (a part of the view is copied into a new one).
        assert (os.fstat(fd).st_ino == os.fstat(sent).st_ino) is same
        assert result_bytes(frame, fd) == (data if same else data[1:])
    finally:
        os.close(sent)


def test_without_memfds_a_large_result_falls_back_to_inline(ready_worker):
    # RLIMIT_NOFILE at the worker's current count: memfd_create fails with EMFILE.
    proc = memfd_worker(ready_worker, THIS + "no_free_fds_then_make")
    proc.send(P.JOB, 1, b"%d" % (THRESHOLD * 2))
    frame, fd = read_answer(proc)
    assert fd is None and frame == P.Frame(P.RESULT_BYTES, 1, b"y" * (THRESHOLD * 2))


def test_fd_results_and_heartbeats_do_not_mix(ready_worker):
    proc = memfd_worker(ready_worker, THIS + "beat_then_make",
                        env={"BULKHEAD_HEARTBEAT_INTERVAL": "0.002"})
    beats = 0
    for job_id in range(1, 4):
        proc.send(P.JOB, job_id, b"%d" % (THRESHOLD * 2))
        frame, fd = read_answer(proc, heartbeats=True)
        while frame.type == P.HEARTBEAT:        # none after the result: the next job's follow
            assert frame.job_id == job_id and fd is None
            beats += 1
            frame, fd = read_answer(proc, heartbeats=True)
        assert frame.type == P.RESULT_BYTES_FD and frame.job_id == job_id
        assert result_bytes(frame, fd) == b"h" * (THRESHOLD * 2)
    assert beats > 0                            # 150 ms of work at one beat per 2 ms


def _fd_job(proc, job_id):
    return run_fd_job(proc, job_id, b"L" * THRESHOLD)


def _large_result(proc, job_id):
    proc.send(P.JOB, job_id, b"%d" % (THRESHOLD * 4))
    return read_answer(proc)


@pytest.mark.parametrize("handler, job, count", [
    ("handlers_for_tests:echo", _fd_job, 1000),             # each result in a new memfd
    ("handlers_for_tests:view_echo", _fd_job, 1000),        # the job's own memfd back
    (THIS + "view_sum", _fd_job, 1000),                     # a small result, inline
    ("handlers_for_tests:make_bytes", _large_result, 200)])  # inline jobs, memfd results
def test_fd_jobs_and_results_leave_no_fd_behind(ready_worker, handler, job, count):
    proc = memfd_worker(ready_worker, handler)
    for job_id in range(1, 4):                              # first uses (imports) are done
        result_bytes(*job(proc, job_id))
    before = open_fds(proc)
    for job_id in range(10, 10 + count):
        assert len(result_bytes(*job(proc, job_id))) in (8, THRESHOLD, THRESHOLD * 4)
    assert open_fds(proc) == before


# -- a worker forked by the zygote -----------------------------------------------------------


_ZYGOTE_DRIVER = r"""
import ctypes, json, os, socket, struct, sys
sys.path[:0] = [%(py)r, %(tests)r]
from bulkhead import _protocol as P
import test_worker_memfd as T
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)        # PR_SET_CHILD_SUBREAPER: workers reparent to us
class Peer(object):                             # what T.read_answer needs of a WorkerProcess
    def __init__(self):
        self.sock, theirs = socket.socketpair()
        self.fd = theirs.detach()
        self.fds, self.read_stderr = [], lambda: ""
        self.decoder = P.FrameDecoder(P.WORKER_TO_SUPERVISOR_FD | P.ZYGOTE_TO_SUPERVISOR)
    def types(self, count):
        return [T.read_answer(self)[0].type for _ in range(count)]
zygote, worker = Peer(), Peer()
env = {"PYTHONPATH": os.pathsep.join(sys.path[:2]), "BULKHEAD_CONTROL_FD": "3",
       "BULKHEAD_STACKS_FD": "4", "BULKHEAD_HANDLER": "handlers_for_tests:view_echo"}
os.set_inheritable(zygote.fd, True)
zygote_pid = os.posix_spawn(sys.executable, [sys.executable, "-m", "bulkhead.zygote"], env,
                            file_actions=[(os.POSIX_SPAWN_DUP2, zygote.fd, 3),
                                          (os.POSIX_SPAWN_DUP2, 2, 4)])
assert zygote.types(2) == [P.HELLO, P.READY]
body = json.dumps({"worker": "z-1", "rlimit_as": 0, "fds": 4, "env": dict(
    env, BULKHEAD_WORKER_ID="z-1", BULKHEAD_MEMFD_THRESHOLD=str(T.THRESHOLD))}).encode()
fds = [worker.fd, os.open(os.devnull, os.O_WRONLY), 2, 2]
zygote.sock.sendmsg([P.encode_frame(P.FORK, 1, body)],
                    [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("4i", *fds))])
forked = T.read_answer(zygote)[0]
assert forked.type == P.FORKED, forked
os.close(worker.fd)
assert worker.types(2) == [P.HELLO, P.READY]
data = os.urandom(T.THRESHOLD * 3)
sent = T.sealed_memfd(data)
T.send_job_fd(worker, 5, sent)
frame, fd = T.read_answer(worker)
same = os.fstat(fd).st_ino == os.fstat(sent).st_ino
print(json.dumps({"type": frame.type, "same": same, "exact": T.result_bytes(frame, fd) == data}))
for peer in (worker, zygote):
    peer.sock.sendall(P.encode_frame(P.SHUTDOWN, 0))
print(json.dumps({"exits": sorted(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
                                  for pid in (zygote_pid, json.loads(forked.body)["pid"]))}))
"""


def test_a_worker_forked_by_the_zygote_serves_fd_jobs():
    from conftest import PY_DIR, PYTHON, TESTS_DIR
    code = _ZYGOTE_DRIVER % {"py": PY_DIR, "tests": TESTS_DIR}
    out = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert lines == [{"type": P.RESULT_BYTES_FD, "same": True, "exact": True},
                     {"exits": [0, 0]}], out.stdout + out.stderr


# -- handlers (run in the worker) ------------------------------------------------------------


def view_facts(payload: memoryview, ctx):
    return {"type": type(payload).__name__, "obj": type(payload.obj).__name__,
            "readonly": payload.readonly, "len": len(payload), "first": chr(payload[0]),
            "memfd_mapped": _memfd_state()[0]}


def _memfd_state():
    """(whether a payload memfd is mapped, the fds open on one) in this process."""
    def target(name):
        try:
            return os.readlink("/proc/self/fd/" + name)
        except OSError:
            return ""           # the listing's own fd, closed by now
    with open("/proc/self/maps") as f:
        mapped = any("memfd:test-payload" in line for line in f)
    return mapped, [int(name) for name in os.listdir("/proc/self/fd")
                    if target(name).startswith("/memfd:test-payload")]


def bytes_facts(payload, ctx):
    mapped, fds = _memfd_state()
    return {"type": type(payload).__name__, "len": len(payload), "memfd_mapped": mapped,
            "memfd_fds": len(fds)}


def view_write(payload: memoryview, ctx):
    if payload[0] == ord("w"):
        payload[0] = 0          # TypeError: read-only
    return payload


def view_mapping(payload: memoryview, ctx):
    return payload.obj          # the mmap itself


def view_cast(payload: memoryview, ctx):
    return payload.cast("I")    # the whole mapping in another format (size: a multiple of 4)


def view_tail(payload: memoryview, ctx):
    return payload[1:]


def view_sum(payload: memoryview, ctx):
    return struct.pack("<Q", sum(payload[:64]))


_NUMPY_KEPT = []


def view_numpy_keep(payload: memoryview, ctx):
    """Keeps a numpy array over every payload; every earlier one must still hold its bytes."""
    import numpy
    array = numpy.frombuffer(payload, dtype=numpy.uint8)
    _NUMPY_KEPT.append(array)
    for number, kept in enumerate(_NUMPY_KEPT, start=1):
        if not (kept[0] == kept[-1] == number and len(kept) == THRESHOLD + number):
            raise AssertionError("the array of job %d changed" % number)
    return bytes(payload)


def no_free_fds_then_make(payload, ctx):
    """Lowers RLIMIT_NOFILE to the lowest free fd: the worker can open no fd after this."""
    import resource
    lowest = os.dup(0)
    os.close(lowest)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest, resource.getrlimit(
        resource.RLIMIT_NOFILE)[1]))
    return b"y" * int(payload)


def memfds_are_cloexec(payload: memoryview, ctx):
    """The job's fd (kept open while a view runs) and the mapping's: a child must not get them."""
    fds = _memfd_state()[1]
    return {"fds": len(fds), "cloexec": sum(bool(fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC)
                                           for fd in fds)}


def beat_then_make(payload, ctx):
    """Runs for a few heartbeat intervals (the work being beaten), then a large result."""
    import time
    deadline = time.monotonic() + 0.05
    while time.monotonic() < deadline:
        ctx.progress()
    return b"h" * int(payload)
