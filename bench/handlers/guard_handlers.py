"""Handlers for bench/resource_guard.py (sampling cost, recycle latency, large payloads).

- ``echo``: returns the payload.
- ``torch_preload``: ``import torch`` in the worker before it reports ready (about 1,700
  mappings and ~240 MB per worker); ``echo`` still serves jobs.
"""


def echo(payload, ctx=None):
    return payload


def torch_preload():
    import torch

    torch.set_num_threads(1)
    return None
