"""Handlers for bench/promise_load.py (does bulkhead keep its promise under load?).

``chaos(payload)``: the payload's first word picks what the job does; the rest of the payload only
makes it unique (so a quarantined payload never matches another job):

- ``ok``: about 2 ms of CPU work, then returns the payload (echo);
- ``abort``: ``os.abort()`` (SIGABRT, as a glibc "double free" does);
- ``segv``: ``ctypes.string_at(0)`` (SIGSEGV);
- ``raise``: raises ``ValueError`` (a plain handler error);
- ``hang``: ``threading.Event().wait()``, blocks forever (sent with a short per-job timeout).

The same function runs in bulkhead's workers (``chaos(payload, ctx)``) and in the
ProcessPoolExecutor peer (``chaos(payload)``).
"""

import os
import threading
import time

KINDS = ("ok", "abort", "segv", "raise", "hang")
WORK_S = 0.002


def _work(seconds):
    """About `seconds` of CPU time in pure Python (a stand-in for real work)."""
    end = time.thread_time() + seconds
    x = 0
    while time.thread_time() < end:
        for i in range(200):
            x += i * i
    return x


def chaos(payload, ctx=None):
    kind = bytes(payload).split(b" ", 1)[0]
    if kind == b"ok":
        _work(WORK_S)
        return bytes(payload)
    if kind == b"abort":
        os.abort()
    if kind == b"segv":
        import ctypes
        ctypes.string_at(0)
    if kind == b"raise":
        raise ValueError("chaos: asked to raise (%r)" % bytes(payload[:40]))
    if kind == b"hang":
        threading.Event().wait()
    raise ValueError("chaos: unknown kind %r" % kind)
