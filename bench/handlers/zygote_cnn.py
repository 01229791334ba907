"""Handlers for bench/zygote.py: a small torch CNN for pools with ``mode = "zygote"`` or "spawn".

- ``preload()``: imports torch and builds the CNN on the CPU (3 conv layers, 16/32/64 channels,
  and 2 linear layers, on a 3x64x64 input; random weights from a fixed seed). It runs NO forward
  pass and does not call ``torch.set_num_threads``: a zygote that did either could hold OpenMP
  threads and would refuse to fork. Returns ``{"model": model, "blob": None}``.
- ``preload_big()``: the same, plus ``blob``, a 50,000,000-element float32 tensor from
  ``torch.rand`` (200 MB = 190.7 MiB of random values: every page written and not zero, so the
  kernel cannot share it as zero pages).
- ``init(preloaded)``: runs in every worker after the fork (zygote) or after preload (spawn):
  ``torch.set_num_threads(1)`` and one warm-up forward pass (the first one is the slow one); it
  stores how long that took in ``preloaded["init_s"]`` and returns None, so the worker keeps
  ``preloaded`` (its own copy of the dict).
- ``handle(payload, ctx)``: ``b"crash"`` calls ``os.abort()`` (SIGABRT, the worker dies).
  Otherwise: a ``b"gc"`` prefix runs ``gc.collect()`` first, then ``b"sleep:S"`` sleeps S seconds
  (the memory part uses them to put one job on each worker), then one forward pass on the payload
  (resized to 3x64x64 bytes).  Returns a small dict: the worker's pid, the arg-max class, the
  first logit, one element of the blob if there is one, and the worker's ``init_s``.
- ``peer_init()`` / ``peer_init_forked()`` / ``peer_call(payload)``: the same for the
  ProcessPoolExecutor peer: ``peer_init`` builds it in the executor's worker (the initializer),
  ``peer_init_forked`` only runs ``init`` on what the parent preloaded before forking
  (``peer_set_loaded``).
"""

import os
import time

SIDE = 64
CLASSES = 10
PAYLOAD_BYTES = 3 * SIDE * SIDE
BLOB_FLOATS = 50 * 1000 * 1000


def build_model():
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),     # 16x32x32
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),    # 32x16x16
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),    # 64x8x8
        nn.Flatten(), nn.Linear(64 * 8 * 8, 128), nn.ReLU(), nn.Linear(128, CLASSES),
    ).eval()


def forward(model, payload):
    import torch

    raw = bytes(payload)
    if len(raw) != PAYLOAD_BYTES:
        raw = (raw * (PAYLOAD_BYTES // max(1, len(raw)) + 1))[:PAYLOAD_BYTES] if raw else \
            bytes(PAYLOAD_BYTES)
    x = torch.frombuffer(bytearray(raw), dtype=torch.uint8).to(torch.float32)
    x = (x / 255.0).reshape(1, 3, SIDE, SIDE)
    with torch.no_grad():
        return model(x)[0]


# -- bulkhead pool entry points ------------------------------------------------------------------

def preload():
    return {"model": build_model(), "blob": None}


def preload_big():
    import torch

    loaded = preload()
    gen = torch.Generator().manual_seed(1)
    loaded["blob"] = torch.rand(BLOB_FLOATS, dtype=torch.float32, generator=gen)
    return loaded


def init(preloaded):
    import torch

    t0 = time.perf_counter()
    torch.set_num_threads(1)
    forward(preloaded["model"], bytes(PAYLOAD_BYTES))
    preloaded["init_s"] = time.perf_counter() - t0     # this process's copy of the dict
    return None


def preload_warm():
    """preload plus the warm-up pass: fork-safe here because OMP_NUM_THREADS=1 (torch then makes
    no intra-op pool, so the zygote stays single-threaded)."""
    loaded = preload()
    forward(loaded["model"], bytes(PAYLOAD_BYTES))
    return loaded


def init_light(preloaded):
    import torch

    t0 = time.perf_counter()
    torch.set_num_threads(1)
    preloaded["init_s"] = time.perf_counter() - t0
    return None


def _extras(payload):
    """b"crash": abort; a b"gc" prefix: gc.collect(); then b"sleep:S": sleep S seconds."""
    if payload == b"crash":
        os.abort()
    if payload.startswith(b"gc"):
        import gc
        gc.collect()
        payload = payload[2:]
    if payload.startswith(b"sleep:"):
        time.sleep(float(payload[6:]))


def _answer(preloaded, payload):
    logits = forward(preloaded["model"], payload)
    blob = preloaded.get("blob")
    return {"pid": os.getpid(), "class": int(logits.argmax()), "logit0": float(logits[0]),
            "blob_at_12345": None if blob is None else float(blob[12345]),
            "init_s": preloaded.get("init_s")}


def handle(payload, ctx):
    _extras(payload)
    return _answer(ctx.preloaded, payload)


# -- ProcessPoolExecutor peer ----------------------------------------------------------------------

_LOADED = None


def peer_init():
    """Initializer of a fresh executor worker: build the model, then what `init` does."""
    global _LOADED
    _LOADED = preload()
    init(_LOADED)


def peer_set_loaded(loaded):
    """In the parent, before the executor forks: what its workers inherit (preload's result)."""
    global _LOADED
    _LOADED = loaded


def peer_init_forked():
    """Initializer when the parent ran preload before forking: only what `init` does."""
    init(_LOADED)


def peer_call(payload):
    _extras(payload)
    return _answer(_LOADED, payload)
