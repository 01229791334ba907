"""The bulkhead zygote: ``python -m bulkhead.zygote``, started by the supervisor for a pool with
``mode = "zygote"`` (docs/protocol.md, "Zygote").

It is started like a worker (control socket on fd 3, stacks pipe on fd 4, the pool's built
environment), imports the handler and runs the pool's ``preload`` once, says ``READY``, and then
hands out one worker per ``FORK`` frame.  A FORK carries the new worker's control socket, stdout,
stderr and stacks pipe (and the cgroup files it must join) as SCM_RIGHTS; the worker makes them
its fds 1-4 and runs the normal worker loop (bulkhead.worker) with the handler and the preloaded
object it inherited, after the pool's ``init``.

Each worker is forked twice (zygote -> short-lived middle process -> worker) so that it is
reparented to the supervisor, a child subreaper: the supervisor reaps it, holds a pidfd for it and
signals its process group exactly as for a spawned worker, and the zygote has no children to wait
for.  The double fork of a process holding a model costs tens of milliseconds, so it is done ahead
of time: the zygote always keeps one *spare*, forked, reparented, reseeded and waiting on a
private socket.
A FORK hands the fds to the spare, answers ``FORKED {"pid"}`` at once (the pid already belongs to
a child of the supervisor) and forks the next spare once the new worker has answered its first
job (it closes its end of the private socket then), or died, or after _REPLENISH_WAIT, or at once
if another FORK comes first: a fork of the whole zygote and the new spare's reseed would
otherwise compete for the CPU with the replacement and the job a client is waiting for (after a
crash, its retry or the next job in the queue).  A spare whose zygote dies sees EOF and exits.

Before every fork it checks that forking is safe: one thread only (a child forked while an
OpenMP/MKL/thread pool exists hangs in its first parallel region: a lock a pool thread held is
never released in the child), no CUDA context, no open GPU device.  Otherwise it answers
``FORK_REFUSED`` with what it found and what to move from ``preload`` into ``init``; the
supervisor fails the pool with that message or falls back to spawning (``zygote_fallback``).

Exit codes as bulkhead.worker: 0 SHUTDOWN/EOF, 2 no control socket, 3 START_FAILED, 4 protocol
error from the supervisor.
"""

import ctypes
import fcntl
import gc
import json
import os
import resource
import select
import sys
import time
from _socket import (AF_UNIX, CMSG_SPACE, MSG_CTRUNC, SCM_RIGHTS, SHUT_WR, SOCK_STREAM,
                     SOL_SOCKET, socketpair)
from array import array

from . import worker as _worker
from ._protocol import (FORK_REFUSED, FORKED, MAX_CONTROL_BODY, READY, SHUTDOWN, START_FAILED,
                        SUPERVISOR_TO_ZYGOTE, FrameDecoder, ProtocolError, encode_header)

__all__ = ["main", "fork_hazards"]

_MAX_FDS_PER_READ = 64
_THREADS_SETTLE = 0.5           # extra threads get this long to end before a fork is refused
_REPARENT_WAIT = 5.0            # a forked worker waits this long to be handed to the supervisor
_REPLENISH_WAIT = 0.5           # the next spare: after the new worker's first answer, or this
_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15
_SIGKILL = 9


def _thread_names():
    names = []
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return names
    main_tid = str(os.getpid())
    for tid in tasks:
        if tid == main_tid:
            continue
        try:
            with open("/proc/self/task/%s/comm" % tid) as f:
                names.append(f.read().strip())
        except OSError:
            names.append("(ended)")
    return names


def _gpu_device_fds():
    found = []
    try:
        entries = os.listdir("/proc/self/fd")
    except OSError:
        return found
    for fd in entries:
        try:
            target = os.readlink("/proc/self/fd/" + fd)
        except OSError:
            continue
        if target.startswith(("/dev/nvidia", "/dev/dri/", "/dev/kfd")):
            found.append(target)
    return sorted(set(found))


