"""The bulkhead worker: ``python -m bulkhead.worker``, started by the supervisor (docs/protocol.md).

How this works: the supervisor execs this module with the control socket on fd 3 and the
*stacks* pipe on fd 4.  We point ``faulthandler`` at fd 4 (fatal signals, and the dump signal,
which writes every thread's stack without stopping us), send ``HELLO``, import the handler and
the optional preload function, run preload, and send ``READY`` (or ``START_FAILED`` and exit 3).
Then one job at a time: read a ``JOB`` frame, call ``handler(payload, ctx)``, send the result
frame.  ``SHUTDOWN`` or EOF on the control socket ends the process with exit code 0.  Large
payloads may come as ``JOB_FD`` (a sealed memfd), large bytes results go back as
``RESULT_BYTES_FD`` (``sendmsg``): ``bulkhead._memfd`` does the fd work.

Jobs run on the main thread, which writes every frame but one kind with ``sendall``.  When the
supervisor sets ``BULKHEAD_HEARTBEAT_INTERVAL`` (seconds), a thread started at the first job
(with ``_thread``: daemon-like, and not in ``threading.enumerate()``) sends a ``HEARTBEAT`` for
the running job every interval: the job's ``ctx.progress()`` count, the process's CPU seconds
(without the heartbeat thread's own) and a fingerprint of the main thread's Python stack, from
which the supervisor tells a hung job from a slow one.  One lock orders its frames with the main
thread's: the main thread takes it only to start and to end a job, and once a job has ended
(before its result frame is written) no heartbeat for it can follow.  Between jobs the thread
sends nothing.  Without the variable there is no thread and no lock.  That thread is
``bulkhead._heartbeat``'s; it and this module change a job's ``Context`` only through its
``_leave_beats_to_thread``, ``_heartbeat_snapshot`` and ``_end``.  The bodies of failure frames
are ``bulkhead._error_report``'s.  This module owns the job loop, ``Context`` and start-up.

The module imports only builtins and a few tiny modules (no ``socket``, ``json``, ``traceback``,
``threading``), because it starts once per worker.

Exit codes: 0 shutdown / EOF / control socket gone, 2 unusable environment (no control socket),
3 start failed (after ``START_FAILED``), 4 the supervisor sent an invalid frame.
"""

import faulthandler
import os
import sys
from _socket import socket as _raw_socket
from _thread import get_ident as _get_ident
from time import monotonic as _monotonic, perf_counter as _perf_counter, \
    process_time as _process_time

from . import __version__
# The failure reports live in ._error_report (bulkhead.zygote uses them as worker._error_body,
# worker._describe, worker._warn).  ._heartbeat is imported before any handler is: it takes the
# thread and sleep primitives before a handler's module can monkey-patch them.
from ._error_report import _describe, _error_body, _quote, _warn
from ._heartbeat import Heartbeat as _Heartbeat
from ._memfd import (Receiver as _Receiver, open_job as _open_job, send_file as _send_file,
                     send_result_fd, settle_job as _settle_job)
from ._protocol import (DEFAULT_MAX_PAYLOAD, HANDLER_ERROR, HEARTBEAT, HELLO, JOB_FD,
                        MAX_CONTROL_BODY, PAYLOAD_KEPT, PROTOCOL_VERSION, READY, RESULT_BYTES,
                        SHUTDOWN, START_FAILED, SUPERVISOR_TO_WORKER_FD, FrameDecoder,
                        ProtocolError, encode_header)
from ._result_frames import encode_result as _encode_result

try:
    from _socket import MSG_NOSIGNAL as _NO_SIGPIPE   # EPIPE even if a handler reset SIGPIPE
except ImportError:  # pragma: no cover - not Linux
    _NO_SIGPIPE = 0

__all__ = ["Context", "main", "send_hello", "load_handler_and_preload", "enable_stack_dumps",
           "control_socket", "EXIT_OK", "EXIT_ENVIRONMENT", "EXIT_START_FAILED",
           "EXIT_PROTOCOL_ERROR"]

EXIT_OK = 0
EXIT_ENVIRONMENT = 2
EXIT_START_FAILED = 3
EXIT_PROTOCOL_ERROR = 4

