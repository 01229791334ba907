"""bulkhead: run crash-prone ML code in warm, isolated, supervised worker processes.

This package holds the Python side: the HTTP clients (``Client``, blocking, with ``JobHandle``
for async jobs; ``AsyncClient``, asyncio, with ``AsyncJobHandle``), one exception class per job
outcome, and the worker SDK the supervisor starts (``python -m bulkhead.worker``).

Importing ``bulkhead`` is cheap on purpose (every worker process does it): the clients and their
``socket`` / ``asyncio`` imports load on first use of ``bulkhead.Client`` (or
``JobHandle``) and ``bulkhead.AsyncClient`` (or ``AsyncJobHandle``); ``bulkhead.Executor`` (a
``concurrent.futures`` executor over a private supervisor, docs/executor.md) on first use too.
``bulkhead.celery`` (task bodies of Celery in bulkhead workers, docs/integrations.md) and
``bulkhead.joblib`` are imported by name, never by ``import bulkhead``.
"""

__version__ = "0.1.0"

from .errors import (  # noqa: E402 - __version__ first: the worker reads it from here
    OUTCOME_EXCEPTIONS, ApiError, BadRequest, BulkheadError, Cancelled, ClientTimeout, HandlerError,
    JobFailed, JobTimedOut, OomKilled, Overloaded, PayloadTooLarge, Poisoned, ResourceExhausted,
    ResponseTooLarge, TransportError, Unavailable, UnknownJob, UnknownPool, WorkerCrashed,
    WorkerHung)

__all__ = [
    "__version__", "Client", "JobHandle", "AsyncClient", "AsyncJobHandle", "Executor",
    "ExecutorStartError",
    "BulkheadError", "JobFailed", "HandlerError", "WorkerCrashed", "JobTimedOut", "WorkerHung",
    "OomKilled", "ResourceExhausted", "Poisoned", "Overloaded", "Unavailable", "Cancelled",
    "ApiError", "UnknownPool", "UnknownJob", "BadRequest", "PayloadTooLarge", "TransportError",
    "ClientTimeout", "ResponseTooLarge", "OUTCOME_EXCEPTIONS",
]


_LAZY = {"Client": "client", "JobHandle": "client",
         "AsyncClient": "aio", "AsyncJobHandle": "aio",
         "Executor": "executor", "ExecutorStartError": "executor"}


def __getattr__(name):
    # PEP 562: load the clients (socket, asyncio) only when they are asked for.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError("module %r has no attribute %r" % (__name__, name))
    if module == "client":
        from . import client as loaded
    elif module == "executor":
        from . import executor as loaded
    else:
        from . import aio as loaded
    value = getattr(loaded, name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
