"""A joblib backend that runs each batch of a ``Parallel`` call in a bulkhead worker.

    import bulkhead.joblib            # registers the "bulkhead" backend
    with joblib.parallel_backend("bulkhead", n_jobs=3, memory_limit="4GiB",
                                 max_jobs_per_worker=1):
        cross_validate(model, X, y, cv=3, n_jobs=3)

To keep the workers across several contexts, make the backend yourself:
``backend = bulkhead.joblib.BulkheadBackend(memory_limit="4GiB")``, then
``with joblib.parallel_backend(backend, n_jobs=3): ...`` as often as needed, and
``backend.shutdown()`` (or drop it) at the end.

Keyword arguments of ``parallel_backend`` other than ``n_jobs`` are ``bulkhead.Executor``'s (pool
keys, or ``url=``/``pool=`` to use a running daemon's pool).  Unlike loky, a worker that crashes
fails only its own batch, after ``retries`` on a fresh worker, with the typed exception
(``WorkerCrashed``, ``OomKilled``, ...) whose message names the batch.  One Executor (one
private supervisor) serves every ``Parallel`` call made under the same ``parallel_backend``
context (as loky reuses its workers); it stops when the backend is dropped, or at exit.
Written against joblib 1.2 (``ParallelBackendBase``); see docs/executor.md.
"""

import functools
import weakref
from concurrent.futures import TimeoutError as CfTimeoutError

import joblib
import joblib.parallel as _joblib_parallel
from joblib._parallel_backends import AutoBatchingMixin, ParallelBackendBase

from .executor import Executor, describe_call

__all__ = ["BulkheadBackend", "register"]

BACKEND_NAME = "bulkhead"


def describe_batch(batch):
    """``BatchedCalls[f(args...), +N more]`` for a joblib batch, else ``describe_call``."""
    items = getattr(batch, "items", None)
    if not isinstance(items, list) or not items:
        return describe_call(batch)
    func, args, kwargs = items[0]
    inner = getattr(func, "function", None) or func   # sklearn's _FuncWrapper
    text = describe_call(inner, args, kwargs, limit=300)
    if len(items) > 1:
        text += ", +%d more" % (len(items) - 1)
    return "BatchedCalls[%s]" % text


class BulkheadBackend(AutoBatchingMixin, ParallelBackendBase):
    """``joblib.parallel_backend("bulkhead", n_jobs=N, **executor_kwargs)``."""

    supports_timeout = True
    supports_inner_max_num_threads = False

    def __init__(self, nesting_level=None, inner_max_num_threads=None, **executor_kwargs):
        super().__init__(nesting_level=nesting_level,
                         inner_max_num_threads=inner_max_num_threads)
        self._executor_kwargs = executor_kwargs
        self._executor = None
        self._workers = None
        self._pending = set()
        self.parallel = None
        self._owned_by_context = False   # made by parallel_backend("bulkhead"): stops with it

    def effective_n_jobs(self, n_jobs):
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs is None:
            return 1
        if n_jobs < 0:
            return max(joblib.cpu_count() + 1 + n_jobs, 1)
        return n_jobs

    def configure(self, n_jobs=1, parallel=None, prefer=None, require=None, **backend_args):
        n_jobs = self.effective_n_jobs(n_jobs)
        # Weakly: Parallel holds the backend, and without a cycle the backend (and its private
        # supervisor) goes as soon as the parallel_backend context and the Parallel call end.
        self.parallel = weakref.proxy(parallel) if parallel is not None else None
        if self._executor is not None and self._workers != n_jobs:
            self._executor.shutdown(wait=True)
            self._executor = None
        if self._executor is None:
            kwargs = dict(self._executor_kwargs)
            if "url" not in kwargs:
                # As loky does: each worker's OpenMP/BLAS pools get cpu_count // n_jobs threads
                # (the caller's env= wins), so n_jobs workers do not oversubscribe the CPUs.
                env = self._prepare_worker_env(n_jobs)
                env.update(kwargs.get("env") or {})
                kwargs["env"] = env
            self._executor = Executor(max_workers=n_jobs, **kwargs)
            self._workers = n_jobs
        return n_jobs

    def apply_async(self, func, callback=None):
        future = self._executor.submit_labelled(func, describe_batch(func))
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)
        future.get = functools.partial(self.wrap_future_result, future)
        if callback is not None:
            future.add_done_callback(callback)
        return future

    @staticmethod
    def wrap_future_result(future, timeout=None):
        try:
            return future.result(timeout=timeout)
        except CfTimeoutError as exc:
            raise TimeoutError from exc

    def terminate(self):
        # Under parallel_backend("bulkhead"), the workers stay for the next Parallel call in the
        # context (as loky's do) and stop when it exits; a one-off Parallel(backend="bulkhead")
        # stops them now.  A backend instance the caller made (parallel_backend(BulkheadBackend(
        # ...))) keeps them until its shutdown(), or until it is dropped.
        self.reset_batch_stats()
        if self._owned_by_context and _active_backend() is not self:
            self.shutdown()

    def abort_everything(self, ensure_ready=True):
        for future in list(self._pending):
            future.cancel()
        if not ensure_ready:
            self.shutdown()

    def shutdown(self):
        """Stops the private supervisor now (it also stops when the backend is dropped)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def __getstate__(self):
        raise TypeError("the bulkhead joblib backend is not picklable")


def _active_backend():
    active = getattr(_joblib_parallel._backend, "backend_and_jobs", None)
    return active[0] if active else None


def _patch_context_exit():
    """Makes the end of a ``parallel_backend`` context stop its bulkhead backend's supervisor
    at once (joblib keeps the backend in a reference cycle, which only the GC would break)."""
    cls = _joblib_parallel.parallel_backend
    if getattr(cls.unregister, "_bulkhead", False):
        return
    original = cls.unregister

    def unregister(self):
        original(self)
        backend = (getattr(self, "new_backend_and_jobs", None) or (None,))[0]
        if isinstance(backend, BulkheadBackend) and backend._owned_by_context and \
                _active_backend() is not backend:
            backend.shutdown()

    unregister._bulkhead = True
    cls.unregister = unregister


def _by_name(**kwargs):
    backend = BulkheadBackend(**kwargs)
    backend._owned_by_context = True
    return backend


def register():
    """Registers ``"bulkhead"`` with joblib (done on import)."""
    joblib.register_parallel_backend(BACKEND_NAME, _by_name)
    _patch_context_exit()


register()