HEARTBEAT_INTERVAL = 0.1        # ctx.progress() sends at most one HEARTBEAT per this many seconds
_MIN_HEARTBEAT_INTERVAL = 0.001 # BULKHEAD_HEARTBEAT_INTERVAL below this (but > 0) is raised to it
_NEVER = float("inf")
_DEFAULT_DUMP_SIGNAL = 12       # SIGUSR2
_SMALL_SEND = 64 * 1024         # bodies up to this size are joined to their header (one syscall)

_MAIN_THREAD = _get_ident()


class Context(object):
    """What a handler gets besides its payload.

    ``job_id`` (int), ``pool`` and ``worker_id`` (str), ``preloaded`` (what the pool's preload
    function returned, else None), and ``progress(n=1)``.
    """

    __slots__ = ("job_id", "pool", "worker_id", "preloaded", "_send", "_count", "_last_beat",
                 "_active")

    def __init__(self, job_id, pool, worker_id, preloaded, send):
        self.job_id = job_id
        self.pool = pool
        self.worker_id = worker_id
        self.preloaded = preloaded
        self._send = send
        self._count = 0
        self._last_beat = _monotonic()
        self._active = True

    def progress(self, n=1):
        """Report that the job advanced by ``n`` units.

        The count goes to the supervisor in a HEARTBEAT at most every 100 ms (the first one
        100 ms into the job); other calls only add to the counter.  It is how the supervisor tells
        a slow job from a hung one.  Calls from threads other than the main thread are counted but
        send nothing themselves (only the main thread writes to the control socket).  When the
        worker's heartbeat thread runs (``BULKHEAD_HEARTBEAT_INTERVAL``), no call sends anything:
        the thread reports the count with every heartbeat.
        """
        self._count += n
        now = _monotonic()
        if now - self._last_beat >= HEARTBEAT_INTERVAL and self._active \
                and _get_ident() == _MAIN_THREAD:
            self._last_beat = now
            self._send(HEARTBEAT, self.job_id,
                       b'{"progress":%d,"cpu_seconds":%.6f}' % (self._count, _process_time()))

    @property
    def progress_count(self):
        """The count reported so far by ``progress`` for this job."""
        return self._count

    # -- for the worker and its heartbeat thread (not for handlers): they change this context's
    # state only through these, so the rules of ``progress`` stay in this class.

    def _leave_beats_to_thread(self):
        """The heartbeat thread reports this job: from now on ``progress`` only counts."""
        self._last_beat = _NEVER

    def _heartbeat_snapshot(self):
        """``(job_id, progress count)`` for a heartbeat frame, read in one place."""
        return self.job_id, self._count

    def _end(self):
        """The handler returned or raised: ``progress`` (say from a thread the handler left
        running) sends nothing for this job any more."""
        self._active = False

    def __repr__(self):
        return "Context(job_id=%d, pool=%r, worker_id=%r)" % (self.job_id, self.pool,
                                                             self.worker_id)


# -- small helpers ---------------------------------------------------------------------------


def _resolve(spec, what):
    """Import ``module:function`` (the function may be a dotted attribute path)."""
    module_name, sep, attr_path = spec.partition(":")
    module_name = module_name.strip()
    attr_path = attr_path.strip()
    if not sep or not module_name or not attr_path:
        raise ValueError("%s %r is not of the form 'module:function'" % (what, spec))
    __import__(module_name)
    target = sys.modules[module_name]
    for part in attr_path.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise AttributeError("%s %r: module %r has no attribute %r"
                                 % (what, spec, module_name, attr_path)) from None
    if not callable(target):
        raise TypeError("%s %r is not callable (it is %s)" % (what, spec, type(target).__name__))
    return target


def _env_interval(environ, name):
    """A non-negative finite float of seconds from ``name``; 0.0 (off) when unset or invalid."""
    value = environ.get(name, "").strip()
    if not value:
        return 0.0
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0.0 <= seconds < float("inf"):     # also refuses nan
        _warn("%s=%r is not a number of seconds >= 0; heartbeats are off" % (name, value))
        return 0.0
    if 0.0 < seconds < _MIN_HEARTBEAT_INTERVAL:
        seconds = _MIN_HEARTBEAT_INTERVAL
    return seconds


