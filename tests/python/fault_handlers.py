"""Fault-injection handlers for the integration suite.

Each handler reproduces one real worker fault in a few lines (ctypes for native faults), so the
tests can check that the real daemon turns the real fault into the documented outcome and
evidence. Handlers are looked up by the pool config as ``fault_handlers:NAME``; the directory of
this file is put on the pool's ``python_path`` by conftest.

Handlers that need a scratch directory (pid files, markers, release files) read it from the
``BULKHEAD_TEST_DIR`` variable, which conftest sets in every pool's ``env``.
"""

import ctypes
import functools
import hashlib
import json
import mmap
import os
import signal
import subprocess
import sys
import threading
import time

_STEP = 0.01  # poll interval of handlers that wait for a file the test creates


def _scratch(name):
    return os.path.join(os.environ["BULKHEAD_TEST_DIR"], name)


def _segfault():
    ctypes.string_at(0)  # reads address 0: SIGSEGV, stderr empty, as a real segfault


def _libc():
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.restype = None
    libc.free.argtypes = [ctypes.c_void_p]
    return libc


def _ignore_sigterm(signum, frame):
    # A Python-level handler that swallows SIGTERM, like many ML frameworks install: the
    # supervisor must follow SIGTERM with SIGKILL.
    try:
        os.write(2, b"fault_handlers: SIGTERM received and ignored\n")
    except OSError:
        pass


def install_sigterm_handler():
    """preload: install the SIGTERM-ignoring handler (preload runs on the main thread)."""
    signal.signal(signal.SIGTERM, _ignore_sigterm)
    return "sigterm-handler-installed"


def _ensure_sigterm_handler():
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _ignore_sigterm)
    # Otherwise rely on the preload having installed it; report which one is in place.
    return signal.getsignal(signal.SIGTERM) is _ignore_sigterm


def _ok_bypass(handler):
    """The payload ``ok`` skips the fault and answers ``ok pid=PID``: the tests use it to check
    that the worker replacing a dead one serves jobs of the same pool."""
    @functools.wraps(handler)
    def wrapper(payload, ctx):
        if payload == b"ok":
            return ("ok pid=%d" % os.getpid()).encode()
        return handler(payload, ctx)
    return wrapper


# -- well-behaved handlers ------------------------------------------------------------------


def echo(payload, ctx):
    return payload


def echo_text(payload, ctx):
    return payload.decode("utf-8")


def echo_dict(payload, ctx):
    return {"payload": payload.decode("utf-8", "replace"), "len": len(payload)}


def echo_list(payload, ctx):
    return [1, "two", {"three": 3}]


def whoami(payload, ctx):
    """Returns where it ran: tests use it to learn which worker/pid served a job."""
    return {
        "pid": os.getpid(),
        "pgid": os.getpgid(0),
        "worker_id": getattr(ctx, "worker_id", None),
        "pool": getattr(ctx, "pool", None),
        "job_id": getattr(ctx, "job_id", None),
        "preloaded": getattr(ctx, "preloaded", None),
        "payload": payload.decode("utf-8", "replace"),
    }


def slow(payload, ctx):
    """``sleep:SECONDS`` sleeps that long; ``wait:NAME`` waits (at most 30 s) for the scratch file
    NAME to exist, so a test can hold a worker busy exactly as long as it needs to."""
    text = payload.decode()
    if text.startswith("sleep:"):
        time.sleep(float(text[len("sleep:"):]))
        return "slept"
    if text.startswith("wait:"):
        path = _scratch(text[len("wait:"):])
        deadline = time.monotonic() + 30
        while not os.path.exists(path):
            if time.monotonic() > deadline:
                raise TimeoutError("release file %s never appeared" % path)
            time.sleep(_STEP)
        return "released"
    return payload


@_ok_bypass
def stdout_flood(payload, ctx):
    """Prints ~8 MiB to stdout (a chatty library), then returns; ``crash`` segfaults instead."""
    line = "chatty library output " + "x" * 80 + "\n"
    for i in range(80_000):
        sys.stdout.write("%d %s" % (i, line))
    sys.stdout.write("STDOUT-LAST-LINE\n")
    sys.stdout.flush()
    if payload == b"crash":
        _segfault()
    return {"printed_lines": 80_000}