def fork_hazards(settle=_THREADS_SETTLE):
    """What makes forking this process unsafe now: a list of sentences (empty: safe)."""
    hazards = []
    threads = _thread_names()
    deadline = time.monotonic() + settle
    while threads and time.monotonic() < deadline:
        time.sleep(0.01)        # a thread that is about to end (a download, a warm-up) may end
        threads = _thread_names()
    if threads:
        hazards.append(
            "the zygote has %d thread%s besides the main one (%s): a child forked now inherits "
            "their locks but not the threads, and hangs in its first parallel region (an "
            "OpenMP/MKL intra-op pool after torch.set_num_threads(N > 1) plus a first op, "
            "OMP_NUM_THREADS > 1 plus a first op, a thread pool, a background thread). Move "
            "whatever starts them (setting thread counts, warm-up inference, starting threads) "
            "from `preload` into `init`, which runs in every worker after the fork"
            % (len(threads), "" if len(threads) == 1 else "s", ", ".join(sorted(threads))))
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            cuda_ready = bool(torch.cuda.is_initialized())
        except Exception:  # noqa: BLE001 - a broken torch build is not our question here
            cuda_ready = False
        if cuda_ready:
            hazards.append(
                "CUDA is initialised in the zygote (torch.cuda.is_initialized() is True): a "
                "forked child cannot use the parent's CUDA context. Keep the model on the CPU in "
                "`preload` and move it to the GPU (.to('cuda'), .cuda(), any CUDA call) in `init`")
    devices = _gpu_device_fds()
    if devices:
        hazards.append(
            "the zygote has GPU devices open (%s): a GPU runtime was initialised before the fork. "
            "Initialise it in `init` instead" % ", ".join(devices))
    return hazards