def _env_int(environ, name, default):
    value = environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        _warn("%s=%r is not an integer; using %r" % (name, value, default))
        return default


def _runtime():
    impl = sys.implementation
    name = {"cpython": "CPython", "pypy": "PyPy"}.get(impl.name, impl.name)
    return "%s %d.%d.%d" % (name, sys.version_info[0], sys.version_info[1], sys.version_info[2])


def _exit(code):
    """Leave now: run atexit callbacks, flush stdio, skip joining leftover non-daemon threads
    (a handler that leaked threads must not keep a retiring worker alive)."""
    try:
        import atexit
        atexit._run_exitfuncs()
    except BaseException:  # noqa: B036
        pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: B036
            pass
    os._exit(code)


# -- the worker ------------------------------------------------------------------------------


class _Worker(object):
    def __init__(self, sock, pool, worker_id, max_frame, heartbeat_interval=0.0,
                 memfd_threshold=0):
        self._sock = sock
        self._sendall = sock.sendall
        self._pool = pool
        self._worker_id = worker_id
        self._max_frame = max_frame
        self._memfd_at = memfd_threshold if memfd_threshold > 0 else _NEVER  # results' memfds
        # The supervisor may send jobs up to the pool's max_payload; accept at least the default.
        self._decoder = FrameDecoder(SUPERVISOR_TO_WORKER_FD,
                                     max_payload=max(max_frame, DEFAULT_MAX_PAYLOAD),
                                     max_control=MAX_CONTROL_BODY)
        self._receiver = _Receiver(sock, self._decoder)
        # The next frame from the supervisor, or None at EOF; the fds that came are queued.
        self.read_frame = self._receiver.read_frame
        self._handler = None
        self._preloaded = None
        # No thread yet: the first job starts it.
        self._heartbeat = _Heartbeat(sock, heartbeat_interval) if heartbeat_interval > 0 else None

    # -- I/O

    def send(self, frame_type, job_id, body=b""):
        length = len(body)
        try:
            if length <= _SMALL_SEND:
                self._sendall(encode_header(frame_type, job_id, length) + body, _NO_SIGPIPE)
            else:
                self._sendall(encode_header(frame_type, job_id, length), _NO_SIGPIPE)
                self._sendall(body, _NO_SIGPIPE)
        except (BrokenPipeError, ConnectionResetError):
            # The supervisor is gone; nobody will read a result.  Leave at once.
            _exit(EXIT_OK)

    # -- start-up

    def start(self, environ, loaded=None):
        """HELLO, import handler and preload (unless ``loaded``), run init, READY.

        ``loaded`` is ``(handler, preloaded)`` when a zygote did the importing and the preload
        before forking this process.  Returns False after START_FAILED.
        """
        send_hello(self.send)
        started = _perf_counter()
        try:
            if loaded is None:
                self._handler, self._preloaded = load_handler_and_preload(environ)
            else:
                self._handler, self._preloaded = loaded
            preloaded_at = _perf_counter()
            init_spec = environ.get("BULKHEAD_INIT", "").strip()
            if init_spec:
                initialised = _resolve(init_spec, "init")(self._preloaded)
                if initialised is not None:
                    self._preloaded = initialised
        except BaseException as exc:  # noqa: B036 - SystemExit from an import is a failure too
            self.send(START_FAILED, 0, _error_body(*_describe(exc)))
            return False
        now = _perf_counter()
        # payload_view: whether the handler takes its payload as a memoryview (a memfd is then
        # mapped, not copied); a bytes handler copies it anyway, so the daemon sends it inline
        # below memfd_result_threshold.
        self.send(READY, 0, b'{"preload_seconds":%.6f,"init_seconds":%.6f,"payload_view":%s}'
                  % (preloaded_at - started, now - preloaded_at,
                     b"true" if wants_memoryview(self._handler) else b"false"))
        return True

    # -- jobs

    def serve(self, on_first_answer=None):
        """Run jobs until SHUTDOWN or EOF; call ``on_first_answer()`` once the first job is
        answered (a zygote's worker tells the zygote so)."""
        handler = self._handler
        send = self.send
        as_view = wants_memoryview(handler)
        self._decoder.large_bodies_as_views = as_view
        pool, worker_id, preloaded = self._pool, self._worker_id, self._preloaded
        heartbeat = self._heartbeat     # None: heartbeats off, nothing to do per job
        job_id = None
        while True:
            if on_first_answer is not None and job_id is not None:
                on_first_answer()
                on_first_answer = None
            frame = self.read_frame()
            if frame is None or frame.type == SHUTDOWN:
                return
            # frame.type is JOB or JOB_FD: the decoder accepts nothing else.
            job_id = frame.job_id
            if frame.type == JOB_FD:    # job: a Job for a memoryview handler, else None
                job, payload = _open_job(frame, self._receiver.pop_fd(), as_view)
            else:
                job, payload = None, frame.body
            frame = None
            if as_view and not isinstance(payload, memoryview):
                payload = memoryview(payload)
            ctx = Context(job_id, pool, worker_id, preloaded, send)
            if heartbeat is not None:
                heartbeat.begin(ctx)
            try:
                result = handler(payload, ctx)
            except BaseException as exc:  # noqa: B036 - SystemExit/KeyboardInterrupt included
                ctx._end()
                if as_view and self._end_view(payload, job):
                    send(PAYLOAD_KEPT, job_id)
                payload = job = None
                body = _error_body(*_describe(exc, skip_frames=1))
                if heartbeat is not None:
                    heartbeat.end()     # no heartbeat for this job after this point
                send(HANDLER_ERROR, job_id, body)
                body = None
                continue
            ctx._end()
            if not as_view:
                payload = None      # not held while the result is sent
            elif job is not None and result is job.mapping:
                result = job.view   # the mapping itself: answered as its whole view
            frame_type, body = _encode_result(result)
            result = None
            if len(body) > self._max_frame:
                frame_type, body = HANDLER_ERROR, _error_body(
                    "ValueError",
                    "the handler's result is %d bytes, above the %d bytes this pool accepts "
                    "(max_payload)" % (len(body), self._max_frame), "")
            if heartbeat is not None:
                heartbeat.end()         # no heartbeat for this job after this point
            if job is not None:         # JOB_FD, memoryview: the mapping ends before the answer
                body, fd, kept = _settle_job(
                    job, frame_type, body, self._memfd_at if self._memfd_at < _NEVER else None)
                payload = job = None
                if kept:
                    send(PAYLOAD_KEPT, job_id)
                if fd >= 0:
                    _send_file(self._sock, job_id, fd, body, _exit)
                else:
                    send(frame_type, job_id, body)
                body = None
                continue
            # RESULT_BYTES_FD if large or the job's own memfd (free at any size), unless result
            # memfds are off; else inline, as when no memfd could be made.
            if not (frame_type == RESULT_BYTES and len(body) >= self._memfd_at
                    and send_result_fd(self._sock, job_id, body, _exit)):
                send(frame_type, job_id, body)
            body = None
            if as_view:
                self._end_view(payload, None)  # after the send: the result may be this view
            payload = None

    def _end_view(self, view, job):
        """The job is over: its payload view stops working (a handler that kept it gets a
        ValueError, never the next job's bytes).  If something still exports from it (a numpy
        array made with frombuffer), the buffer under it is left to that and not reused.  A
        JOB_FD job's mapping and fd end with it (``Job.close``): True when that mapping stays
        (the daemon must then not reuse its file: PAYLOAD_KEPT)."""
        if job is not None:
            return job.close()
        try:
            view.release()
        except BufferError:
            self._decoder.forget_kept_buffer()
        return False


