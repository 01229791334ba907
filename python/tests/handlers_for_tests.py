"""Handlers and preload functions that the worker tests name in BULKHEAD_HANDLER/PRELOAD."""

import array
import os
import sys
import time


class CustomError(Exception):
    pass


NOT_CALLABLE = 42


def echo(payload, ctx):
    return payload


def upper_text(payload, ctx):
    return payload.decode("utf-8").upper()


def describe(payload, ctx):
    return {"len": len(payload), "job_id": ctx.job_id, "pool": ctx.pool,
            "worker_id": ctx.worker_id, "preloaded": ctx.preloaded,
            "payload_type": type(payload).__name__}


def as_list(payload, ctx):
    return [1, "two", None, {"three": 3.5}, "\u00e9\u4e2d"]


def as_bytearray(payload, ctx):
    return bytearray(payload) + b"!"


def as_memoryview(payload, ctx):
    return memoryview(array.array("i", [1, 2, 3]))   # itemsize 4: 12 bytes


def as_strided_memoryview(payload, ctx):
    return memoryview(b"abcdef")[::2]                # not contiguous


def make_bytes(payload, ctx):
    return b"x" * int(payload)


def raise_value_error(payload, ctx):
    raise ValueError("bad input: %s" % payload.decode())


def raise_custom(payload, ctx):
    _helper_that_raises()


def _helper_that_raises():
    raise CustomError("from a helper")


def raise_huge(payload, ctx):
    raise ValueError("x" * (5 << 20))


def raise_huge_emoji(payload, ctx):
    raise ValueError("\U0001F600" * (1 << 20))


def raise_surrogate(payload, ctx):
    raise ValueError("bad name \udc80 here")


def sys_exit(payload, ctx):
    sys.exit(7)


def keyboard_interrupt(payload, ctx):
    raise KeyboardInterrupt


def return_none(payload, ctx):
    return None


def return_set(payload, ctx):
    return {1, 2}


def return_nan(payload, ctx):
    return {"x": float("nan")}


def return_lone_surrogate(payload, ctx):
    return "abc\udc80"


def progress_for(payload, ctx):
    """Call ctx.progress() in a loop for float(payload) seconds; return the count."""
    end = time.monotonic() + float(payload)
    count = 0
    while time.monotonic() < end:
        ctx.progress()
        count += 1
    return {"count": count, "ctx_count": ctx.progress_count}


def progress_from_thread(payload, ctx):
    import threading
    thread = threading.Thread(target=lambda: [ctx.progress() for _ in range(10)])
    thread.start()
    thread.join()
    return {"ctx_count": ctx.progress_count}


def announce_then_block(payload, ctx):
    """Say so on stdout, then block until killed (the test dumps our stack meanwhile)."""
    _blocked_in_here()


def _blocked_in_here():
    sys.stdout.write("started\n")
    sys.stdout.flush()
    time.sleep(600)


def segfault(payload, ctx):
    import ctypes
    return ctypes.string_at(0)


def fd_flags(payload, ctx):
    return {"3": os.get_inheritable(3), "4": os.get_inheritable(4)}


def preload_value():
    return {"model": "loaded"}


def preload_raises():
    raise RuntimeError("no GPU here")


def preload_exits():
    sys.exit(9)


# -- heartbeats (BULKHEAD_HEARTBEAT_INTERVAL) ------------------------------------------------


def sleep_for(payload, ctx):
    time.sleep(float(payload))
    return b"slept"


def deadlock(payload, ctx):
    """Acquire a lock twice: blocked (GIL released, no CPU) until the second acquire times out
    after float(payload) seconds."""
    import threading
    lock = threading.Lock()
    lock.acquire()
    got = lock.acquire(timeout=float(payload))
    return {"second_acquire": got}


def gil_busy(payload, ctx):
    """Sleep 0.3 s (heartbeats flow), then sum(range(int(payload))): one C call that holds the GIL
    throughout.  Returns the CPU and monotonic clocks around that call."""
    time.sleep(0.3)
    cpu_before, t_before = time.process_time(), time.monotonic()
    sum(range(int(payload)))
    cpu_after, t_after = time.process_time(), time.monotonic()
    return {"cpu_before": cpu_before, "cpu_after": cpu_after,
            "t_before": t_before, "t_after": t_after}


def sleep_or_spin(payload, ctx):
    """``sleep:SECONDS`` (GIL released) or ``spin:SECONDS`` (GIL held by bytecode, so the
    heartbeat thread runs only at switch intervals).  Echoes the payload."""
    how, _, seconds = payload.decode("ascii").partition(":")
    seconds = float(seconds)
    if how == "sleep":
        time.sleep(seconds)
    else:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            pass
    return payload


def threads(payload, ctx):
    """The worker's OS threads (from /proc) and what ``threading`` knows of."""
    import threading
    return {"tasks": len(os.listdir("/proc/self/task")),
            "active_count": threading.active_count(),
            "names": sorted(t.name for t in threading.enumerate())}


def tiny_switch_interval():
    """Preload: switch the GIL between threads as often as possible, so races between the
    heartbeat thread and the main thread get every chance to show."""
    sys.setswitchinterval(1e-6)


def init_adds(preloaded):
    return dict(preloaded or {}, init="ran")


def init_returns_none(preloaded):
    return None


def init_raises(preloaded):
    raise RuntimeError("cannot move to cuda:0")


# -- payloads as memoryview (the annotation opts in) -----------------------------------------

_KEPT = []


def view_echo(payload: memoryview, ctx):
    """Returns the payload view itself: the worker sends it before the view ends."""
    return payload


def view_describe(payload: "memoryview", ctx):
    return {"type": type(payload).__name__, "len": len(payload), "readonly": payload.readonly}


def view_keep_then_touch(payload: memoryview, ctx):
    """Job 1 keeps its view; job 2 shows what touching it then does."""
    if not _KEPT:
        _KEPT.append(payload)
        return b"kept"
    try:
        return bytes(_KEPT[0][:4])
    except ValueError as exc:
        return ("ValueError: %s" % exc).encode()


_EXPORTS = []


def view_export_then_check(payload: memoryview, ctx):
    """Job 1 keeps an export of its view (an iterator holding the buffer); job 2 checks that
    job 1's bytes were not overwritten by its own."""
    import struct
    if not _EXPORTS:
        _EXPORTS.append((struct.iter_unpack("B", payload), bytes(payload[:8])))
        return b"exported"
    iterator, first = _EXPORTS[0]
    return bytes(next(iterator) + tuple(first[1:2])) if len(payload) else b""


class Handler(object):
    def __call__(self, payload: memoryview, ctx):
        return type(payload).__name__


def unannotated(payload, ctx):
    return payload
