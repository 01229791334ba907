"""Handlers for the zygote-mode tests (test_zygote.py): preloads that are safe or unsafe to fork,
and handlers that report what a forked worker looks like from the inside."""

import os
import threading
import time

BLOB_BYTES = 64 << 20


def preload_blob():
    # Non-zero bytes, so every page is really there (and shared after the fork).
    return {"blob": b"\x5a" * BLOB_BYTES, "zygote_pid": os.getpid()}


def _smaps(field):
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def describe(payload, ctx):
    if payload == b"abort":
        os.abort()
    if payload == b"allocate":
        hog = []
        while True:
            hog.append(b"\x01" * (8 << 20))
    preloaded = ctx.preloaded or {}
    blob = preloaded.get("blob") if isinstance(preloaded, dict) else None
    with open("/proc/self/cgroup") as f:
        cgroups = f.read()
    import random
    return {"pid": os.getpid(), "ppid": os.getppid(), "pgid": os.getpgid(0),
            "zygote_pid": preloaded.get("zygote_pid") if isinstance(preloaded, dict) else None,
            "blob_id": id(blob) if blob is not None else None,
            "pss_kb": _smaps("Pss"), "rss_kb": _smaps("Rss"),
            "cgroups": cgroups, "random": random.random(),
            "env": {k: v for k, v in os.environ.items()
                    if k.startswith(("BULKHEAD_WORKER_ID", "CUDA_VISIBLE_DEVICES", "POOL_VAR",
                                     "OMP_NUM_THREADS"))},
            "init": preloaded.get("init") if isinstance(preloaded, dict) else None}


def mark_init(preloaded):
    preloaded = dict(preloaded or {})
    preloaded["init"] = {"pid": os.getpid(), "threads": len(os.listdir("/proc/self/task"))}
    return preloaded


def init_slow(preloaded):
    time.sleep(6)
    return preloaded


def preload_torch_pool():
    """A torch pool made fork-unsafe, on a CPU: an OpenMP pool exists before the fork."""
    import torch
    torch.set_num_threads(2)
    (torch.ones(64, 64) @ torch.ones(64, 64)).sum()
    return "model"


def preload_torch_only():
    import torch  # noqa: F401 - imported once in the zygote, shared by every worker
    return "model"


def preload_torch_numpy():
    import numpy  # noqa: F401 - their global generators are what the zygote must reseed
    import torch  # noqa: F401
    return "model"


def random_streams(payload, ctx):
    """The next number of every global generator a forked worker inherited from the zygote."""
    import random

    import numpy
    import torch
    out = {"pid": os.getpid(), "random": random.random(),
           "numpy": float(numpy.random.random()), "torch": float(torch.rand(1).item())}
    time.sleep(0.2)             # so that two jobs sent at once run on two workers
    return out


def init_torch_threads(model):
    import torch
    torch.set_num_threads(2)
    (torch.ones(64, 64) @ torch.ones(64, 64)).sum()
    return model + "+init"


def torch_job(payload, ctx):
    import torch
    value = (torch.ones(128, 128) @ torch.ones(128, 128)).sum().item()
    return {"preloaded": ctx.preloaded, "threads": torch.get_num_threads(), "value": value}


_keep = []


def preload_background_thread():
    stop = threading.Event()
    t = threading.Thread(target=stop.wait, name="downloader", daemon=True)
    t.start()
    _keep.append(stop)
    return None


def preload_raises():
    raise ValueError("weights file missing: /models/x.pt")


def preload_hangs():
    time.sleep(3600)
