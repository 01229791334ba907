"""bulkhead: run crash-prone ML code in warm, isolated, supervised worker processes.

This package holds the Python side: the HTTP client (``Client``), one exception class per job
outcome, and the worker SDK the supervisor starts (``python -m bulkhead.worker``).

Importing ``bulkhead`` is cheap on purpose (every worker process does it): the client and its
``http.client`` import load on first use of ``bulkhead.Client``.
"""

__version__ = "0.1.0"

from .errors import (  # noqa: E402 - __version__ first: the worker reads it from here
    OUTCOME_EXCEPTIONS, ApiError, BadRequest, BulkheadError, Cancelled, ClientTimeout, HandlerError,
    JobFailed, JobTimedOut, OomKilled, Overloaded, Poisoned, ResourceExhausted, TransportError,
    Unavailable, UnknownPool, WorkerCrashed, WorkerHung)

__all__ = [
    "__version__", "Client",
    "BulkheadError", "JobFailed", "HandlerError", "WorkerCrashed", "JobTimedOut", "WorkerHung",
    "OomKilled", "ResourceExhausted", "Poisoned", "Overloaded", "Unavailable", "Cancelled",
    "ApiError", "UnknownPool", "BadRequest", "TransportError", "ClientTimeout",
    "OUTCOME_EXCEPTIONS",
]


def __getattr__(name):
    # PEP 562: load the client (and http.client) only when it is asked for.
    if name == "Client":
        from .client import Client
        globals()["Client"] = Client
        return Client
    raise AttributeError("module %r has no attribute %r" % (__name__, name))


def __dir__():
    return sorted(set(globals()) | {"Client"})