# -- faults ---------------------------------------------------------------------------------


@_ok_bypass
def double_free(payload, ctx):
    """free() one malloc'd pointer twice: glibc aborts, SIGABRT, stderr
    ``free(): double free detected in tcache 2``."""
    libc = _libc()
    p = libc.malloc(64)
    libc.free(p)
    libc.free(p)
    return b"unreachable"


@_ok_bypass
def segfault(payload, ctx):
    """Null-pointer read: SIGSEGV with empty stderr."""
    _segfault()
    return b"unreachable"


def raise_value_error(payload, ctx):
    raise ValueError("bad input: %r" % payload[:32])


@_ok_bypass
def deadlock_with_sigterm_handler(payload, ctx):
    """A Python deadlock (``Lock`` acquired twice) in a process that ignores SIGTERM: 0% CPU
    forever, SIGTERM runs the handler but the process stays hung."""
    _ensure_sigterm_handler()
    lock = threading.Lock()
    lock.acquire()
    lock.acquire()  # never returns
    return b"unreachable"


@_ok_bypass
def native_spin_holding_gil(payload, ctx):
    """An infinite loop in machine code (``jmp $``) called through PYFUNCTYPE, so the GIL stays
    held: no Python code runs again in this process (heartbeat thread and SIGTERM handler
    included); only SIGKILL ends it."""
    _ensure_sigterm_handler()
    page = mmap.mmap(-1, mmap.PAGESIZE,
                     prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(b"\xeb\xfe")  # x86-64: jmp to itself
    addr = ctypes.addressof(ctypes.c_char.from_buffer(page))
    spin = ctypes.PYFUNCTYPE(None)(addr)
    spin()  # never returns
    return b"unreachable"


@_ok_bypass
def stderr_flood_then_segfault(payload, ctx):
    """Writes 50 MiB to stderr, a marker line, then segfaults. Undrained, this blocks forever in
    write() with 64 KiB in the pipe and never reaches the crash."""
    chunk = b"E" * 1023 + b"\n"
    block = chunk * 1024  # 1 MiB
    for _ in range(50):
        view = memoryview(block)
        while view:
            n = os.write(2, view)
            view = view[n:]
    os.write(2, b"END-OF-FLOOD\n")
    _segfault()
    return b"unreachable"


def _spawn_grandchild(tag):
    # Inherits fds 1 and 2 (the supervisor's stdout/stderr pipes): while it lives, those pipes
    # never reach EOF. close_fds (the default) closes the control and stacks fds.
    child = subprocess.Popen(["sleep", "1000"])
    with open(_scratch("grandchild-%s.pid" % tag), "w") as f:
        f.write(str(child.pid))
    return child


@_ok_bypass
def grandchild_then_hang(payload, ctx):
    _spawn_grandchild(payload.decode() or "hang")
    os.write(2, b"grandchild started, now hanging\n")
    threading.Event().wait()
    return b"unreachable"


@_ok_bypass
def grandchild_then_segfault(payload, ctx):
    _spawn_grandchild(payload.decode() or "segv")
    os.write(2, b"grandchild started, now crashing\n")
    _segfault()
    return b"unreachable"


@_ok_bypass
def garbage_frame(payload, ctx):
    """Writes bytes that are not a frame (wrong magic) to the control socket, then waits to be
    killed. The supervisor must kill this worker only, with cause ``protocol_error: ...``."""
    fd = int(os.environ.get("BULKHEAD_CONTROL_FD", "3"))
    os.write(fd, b"NOT A FRAME \x00\xff\xfe garbage garbage garbage")
    threading.Event().wait(60)
    return b"should have been killed"


@_ok_bypass
def oversized_frame_header(payload, ctx):
    """A syntactically valid header announcing a result body far above any limit."""
    fd = int(os.environ.get("BULKHEAD_CONTROL_FD", "3"))
    job_id = int(getattr(ctx, "job_id", 0) or 0)
    header = b"BK" + bytes([1, 0x10]) + (0xFFFFFFF0).to_bytes(4, "little") \
        + job_id.to_bytes(8, "little")
    os.write(fd, header)
    threading.Event().wait(60)
    return b"should have been killed"


def by_payload(payload, ctx):
    """Poison input: ``crash`` segfaults, anything else is echoed."""
    if payload == b"crash":
        _segfault()
    return payload


def gate(payload, ctx):
    """For prefetch tests: ``wait:NAME`` answers once the scratch file NAME exists, ``crash:NAME``
    segfaults then; anything else answers at once. Every answer says which process ran it."""
    text = payload.decode()
    verb, _, name = text.partition(":")
    if verb in ("wait", "crash"):
        path = _scratch(name)
        deadline = time.monotonic() + 30
        while not os.path.exists(path):
            if time.monotonic() > deadline:
                raise TimeoutError("release file %s never appeared" % path)
            time.sleep(_STEP)
        if verb == "crash":
            _segfault()
    return {"pid": os.getpid(), "job": str(ctx.job_id), "payload": text}


def kill_supervisor(payload, ctx):
    """A job that takes its whole node down: SIGKILLs the daemon that started this worker (its
    parent), then exits; ``echo:...`` is echoed instead."""
    if payload.startswith(b"echo:"):
        return payload
    os.kill(os.getppid(), signal.SIGKILL)
    time.sleep(1)
    os._exit(1)


def crash_once(payload, ctx):
    """Crashes the first time it sees a given payload, succeeds afterwards. The marker lives in
    the scratch dir, so the outcome is deterministic: attempt 1 crashes, attempt 2 (on a fresh
    worker) succeeds."""
    key = hashlib.sha1(payload).hexdigest()[:16]
    marker = _scratch("crash-once-" + key)
    if not os.path.exists(marker):
        with open(marker, "w") as f:
            f.write(str(os.getpid()))
        os.write(2, b"crash_once: first sight of this payload, crashing\n")
        _segfault()
    with open(marker) as f:
        crashed_pid = int(f.read())
    return {"pid": os.getpid(), "crashed_pid": crashed_pid}


@_ok_bypass
def exit_midjob(payload, ctx):
    """sys.exit-like exit with a code, no signal (os._exit skips cleanup)."""
    os.write(2, b"exit_midjob: leaving with code 7\n")
    os._exit(7)


def preload_value():
    """preload: the returned value reaches handlers as ctx.preloaded."""
    return {"model": "tiny", "loaded_by": os.getpid()}


def show_preloaded(payload, ctx):
    return {"preloaded": ctx.preloaded, "pid": os.getpid()}


def env_dump(payload, ctx):
    keys = payload.decode().split(",") if payload else []
    return {k: os.environ.get(k) for k in keys}


def result_json_text(payload, ctx):
    return json.dumps({"as": "text"})


def raise_on_preload():
    """preload: fails, so no worker of the pool can start."""
    raise RuntimeError("preload exploded: weights file missing")


def crash_unless_flag(payload, ctx):
    """Segfaults until the file named by BULKHEAD_TEST_FLAG exists: a pool that gets healthy."""
    if not os.path.exists(os.environ["BULKHEAD_TEST_FLAG"]):
        ctypes.string_at(0)
    return payload


def report_environment(payload, ctx):
    """Returns the worker's environment and, when torch is importable, its thread count."""
    out = {"env": dict(os.environ), "pid": os.getpid()}
    if payload == b"torch":
        import torch
        out["torch_threads"] = torch.get_num_threads()
    return out


def count_runs(payload, ctx):
    """Echoes after a short pause, appending the payload to a file per execution, so a test can
    count how many times each job really ran (at-least-once after a crash)."""
    time.sleep(float(os.environ.get("BULKHEAD_TEST_SLEEP", "0.002")))
    with open(os.environ["BULKHEAD_TEST_RUNS"], "ab") as f:
        f.write(payload + b"\n")
    return payload


_chaos_keep = []


def chaos(payload, ctx):
    """One handler, many faults, chosen by the payload's first word."""
    kind = payload.split(b":", 1)[0]
    if kind == b"abort":
        os.abort()
    if kind == b"segv":
        ctypes.string_at(0)
    if kind == b"hang":
        threading.Event().wait()
    if kind == b"leak":
        _chaos_keep.append(bytearray(2 << 20))
    if kind == b"raise":
        raise ValueError("chaos says no")
    return payload
