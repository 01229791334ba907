"""A demo model for bulkhead: a tiny CNN built in code (no downloaded weights).

``preload`` runs once per worker and builds the model (PyTorch if importable, else a NumPy
stand-in); the handler gets it as ``ctx.preloaded``. Each payload is read as an image-ish tensor:
its bytes, repeated or cut to 3x32x32, standardised. The result is a JSON dict with the top
class and the inference latency.

A few payloads ask the handler to misbehave the way real ML libraries do:

    b"double-free"  free() the same pointer twice: glibc aborts the process (SIGABRT)
    b"segfault"     read address 0 (SIGSEGV, nothing on stderr)
    b"hang"         a Python deadlock, like a library mutex taken twice (0% CPU, forever)
    b"raise"        an ordinary exception in the handler (the caller's bug, not retried)
"""

import ctypes
import os
import threading
import time

CLASSES = ["person", "cat", "dog", "car", "bicycle", "tree", "house", "boat", "bird", "plane"]
SIDE = 32


def _build_torch():
    import torch
    from torch import nn

    torch.set_num_threads(1)
    torch.manual_seed(0)
    features = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 8 * 8, 64),
    ).eval()
    head = nn.Linear(64, len(CLASSES), bias=False)
    with torch.no_grad():
        # No trained weights: the head is a nearest-prototype readout over one random
        # "prototype image" per class, so different inputs land in different classes.
        prototypes = features(torch.randn(len(CLASSES), 3, SIDE, SIDE))
        head.weight.copy_(nn.functional.normalize(prototypes, dim=1) * 8)

    def predict(image):  # image: float32 numpy array (3, 32, 32), zero mean, unit variance
        with torch.no_grad():
            embedding = nn.functional.normalize(features(torch.from_numpy(image).unsqueeze(0)))
            probs = torch.softmax(head(embedding)[0], dim=0)
            score, index = torch.max(probs, dim=0)
        return int(index), float(score)

    return predict, "torch %s" % torch.__version__


def _build_numpy():
    import numpy as np

    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((3 * SIDE * SIDE, 64)).astype(np.float32) / 50
    w2 = rng.standard_normal((64, len(CLASSES))).astype(np.float32) / 8

    def predict(image):
        hidden = np.maximum(image.reshape(-1) @ w1, 0)
        logits = hidden @ w2
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        index = int(probs.argmax())
        return index, float(probs[index])

    return predict, "numpy %s (torch not importable)" % np.__version__


def preload():
    t0 = time.perf_counter()
    try:
        predict, backend = _build_torch()
    except ImportError:
        predict, backend = _build_numpy()
    predict(_to_image(b"warm-up"))  # the first forward pass is the slow one
    return {"predict": predict, "backend": backend, "load_s": time.perf_counter() - t0}


def _to_image(payload):
    import numpy as np

    raw = np.frombuffer(payload or b"\0", dtype=np.uint8)
    need = 3 * SIDE * SIDE
    raw = np.resize(raw, need).astype(np.float32)  # repeat or cut the bytes to 3x32x32
    return ((raw - raw.mean()) / (raw.std() + 1e-6)).reshape(3, SIDE, SIDE)


# -- misbehaviour on request ----------------------------------------------------------------


def _double_free():
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    p = libc.malloc(64)
    libc.free(p)
    libc.free(p)  # glibc: "free(): double free detected in tcache 2", abort()


def _segfault():
    ctypes.string_at(0)


def _hang():
    lock = threading.Lock()
    lock.acquire()
    lock.acquire()  # deadlock: never returns


def _raise():
    raise ValueError("cannot decode image: the payload asked for an error")


MISBEHAVIOUR = {b"double-free": _double_free, b"segfault": _segfault, b"hang": _hang,
                b"raise": _raise}


def handle(payload, ctx):
    fault = MISBEHAVIOUR.get(payload.strip())
    if fault is not None:
        fault()
    model = ctx.preloaded
    t0 = time.perf_counter()
    index, score = model["predict"](_to_image(payload))
    latency_ms = (time.perf_counter() - t0) * 1000
    return {
        "label": CLASSES[index],
        "class_index": index,
        "score": round(score, 4),
        "latency_ms": round(latency_ms, 3),
        "backend": model["backend"],
        "worker": ctx.worker_id,
        "pid": os.getpid(),
        "input_bytes": len(payload),
    }
