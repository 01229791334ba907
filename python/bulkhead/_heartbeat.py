"""The worker's heartbeat thread (``BULKHEAD_HEARTBEAT_INTERVAL``, docs/protocol.md).

It owns the thread, its timing and the ``HEARTBEAT`` frame it writes (progress count, CPU seconds
without its own, a fingerprint of the main thread's stack).  It reads the running job's
``Context`` only through ``Context._heartbeat_snapshot`` and may write nothing but heartbeats, under
the lock it shares with the main thread (``bulkhead.worker`` calls ``begin`` and ``end``).
"""

import sys
# Taken now, before a handler's module can monkey-patch them (gevent, eventlet): the heartbeat
# thread must be an OS thread that sleeps for real.  (bulkhead.worker imports this module before
# it loads the handler.)
from _thread import allocate_lock as _allocate_lock, get_ident as _get_ident, \
    start_new_thread as _start_new_thread
from time import monotonic as _monotonic, process_time as _process_time, sleep as _sleep

from ._error_report import _safe_str, _type_name, _warn
from ._protocol import HEARTBEAT, encode_header

try:
    from time import thread_time as _thread_time
except ImportError:  # pragma: no cover - platforms without a per-thread CPU clock
    def _thread_time():
        return 0.0

try:
    from _socket import MSG_NOSIGNAL as _NO_SIGPIPE   # EPIPE even if a handler reset SIGPIPE
except ImportError:  # pragma: no cover - not Linux
    _NO_SIGPIPE = 0

_STACK_DEPTH = 256              # the stack fingerprint covers at most this many innermost frames


class Heartbeat(object):
    """The heartbeat thread and the lock that orders its frames with the main thread's.

    The main thread calls ``begin(ctx)`` when a job starts and ``end()`` when it has the job's
    result frame ready, before writing it.  The thread sends a HEARTBEAT for ``ctx`` every
    ``interval`` seconds after ``begin``, holding ``lock`` while it checks that ``ctx`` is still
    the running job and writes the frame; ``end`` clears the running job under the same lock.  So
    a heartbeat never interleaves with another frame (the main thread writes nothing else while a
    job runs), and none for a job follows that job's ``end``.  Once idle with no beat due, the
    thread blocks on ``_wake``, which ``begin`` releases; otherwise it sleeps until the next beat
    is due (it does not chase jobs shorter than the interval).

    The thread is started by the first ``begin`` and then reused.  A native call that holds the
    GIL stops it: the supervisor reads the missing heartbeats as a hang, which is the point.
    """

    def __init__(self, sock, interval):
        self._sendall = sock.sendall
        self.interval = interval
        self.lock = _allocate_lock()
        self._wake = _allocate_lock()
        self._wake.acquire()            # held while idle: the thread blocks acquiring it
        self._ctx = None                # the running job's Context, or None between jobs
        self._due = 0.0                 # monotonic time of the next heartbeat
        self._main = None               # thread id whose stack is fingerprinted
        self._cpu = 0.0                 # last CPU seconds reported (they never go down)
        self._digest = None
        self._thread = None             # the thread's id once started

    # -- main thread

    def begin(self, ctx):
        if self._thread is None:
            self._start()
        ctx._leave_beats_to_thread()    # progress() only counts; the thread reports the count
        with self.lock:
            self._ctx = ctx
            self._due = _monotonic() + self.interval
        # Only the main thread releases _wake: if it is held, the release cannot fail.  If it is
        # not, the thread has not yet taken the last release and will see this job when it does.
        if self._wake.locked():
            self._wake.release()

    def end(self):
        # Waits for a heartbeat being written to finish; after this, none is sent for the job.
        with self.lock:
            self._ctx = None

    def _start(self):
        try:
            from _blake2 import blake2b

            def digest(data):
                return blake2b(data, digest_size=8).hexdigest()
        except ImportError:  # pragma: no cover - CPython builds without blake2
            def digest(data):
                return "%016x" % (hash(data) & 0xFFFFFFFFFFFFFFFF)
        self._digest = digest
        self._main = _get_ident()
        # Not threading.Thread: no threading import, and no patched version of it.  Like a daemon
        # thread, it is not waited for at exit.
        self._thread = _start_new_thread(self._run, ())

    # -- the heartbeat thread

    def _run(self):
        try:
            self._loop()
        except OSError:
            pass        # the control socket is gone; the main thread finds out on its own
        except BaseException as exc:  # noqa: B036 - say why the heartbeats stopped
            _warn("heartbeat thread stopped: %s: %s" % (_type_name(type(exc)), _safe_str(exc)))

    def _loop(self):
        lock, wake, interval = self.lock, self._wake, self.interval
        while True:
            wake.acquire()              # idle: wait for a job to begin
            while True:
                with lock:
                    ctx = self._ctx
                    delay = self._due - _monotonic()
                if delay > 0:
                    # Sleep until a beat is due even if the job has ended meanwhile: a stream of
                    # short jobs then costs this thread one wake-up per interval, not one per job.
                    # A job that begins meanwhile sets a later _due, read when we wake.
                    _sleep(delay)
                    continue
                if ctx is None:
                    break               # idle, nothing due: wait for the next job
                frame = self._frame(ctx)
                with lock:
                    if self._ctx is not ctx:
                        continue        # ended while we looked: its result may be out already
                    self._sendall(frame, _NO_SIGPIPE)
                    now = _monotonic()
                    due = self._due + interval
                    # Late (the GIL was held, or we were descheduled): no burst of catch-up beats.
                    self._due = due if due > now else now + interval
                frame = None

    def _frame(self, ctx):
        job_id, count = ctx._heartbeat_snapshot()
        body = b'{"progress":%d,"cpu_seconds":%.6f,"stack":"%s"}' % (
            count, self._cpu_seconds(), self._stack_fingerprint().encode("ascii"))
        return encode_header(HEARTBEAT, job_id, len(body)) + body

    def _cpu_seconds(self):
        """CPU seconds of the process minus this thread's own: a deadlocked job's stay flat."""
        cpu = _process_time() - _thread_time()  # in this order: never counts our own time
        if cpu < self._cpu:
            cpu = self._cpu
        self._cpu = cpu
        return cpu

    def _stack_fingerprint(self):
        """Short hex hash of the main thread's stack as (file, function, line) of each frame."""
        frame = sys._current_frames().get(self._main)
        parts = []
        while frame is not None and len(parts) < _STACK_DEPTH:
            code = frame.f_code
            parts.append("%s\0%s\0%s" % (code.co_filename, code.co_name, frame.f_lineno))
            frame = frame.f_back
        frame = None                    # keep no frame (and its locals) alive
        return self._digest("\n".join(parts).encode("utf-8", "backslashreplace"))