def send_hello(send, role=None):
    """The first frame of a worker (or, with ``role="zygote"``, of a zygote)."""
    send(HELLO, 0, ('{"protocol":%d,"pid":%d,"sdk":"python","sdk_version":%s,"runtime":%s%s}'
                    % (PROTOCOL_VERSION, os.getpid(), _quote(__version__), _quote(_runtime()),
                       ',"role":%s' % _quote(role) if role else "")).encode("ascii"))


def wants_memoryview(handler):
    """True when the handler's payload parameter is annotated ``memoryview``
    (``def handle(payload: memoryview, ctx)``): it then gets the payload without a copy."""
    function = getattr(handler, "__func__", handler)          # a bound method's function
    code = getattr(function, "__code__", None)
    if code is None:
        function = getattr(handler, "__call__", None)         # a callable object
        function = getattr(function, "__func__", function)
        code = getattr(function, "__code__", None)
        bound = True
    else:
        bound = function is not handler
    if code is None or code.co_argcount <= (1 if bound else 0):
        return False
    first = code.co_varnames[1 if bound else 0]
    annotation = (getattr(function, "__annotations__", None) or {}).get(first)
    return annotation is memoryview or annotation == "memoryview"


def load_handler_and_preload(environ):
    """Import the handler, run the optional preload: ``(handler, preloaded)``.  Raises."""
    spec = environ.get("BULKHEAD_HANDLER", "").strip()
    if not spec:
        raise ValueError("BULKHEAD_HANDLER is not set (expected 'module:function')")
    handler = _resolve(spec, "handler")
    preloaded = None
    preload_spec = environ.get("BULKHEAD_PRELOAD", "").strip()
    if preload_spec:
        preloaded = _resolve(preload_spec, "preload")()
    return handler, preloaded