class _Zygote(object):
    def __init__(self, sock, environ):
        self._sock = sock
        self._environ = environ
        self._decoder = FrameDecoder(SUPERVISOR_TO_ZYGOTE, max_payload=MAX_CONTROL_BODY,
                                     max_control=MAX_CONTROL_BODY)
        self._fds = []              # received with SCM_RIGHTS, not yet taken by a FORK
        self._supervisor = os.getppid()
        self._loaded = None
        self._spare = None          # (pid, socket): forked ahead, waiting for a worker's fds
        self._starting = None       # (deadline, socket) of the last worker handed out
        self._why_no_spare = ("OSError", "no spare worker", False)
        libc = ctypes.CDLL(None, use_errno=True)
        self._prctl = libc.prctl

    def send(self, frame_type, request_id, body=b""):
        try:
            self._sock.sendall(encode_header(frame_type, request_id, len(body)) + body)
        except OSError:
            _worker._exit(_worker.EXIT_OK)      # the supervisor is gone

    def read_frame(self):
        """The next frame, or None at EOF; the fds that came with it are in self._fds."""
        decoder = self._decoder
        while True:
            frame = decoder.next()
            if frame is not None or decoder.eof:
                return frame
            data = _recv_with_fds(self._sock, self._fds)
            if data:
                decoder.feed(data)
            else:
                decoder.feed_eof()

    def start(self):
        _worker.send_hello(self.send, role="zygote")
        try:
            self._loaded = _worker.load_handler_and_preload(self._environ)
        except BaseException as exc:  # noqa: B036 - SystemExit from an import is a failure too
            self.send(START_FAILED, 0, _worker._error_body(*_worker._describe(exc)))
            return False
        # What preload built lives as long as the workers: keep the cyclic GC of every worker
        # from walking (and so copying, page by page) the objects they share with us.
        gc.collect()
        gc.freeze()
        self._replenish()
        self.send(READY, 0, b"{}")
        return True

    def serve(self):
        while True:
            self._replenish_when_idle()
            frame = self.read_frame()
            if frame is None or frame.type == SHUTDOWN:
                return
            # FORK: the decoder accepts nothing else.
            try:
                request = json.loads(frame.body)
                count = int(request["fds"])
                if not isinstance(request["env"], dict) or count < 4 or count > len(self._fds):
                    raise ValueError("needs an env object and at least 4 received fds")
                int(request.get("rlimit_as") or 0)
            except (ValueError, KeyError, TypeError) as exc:
                raise ProtocolError("bad FORK body: %s" % exc) from None
            fds, self._fds = self._fds[:count], self._fds[count:]
            self._hand_out(frame.job_id, fds, bytes(frame.body))

    def _refuse(self, request_id, type_name, message, permanent):
        body = json.dumps({"type": type_name, "message": message, "permanent": permanent})
        self.send(FORK_REFUSED, request_id, body.encode("utf-8"))

    def _hand_out(self, request_id, fds, body):
        """Give the spare the worker's fds and the FORK body, answer FORKED, make a new spare.

        The spare was forked (twice) ahead of time and already belongs to the supervisor, so the
        answer does not wait for a fork: a crashed worker's replacement starts at once.  The next
        spare is forked later (_replenish_when_idle), or here when a FORK finds none."""
        self._forget_starting()
        try:
            for _ in range(2):              # a spare that died meanwhile is replaced once
                if self._spare is None:
                    self._replenish()
                if self._spare is None:
                    self._refuse(request_id, *self._why_no_spare)
                    return
                pid, channel = self._spare
                self._spare = None
                try:
                    channel.sendmsg([body], [(SOL_SOCKET, SCM_RIGHTS, array("i", fds).tobytes())])
                    channel.shutdown(SHUT_WR)   # the spare reads the request up to this EOF
                except OSError:
                    channel.close()
                    continue                # it is gone; the supervisor reaps it
                # Its end closes when it has answered its first job (or when it dies).
                self._starting = (time.monotonic() + _REPLENISH_WAIT, channel)
                self.send(FORKED, request_id, b'{"pid":%d}' % pid)
                break
            else:
                self._refuse(request_id, "OSError", "forked workers died before taking a job",
                             False)
                return
        finally:
            for fd in fds:
                os.close(fd)

    def _replenish_when_idle(self):
        """Fork the next spare once the last worker handed out has answered its first job or died
        (EOF on its socket), after _REPLENISH_WAIT at the latest; return early, without one, when
        the supervisor sends something first (a FORK then forks the spare it needs)."""
        if self._starting is None:
            return
        deadline, channel = self._starting
        decoder = self._decoder
        if not (decoder.buffered or decoder.eof):     # else a frame is already on its way
            wait = max(0.0, deadline - time.monotonic())
            if self._sock in select.select([self._sock, channel], [], [], wait)[0]:
                return
        self._forget_starting()
        if self._spare is None:
            self._replenish()

    def _forget_starting(self):
        if self._starting is not None:
            self._starting[1].close()
            self._starting = None

    def _replenish(self):
        """Fork the next spare: a worker-to-be, reparented to the supervisor, waiting for fds."""
        hazards = fork_hazards()
        if hazards:
            self._why_no_spare = ("bulkhead.ForkUnsafe",
                                  "the zygote refuses to fork: " + "; ".join(hazards), True)
            return
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()          # or the child writes our buffered bytes again
            except Exception:  # noqa: BLE001
                pass
        ours, theirs = socketpair(AF_UNIX, SOCK_STREAM)
        pid_read, pid_write = os.pipe()
        try:
            middle = os.fork()
        except OSError as exc:
            for end in (ours, theirs):
                end.close()
            os.close(pid_read)
            os.close(pid_write)
            self._why_no_spare = ("OSError", "fork: %s" % exc, False)
            return
        if middle == 0:
            status = 1
            try:
                os.close(pid_read)
                ours.close()
                child = os.fork()
                if child == 0:
                    os.close(pid_write)
                    self._spare_main(theirs)      # never returns
                # Also from this side, so the group exists before the supervisor hears the pid.
                try:
                    os.setpgid(child, child)
                except OSError:
                    pass
                os.write(pid_write, b"%d" % child)
                status = 0
            finally:
                os._exit(status)
        theirs.close()
        os.close(pid_write)
        os.waitpid(middle, 0)
        with os.fdopen(pid_read, "rb") as f:
            text = f.read()
        if not text:
            ours.close()
            self._why_no_spare = ("OSError", "fork of a worker failed in the middle process",
                                  False)
            return
        self._spare = (int(text), ours)

    # -- in a spare, then the worker it becomes

    def _spare_main(self, channel):
        try:
            os.setpgid(0, 0)
            sock, self._sock = self._sock, None
            sock.detach()
            os.close(3)                 # the zygote's control socket is not ours
            for fd in self._fds:        # fds of other FORKs the zygote had received
                os.close(fd)
            self._fds = []
            self._adopt_parent_death()
            # Everything that does not depend on the FORK request is done now, while nobody
            # waits for this process: a replacement then starts straight from HELLO.
            _reseed()
            request, fds = bytearray(), []
            while True:
                data = _recv_with_fds(channel, fds)
                if not data:
                    break
                request += data
            if not request:
                os._exit(_worker.EXIT_OK)   # the zygote went away before it needed us
            request = json.loads(bytes(request))
            self._become_worker(fds, request["env"], int(request.get("rlimit_as") or 0))
        except BaseException as exc:  # noqa: B036
            _worker._warn("forked worker setup failed: %s: %s" % (type(exc).__name__, exc))
            os._exit(_worker.EXIT_ENVIRONMENT)
        # Closing the channel after the first answer tells the zygote to fork the next spare.
        _worker.main(os.environ, loaded=self._loaded, on_first_answer=channel.close)

    def _become_worker(self, fds, env, rlimit_as):
        # Received fds take the lowest free numbers, which may be targets: move them all above
        # the range first, so no dup2 clobbers a source it has not copied yet.
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 16) for fd in fds]
        for fd in fds:
            os.close(fd)
        control, stdout, stderr, stacks = high[:4]
        for source, target in ((control, 3), (stdout, 1), (stderr, 2), (stacks, 4)):
            os.dup2(source, target)     # worker.main makes 3 and 4 non-inheritable
        # Into the worker's cgroup(s) before anything of the pool's runs here.
        for fd in high[4:]:
            os.write(fd, b"0")
        for fd in high:
            os.close(fd)
        os.environ.clear()
        os.environ.update(env)
        # ps and top show "pool-N" rather than the zygote's name (the command line stays).
        name = env.get("BULKHEAD_WORKER_ID", "").encode("utf-8", "replace")[:15]
        if name:
            self._prctl(_PR_SET_NAME, ctypes.c_char_p(name), 0, 0, 0)
        if rlimit_as > 0:
            resource.setrlimit(resource.RLIMIT_AS, (rlimit_as, rlimit_as))

    def _adopt_parent_death(self):
        """Wait to be reparented to the supervisor, then die with it (PR_SET_PDEATHSIG)."""
        first = os.getppid()
        deadline = time.monotonic() + _REPARENT_WAIT
        parent = first
        while parent == first and parent != self._supervisor:
            if time.monotonic() > deadline:
                os._exit(_worker.EXIT_ENVIRONMENT)
            time.sleep(0.0002)
            parent = os.getppid()
        if self._prctl(_PR_SET_PDEATHSIG, _SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
        if os.getppid() != self._supervisor:
            os._exit(_worker.EXIT_OK)   # the supervisor died before prctl took effect


def _recv_with_fds(sock, fds):
    """One recvmsg: returns the bytes (b"" at EOF), appends the fds that came with them."""
    data, ancillary, flags, _ = sock.recvmsg(65536, CMSG_SPACE(_MAX_FDS_PER_READ * 4))
    for level, kind, payload in ancillary:
        if level == SOL_SOCKET and kind == SCM_RIGHTS:
            usable = len(payload) - len(payload) % 4
            fds.extend(memoryview(payload[:usable]).cast("i").tolist())
    if flags & MSG_CTRUNC:
        raise ProtocolError("file descriptors were cut off (MSG_CTRUNC)")
    return data


def _reseed():
    """Forked workers would share the zygote's random streams: give each its own, as a spawned
    worker has (Python's random module reseeds itself at fork).

    Only the generators that exist, and only what a module already imported: numpy's global
    RandomState, torch's CPU generator, and torch's GPU generators only on a CUDA/ROCm build.
    Not ``torch.seed()``: it also queues a lazy CUDA seeding, even on a CPU-only build, and
    each queued call captures the caller's stack (traceback.format_stack reads source files):
    10-35 ms in a fresh fork.  Runs in the spare, before a FORK needs it (_spare_main)."""
    random = sys.modules.get("numpy.random")
    if random is not None:
        try:
            random.seed()
        except Exception:  # noqa: BLE001 - a broken numpy is the handler's problem, not ours
            pass
    torch = sys.modules.get("torch")
    if torch is None:
        return
    try:
        seed = torch.default_generator.seed()
        version = getattr(torch, "version", None)
        if getattr(version, "cuda", None) or getattr(version, "hip", None):
            # CUDA is never initialised in a zygote (fork_hazards refuses), so this is queued
            # and applied when the worker first uses CUDA, as torch.seed() would.
            torch.cuda.manual_seed_all(seed)
    except Exception:  # noqa: BLE001
        pass


def main(environ=None):
    if environ is None:
        environ = os.environ
    _worker.enable_stack_dumps(environ)
    sock = _worker.control_socket(environ)
    zygote = _Zygote(sock, environ)
    if not zygote.start():
        _worker._exit(_worker.EXIT_START_FAILED)
    try:
        zygote.serve()
    except ProtocolError as exc:
        _worker._warn("protocol error from the supervisor: %s" % exc)
        _worker._exit(_worker.EXIT_PROTOCOL_ERROR)
    _worker._exit(_worker.EXIT_OK)


if __name__ == "__main__":
    main()
