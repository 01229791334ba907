"""The model behind the FastAPI example: a small image classifier that can crash its process.

``preload`` runs once per worker, before the worker takes jobs: it "loads the weights" (a
seeded random projection and one prototype per class, built with NumPy, so nothing is
downloaded) and the worker keeps them for every job it serves.  ``handle`` classifies the
uploaded bytes.

An upload whose bytes start with ``CRASH`` makes the model do what a buggy native library does:
free the same buffer twice.  glibc notices, prints ``free(): double free detected in tcache 2``
and aborts the process (SIGABRT).  No Python ``try`` can catch that; bulkhead reports it as the
``crashed`` outcome with the signal and the stderr tail, and starts a fresh worker.
"""

import ctypes
import os
import time

import numpy as np

LABELS = ["cat", "dog", "car", "tree", "boat", "bird"]
FEATURES = 256


def preload():
    rng = np.random.default_rng(7)
    projection = rng.standard_normal((FEATURES, 32)).astype(np.float32)
    prototypes = rng.standard_normal((len(LABELS), 32)).astype(np.float32)
    return {"projection": projection, "prototypes": prototypes, "loaded_at": time.time(),
            "pid": os.getpid()}


def _double_free():
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    buffer = libc.malloc(64)
    libc.free(buffer)
    libc.free(buffer)     # glibc: "free(): double free detected in tcache 2", then abort()


def handle(payload, ctx):
    if bytes(payload[:5]) == b"CRASH":
        _double_free()
    model = ctx.preloaded
    histogram = np.bincount(np.frombuffer(bytes(payload) or b"\0", dtype=np.uint8),
                            minlength=FEATURES).astype(np.float32)
    embedding = histogram @ model["projection"]
    scores = model["prototypes"] @ (embedding / (np.linalg.norm(embedding) + 1e-6))
    best = int(scores.argmax())
    return {"label": LABELS[best], "score": round(float(scores[best]), 4),
            "worker_pid": os.getpid(), "model_loaded_at": model["loaded_at"],
            "bytes": len(payload)}