def _stacks_fd(environ):
    """The stacks fd if it is open, else stderr."""
    fd = _env_int(environ, "BULKHEAD_STACKS_FD", 4)
    try:
        os.fstat(fd)
        return fd
    except OSError:
        _warn("stacks fd %d is not open; writing stacks to stderr" % fd)
        return 2


def enable_stack_dumps(environ):
    """faulthandler on the stacks fd, for fatal signals and the supervisor's dump signal."""
    stacks_fd = _stacks_fd(environ)
    if stacks_fd != 2:
        os.set_inheritable(stacks_fd, False)   # a handler's children must not hold it open
    faulthandler.enable(file=stacks_fd, all_threads=True)
    dump_signal = _env_int(environ, "BULKHEAD_DUMP_SIGNAL", _DEFAULT_DUMP_SIGNAL)
    if dump_signal > 0:
        try:
            faulthandler.register(dump_signal, file=stacks_fd, all_threads=True, chain=False)
        except (ValueError, OSError, RuntimeError) as exc:
            _warn("cannot register dump signal %d: %s" % (dump_signal, exc))


def control_socket(environ):
    """The control socket the supervisor passed, or exit with EXIT_ENVIRONMENT."""
    control_fd = _env_int(environ, "BULKHEAD_CONTROL_FD", 3)
    try:
        sock = _raw_socket(fileno=control_fd)
        os.set_inheritable(control_fd, False)
    except OSError as exc:
        _warn("control fd %d is not a usable socket (%s); bulkhead.worker is started by the "
              "bulkhead supervisor" % (control_fd, exc))
        _exit(EXIT_ENVIRONMENT)
    return sock


def main(environ=None, loaded=None, on_first_answer=None):
    """Run a worker process to completion; never returns (exits with the codes listed above).

    ``loaded``: ``(handler, preloaded)`` in a process forked by the zygote (bulkhead.zygote);
    ``on_first_answer``: called once the first job's answer is sent.
    """
    if environ is None:
        environ = os.environ
    # Stacks first, so even a hang while importing the handler can be dumped.
    enable_stack_dumps(environ)
    sock = control_socket(environ)
    worker = _Worker(sock,
                     pool=environ.get("BULKHEAD_POOL", ""),
                     worker_id=environ.get("BULKHEAD_WORKER_ID", ""),
                     max_frame=_env_int(environ, "BULKHEAD_MAX_FRAME", DEFAULT_MAX_PAYLOAD),
                     heartbeat_interval=_env_interval(environ, "BULKHEAD_HEARTBEAT_INTERVAL"),
                     memfd_threshold=_env_int(environ, "BULKHEAD_MEMFD_RESULT_THRESHOLD",
                                              _env_int(environ, "BULKHEAD_MEMFD_THRESHOLD", 0)))
    if not worker.start(environ, loaded):
        _exit(EXIT_START_FAILED)
    try:
        worker.serve(on_first_answer)
    except ProtocolError as exc:
        _warn("protocol error from the supervisor: %s" % exc)
        _exit(EXIT_PROTOCOL_ERROR)
    _exit(EXIT_OK)


if __name__ == "__main__":
    main()
