"""Resource-leak and hang handlers for test_resources.py (the resource guard).

Each handler reproduces a resource fault seen in ML libraries (thread leak, threads under a pids
limit, memory-map leak, RSS leak, OOM kill, deadlock, slow but healthy job, start-up hang) in a few
lines.
Pools name them as ``resource_handlers:NAME``; conftest puts this directory on ``python_path``.

Leaks are kept in module globals, so they live as long as the worker process: only a recycle
(a fresh process) gives them back.
"""

import mmap
import os
import threading
import time

MiB = 1024 * 1024

_threads = []   # leaked threads (thread_leak_one)
_maps = []      # leaked mmap objects (maps_leak, fold)
_blocks = []    # leaked memory blocks (rss_leak, fold)
_forever = threading.Event()  # never set: what leaked threads wait on


def _status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return line.split()[1]
    return None


def _count_maps():
    with open("/proc/self/maps", "rb") as f:
        return sum(1 for _ in f)


def _touch(nbytes):
    """nbytes of resident memory (every page written), kept until the process ends."""
    block = bytearray(nbytes)
    for off in range(0, nbytes, mmap.PAGESIZE):
        block[off] = 1
    return block


# -- plain jobs ---------------------------------------------------------------------------------


def ok(payload, ctx):
    """A normal job: answers its payload and the serving pid."""
    return {"pid": os.getpid(), "payload": payload.decode("utf-8", "replace")}


# -- leaks --------------------------------------------------------------------------------------


def _work(payload):
    """A payload ``work:SECONDS`` makes the job take that long (its own work, not a wait on the
    test): real leaking jobs take time, and the supervisor samples at most every 100 ms."""
    if payload.startswith(b"work:"):
        time.sleep(float(payload[len(b"work:"):]))


def thread_leak_one(payload, ctx):
    """Fault "thread leak": one thread per job that waits forever."""
    _work(payload)
    t = threading.Thread(target=_forever.wait, name="leaked-%d" % len(_threads), daemon=True)
    t.start()
    _threads.append(t)
    return {"pid": os.getpid(), "threads": int(_status("Threads")), "leaked": len(_threads)}


def thread_leak_unbounded(payload, ctx):
    """Fault "threads under a pids limit": start threads until the OS refuses one. Under
    pids.max = 40 this raises ``RuntimeError: can't start new thread`` after ~38 threads."""
    while True:
        t = threading.Thread(target=_forever.wait, daemon=True)
        t.start()  # raises RuntimeError("can't start new thread") once pids.max is reached
        _threads.append(t)
        if len(_threads) > 100000:  # never reached under a pids limit; a bound all the same
            return {"leaked": len(_threads)}


def maps_leak(payload, ctx):
    """Fault "memory-map leak": 1000 small shared mappings per job, kept (MAP_SHARED
    anonymous mappings are never merged: exactly +1000 maps)."""
    _work(payload)
    n = 1000
    for _ in range(n):
        _maps.append(mmap.mmap(-1, 4096))
    return {"pid": os.getpid(), "maps": _count_maps(), "leaked": len(_maps)}


def rss_leak(payload, ctx):
    """Fault "RSS leak": keep 10 MiB (resident) per job."""
    _work(payload)
    _blocks.append(_touch(10 * MiB))
    return {"pid": os.getpid(), "rss_kb": int(_status("VmRSS")), "leaked": len(_blocks)}


def fold(payload, ctx):
    """A leaky fold in miniature: one cross-validation fold that leaves ~700 maps and 30 MiB of RSS
    behind in the process, like TF/CUDA did."""
    for _ in range(700):
        _maps.append(mmap.mmap(-1, 4096))
    _blocks.append(_touch(30 * MiB))
    return {"pid": os.getpid(), "maps": _count_maps(), "rss_kb": int(_status("VmRSS")),
            "fold": payload.decode("utf-8", "replace")}


def allocate_forever(payload, ctx):
    """Fault "OOM kill": allocate (and touch) 8 MiB blocks without bound."""
    while True:
        _blocks.append(b"\x01" * (8 * MiB))


# -- hangs and slow-but-healthy jobs ------------------------------------------------------------


def deadlock(payload, ctx):
    """Fault "deadlock": a threading.Lock acquired twice. 0% CPU, the same stack forever;
    the heartbeat thread keeps beating (the GIL is free)."""
    lock = threading.Lock()
    lock.acquire()
    lock.acquire()  # never returns
    return b"unreachable"


def slow_with_progress(payload, ctx):
    """Slow but healthy: ``seconds`` (default 6) of sleeping, reporting progress every 0.2 s."""
    seconds = float(payload or b"6")
    deadline = time.monotonic() + seconds
    steps = 0
    while time.monotonic() < deadline:
        ctx.progress()
        steps += 1
        time.sleep(0.2)
    return {"steps": steps}


def cpu_burn(payload, ctx):
    """Pure-Python CPU work for ``seconds`` (default 5) without a single ctx.progress() call:
    the process's CPU time grows, which is progress."""
    seconds = float(payload or b"5")
    deadline = time.monotonic() + seconds
    x = 0
    while time.monotonic() < deadline:
        for i in range(10000):
            x = (x * 31 + i) % 1000003
    return {"x": x}


def preload_hang():
    """preload that never returns (the "hang from exhaustion" fault, at start-up)."""
    threading.Event().wait()


def cuda_out_of_memory(payload, ctx):
    """Raises PyTorch's own ``torch.cuda.OutOfMemoryError`` with the message a CUDA allocator
    gives when the card is full (the class exists on a CPU-only build; this machine has no GPU
    to fill). The pid in the message tells the attempts apart."""
    import torch

    raise torch.cuda.OutOfMemoryError(
        "CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 79.11 GiB total capacity; "
        "70.02 GiB already allocated; worker pid %d)" % os.getpid())


_children = []


def start_child(payload, ctx):
    """Starts a ``sleep`` in the worker's process group (as a library's helper process would be)
    and returns its pid; it lives as long as the worker."""
    import subprocess

    child = subprocess.Popen(["sleep", "1000"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    _children.append(child)
    return {"pid": child.pid, "worker_pid": os.getpid()}
