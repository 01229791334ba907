"""Tasks for tests/python/test_executor.py and test_joblib_backend.py, run in bulkhead workers
through bulkhead.Executor (importable: the Executor passes the caller's sys.path on)."""

import mmap
import os
import signal
import threading
import time


def square(x):
    return x * x


def add(x, y=0):
    return x + y


def whoami(_=None):
    return os.getpid()


def raise_value_error(message):
    raise ValueError(message)


class Unpicklable(Exception):
    def __init__(self, message):
        super().__init__(message)
        self.lock = threading.Lock()   # a lock cannot be pickled


def raise_unpicklable(message):
    raise Unpicklable(message)


def abort():
    os.abort()


def segfault():
    os.kill(os.getpid(), signal.SIGSEGV)


def wait_for_file(path, started=None, limit=120.0):
    """Touches ``started`` (if given), then waits until ``path`` exists (at most ``limit`` s)."""
    if started:
        open(started, "w").close()
    deadline = time.monotonic() + limit
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError("%s never appeared" % path)
        time.sleep(0.01)
    return "released"


def sleep(seconds):
    time.sleep(seconds)
    return seconds


def allocate(megabytes):
    blocks = []
    for _ in range(megabytes):
        blocks.append(bytearray(1 << 20))   # touched: bytearray zero-fills
    return len(blocks)


# -- leaky folds in miniature: every fold leaks maps, threads and memory --------------------------

_LEAKED = []     # what earlier folds left behind in this process
_STOP = threading.Event()


def leaky_fold(fold, maps=1000, threads=20, megabytes=50, transient=10):
    """A fold that leaks ``maps`` anonymous mappings, ``threads`` live threads and ``megabytes``
    of memory (kept in a module-level list, like TF/CUDA state that clear_session() does not
    free), and starts ``transient`` threads of its own work (joined). Under a pids limit the
    third fold in one process cannot start its threads."""
    for _ in range(maps):
        _LEAKED.append(mmap.mmap(-1, 4096))          # MAP_SHARED anonymous: one map each
    for _ in range(threads):
        t = threading.Thread(target=_STOP.wait, daemon=True)
        t.start()
        _LEAKED.append(t)
    _LEAKED.append(bytearray(megabytes << 20))
    work = [threading.Thread(target=time.sleep, args=(0.05,)) for _ in range(transient)]
    for t in work:
        t.start()
    for t in work:
        t.join()
    return {"fold": fold, "pid": os.getpid(), "threads": threading.active_count()}
