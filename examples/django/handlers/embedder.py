"""The model behind the Django example: a text embedder, loaded once per worker.

``preload`` runs once in each bulkhead worker before it takes jobs and "loads the model": a
seeded random projection of hashed character trigrams (NumPy; nothing to download).  The
worker keeps it, so every request finds it warm.  ``handle`` embeds the posted text.

Text that starts with ``segfault`` makes the embedder do what a native tokenizer with a bad
bounds check does: read memory it does not own.  The process dies of SIGSEGV; bulkhead reports
the ``crashed`` outcome with the signal and what the worker wrote to stderr before it died, and
starts a fresh worker.
"""

import ctypes
import os
import sys
import time
import zlib

import numpy as np

DIM = 64
BUCKETS = 4096
MODEL_LOADS = 0          # how many times this process built the model: 1 when warm


def preload():
    global MODEL_LOADS
    MODEL_LOADS += 1
    rng = np.random.default_rng(2024)
    return {"projection": rng.standard_normal((BUCKETS, DIM)).astype(np.float32),
            "loaded_at": time.time()}


def _trigram_counts(text):
    counts = np.zeros(BUCKETS, dtype=np.float32)
    padded = "  %s  " % text.lower()
    for i in range(len(padded) - 2):
        counts[zlib.crc32(padded[i:i + 3].encode()) % BUCKETS] += 1.0
    return counts


def handle(payload, ctx):
    text = bytes(payload).decode("utf-8", "replace")
    if text.startswith("segfault"):
        sys.stderr.write("embedder: tokenizer read past the end of its vocabulary table\n")
        sys.stderr.flush()
        ctypes.string_at(0)          # SIGSEGV: a native read of address 0
    vector = _trigram_counts(text) @ ctx.preloaded["projection"]
    vector /= np.linalg.norm(vector) + 1e-6
    return {"embedding": [round(float(x), 5) for x in vector], "dim": DIM,
            "worker_pid": os.getpid(), "model_loads": MODEL_LOADS,
            "model_loaded_at": ctx.preloaded["loaded_at"]}
