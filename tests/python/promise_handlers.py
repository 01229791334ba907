"""Handlers for tests/python/test_promise.py: slow starts, pids exhaustion that hangs, sys.path."""

import os
import sys
import threading
import time


def slow_preload():
    """preload: a cold start (a model loading) of BULKHEAD_TEST_PRELOAD_S seconds (default 3)."""
    time.sleep(float(os.environ.get("BULKHEAD_TEST_PRELOAD_S", "3")))
    return "warm"


def echo(payload, ctx):
    return payload


def nap(payload, ctx):
    """Sleeps the payload's seconds (``0.05``), then answers ``done``."""
    time.sleep(float(payload.decode() or "0"))
    return b"done"


def sys_path(payload, ctx):
    return {"sys_path": sys.path, "cwd": os.getcwd(), "json_file": __import__("json").__file__}


def threads_until_refused_then_hang(payload, ctx):
    """Fault "hang from exhaustion": a thread pool asks for more threads than pids.max allows,
    swallows the refusal (as pthreadpool does) and waits forever for threads that never came."""
    started = []
    stop = threading.Event()
    try:
        for _ in range(256):
            t = threading.Thread(target=stop.wait, daemon=True)
            t.start()
            started.append(t)
    except RuntimeError:
        pass  # "can't start new thread": the library goes on as if it had them
    threading.Event().wait()
