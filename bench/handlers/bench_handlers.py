"""Handlers and the model shared by every system in bench/e2e_peers.py.

The same functions run everywhere: bulkhead loads this module in its workers (``python_path``
points here), ProcessPoolExecutor / multiprocessing.Pool / loky call them from their workers, and
the subprocess-per-job peer imports it in a fresh interpreter.

- ``echo``: returns the payload (100 bytes in the bench).
- ``echo_view``: the same, taking the payload as a ``memoryview`` (no copy in the worker).
- ``build_model``: a small CNN built in code (no downloaded weights), 1 intra-op thread, eval mode,
  one warm-up forward pass.  ``infer(model, payload)``: payload = 3x64x64 uint8 bytes, returns the
  10 logits as float32 bytes.
- ``cnn_preload`` / ``cnn``: the bulkhead pool's preload and handler (model in ``ctx.preloaded``).
- ``cnn_timed`` / ``cnn_global_timed``: ``cnn`` / ``cnn_global`` with the handler's own time
  appended to the logits (``timed_infer``), so that the caller can tell the time spent outside
  the handler from the round trip.
"""

SIDE = 64
CLASSES = 10
PAYLOAD_BYTES = 3 * SIDE * SIDE


def echo(payload, ctx=None):
    return payload


def echo_view(payload: memoryview, ctx=None):
    return payload


def build_model():
    import torch
    from torch import nn

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),     # 16x32x32
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),    # 32x16x16
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),    # 64x8x8
        nn.Flatten(), nn.Linear(64 * 8 * 8, 128), nn.ReLU(), nn.Linear(128, CLASSES),
    ).eval()
    infer(model, bytes(PAYLOAD_BYTES))  # the first forward pass is the slow one
    return model


def infer(model, payload):
    import numpy as np
    import torch

    raw = np.frombuffer(payload, dtype=np.uint8)
    if raw.size != PAYLOAD_BYTES:
        raw = np.resize(raw, PAYLOAD_BYTES)
    x = torch.from_numpy(raw.astype(np.float32) / 255.0).reshape(1, 3, SIDE, SIDE)
    with torch.no_grad():
        logits = model(x)[0]
    return logits.numpy().astype(np.float32).tobytes()


# -- bulkhead pool entry points ---------------------------------------------------------------

def cnn_preload():
    return build_model()


def cnn(payload, ctx):
    return infer(ctx.preloaded, payload)


# -- ProcessPoolExecutor / multiprocessing.Pool / loky -----------------------------------------

_MODEL = None


def init_model():
    global _MODEL
    _MODEL = build_model()


def cnn_global(payload):
    return infer(_MODEL, payload)


# -- the same, timed inside the worker (bench/e2e_peers.py: time outside the handler) ------------

TIMED_TRAILER = 8   # bytes: a little-endian float64, the seconds infer() took


def timed_infer(model, payload):
    """infer()'s logits followed by the seconds infer() took in this process (perf_counter): what
    a round trip adds to the handler is the round trip minus that."""
    import struct
    import time
    t = time.perf_counter()
    out = infer(model, payload)
    return out + struct.pack("<d", time.perf_counter() - t)


def cnn_timed(payload, ctx):
    return timed_infer(ctx.preloaded, payload)


def cnn_global_timed(payload):
    return timed_infer(_MODEL, payload)


def worker_pid(_=None):
    import os
    return os.getpid()


def sleep50(payload, ctx=None):
    """bench/cluster.py's job: 50 ms of waiting (no CPU), so throughput counts workers, not
    cores."""
    import time
    time.sleep(0.05)
    return payload


if __name__ == "__main__":
    # Subprocess-per-job peer: import torch, build the model, run one inference, print the result
    # (timings and peak RSS go to stderr for the bench's report).
    import importlib
    import resource
    import sys
    import time
    t0 = time.perf_counter()
    importlib.import_module("torch")
    t1 = time.perf_counter()
    model = build_model()
    t2 = time.perf_counter()
    sys.stdout.buffer.write(infer(model, sys.stdin.buffer.read()))
    sys.stdout.flush()
    sys.stderr.write("BENCH import_torch_s=%.3f build_s=%.3f maxrss_kb=%d\n" % (
        t1 - t0, t2 - t1, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
