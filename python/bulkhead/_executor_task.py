"""The task runner of ``bulkhead.Executor`` pools: ``handler = "bulkhead._executor_task:handle"``,
``preload = "bulkhead._executor_task:preload"`` (docs/executor.md).

A job's payload is a pickle of ``(CALL, fn, args, kwargs)`` or ``(BATCH, fn, [args, ...])`` (a
``map`` chunk), or ``(MULTI, [payload, ...])``: several short tasks the Executor sent as one job,
answered as a pickled list of their answers.  The answer is a pickle of ``(status, value, report)``:

- ``("ok", value, report)``; a batch's value is the list of its results;
- ``("raised", exc, report)``: the task raised ``exc`` (its remote traceback text is
  ``report["traceback"]``), re-raised by the caller with its original type;
- ``("raised_unpicklable", (type_name, message), report)``: it raised something that could not be
  pickled: the caller raises ``HandlerError``.

``report``: the worker's pid, id, jobs served, the task's run time and, for tasks of 5 ms or more,
peak RSS, RSS, threads and maps after the task, so the caller sees each task's footprint
(``future.bulkhead_report``).

A task that fails because the process cannot create threads or maps any more (``can't start new
thread``, ``[Errno 11]``, ...) is NOT caught: the exception goes to the worker, which reports it as
a handler error, and the supervisor classifies it as ``resource_exhausted`` (an infrastructure
failure: the worker is replaced and the task retried on a fresh one).

``preload`` (once per worker, or once in the zygote) makes functions of the caller's ``__main__``
importable the way ``multiprocessing``'s spawn start method does (the caller's main script is
imported as ``__mp_main__`` and aliased as ``__main__``), then runs the pool's own preload
function if the Executor was given one.
"""

import os
import pickle
import sys
from time import perf_counter as _perf_counter

CALL = 0
BATCH = 1
MULTI = 2    # several tasks, each its own CALL/BATCH payload, answered one by one

MAIN_PATH_ENV = "BULKHEAD_EXECUTOR_MAIN_PATH"
MAIN_NAME_ENV = "BULKHEAD_EXECUTOR_MAIN_NAME"
USER_PRELOAD_ENV = "BULKHEAD_EXECUTOR_PRELOAD"

# What the supervisor reads as "the process cannot create threads or maps" (src/core/resource_rules.cc).
# The GPU's memory full, then a thread or map refused: src/core/resource_rules.cc's two tables.
_EXHAUSTION_SIGNATURES = ("CUDA out of memory", "OutOfMemoryError: CUDA",
                          "CUBLAS_STATUS_ALLOC_FAILED", "CUDNN_STATUS_ALLOC_FAILED",
                          "cudaErrorMemoryAllocation", "CUDA_ERROR_OUT_OF_MEMORY",
                          "OOM when allocating tensor", "MPS backend out of memory",
                          "can't start new thread", "Thread creation failed", "pthread_create",
                          "Resource temporarily unavailable", "[Errno 11]",
                          "failed to map segment")

_jobs_served = 0
_bootstrapping = False   # True while preload imports the caller's main module


def preload():
    """The pool's preload: the caller's ``__main__``, then the user's preload (its value is
    the pool's ``ctx.preloaded``, passed to ``init``)."""
    name = os.environ.get(MAIN_NAME_ENV, "")
    path = os.environ.get(MAIN_PATH_ENV, "")
    if name or path:
        global _bootstrapping
        _bootstrapping = True
        try:
            _import_main(name, path)
        finally:
            _bootstrapping = False
    spec = os.environ.get(USER_PRELOAD_ENV, "").strip()
    if spec:
        module, _, attr = spec.partition(":")
        __import__(module)
        fn = sys.modules[module]
        for part in attr.split("."):
            fn = getattr(fn, part)
        return fn()
    return None


def _import_main(name, path):
    """``multiprocessing.spawn._fixup_main_from_name`` / ``_from_path`` without importing
    multiprocessing (25 ms of every worker's start): the caller's main module runs as
    ``__mp_main__`` and is aliased as ``__main__``, so pickles that name ``__main__.f`` load."""
    import runpy      # already loaded: the worker itself starts through runpy
    import types
    module = types.ModuleType("__mp_main__")
    if name:
        content = runpy.run_module(name, run_name="__mp_main__", alter_sys=True)
    else:
        content = runpy.run_path(path, run_name="__mp_main__")
    module.__dict__.update(content)
    sys.modules["__main__"] = sys.modules["__mp_main__"] = module


def _dumps(obj):
    try:
        return pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)
    except Exception:
        cp = _cloudpickle()
        if cp is None:
            raise
        return cp.dumps(obj, pickle.HIGHEST_PROTOCOL)


def _cloudpickle():
    try:
        import cloudpickle
        return cloudpickle
    except ImportError:
        pass
    try:
        from joblib.externals import cloudpickle
        return cloudpickle
    except ImportError:
        return None


def _status_numbers():
    """Peak RSS (bytes) and threads from /proc/self/status, maps from /proc/self/maps."""
    rss_peak = rss = threads = maps = None
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    rss_peak = int(line.split()[1]) * 1024
                elif line.startswith(b"VmRSS:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith(b"Threads:"):
                    threads = int(line.split()[1])
        with open("/proc/self/maps", "rb") as f:
            maps = f.read().count(b"\n")
    except (OSError, ValueError):
        pass
    return rss_peak, rss, threads, maps


# A task shorter than this gets no /proc numbers in its report (they cost ~50-100 us).
REPORT_FOOTPRINT_MS = 5.0


def _report(ctx, started, traceback_text=None):
    task_ms = (_perf_counter() - started) * 1e3
    report = {"pid": os.getpid(), "worker": getattr(ctx, "worker_id", None),
              "job": getattr(ctx, "job_id", None), "jobs_served": _jobs_served,
              "task_ms": task_ms}
    if task_ms >= REPORT_FOOTPRINT_MS:
        report["rss_peak"], report["rss"], report["threads"], report["maps"] = \
            _status_numbers()
    if traceback_text is not None:
        report["traceback"] = traceback_text
    return report


def _exhausted(exc, text):
    return any(s in text for s in _EXHAUSTION_SIGNATURES)


def handle(payload, ctx):
    global _jobs_served
    _jobs_served += 1
    task = pickle.loads(payload)
    if task[0] == MULTI:
        # The Executor's automatic batching of short tasks: one job, each task answered on
        # its own (an exhaustion error still fails the whole job: the Executor then runs every
        # task of it alone).
        return pickle.dumps([_run(pickle.loads(sub), ctx) for sub in task[1]],
                            pickle.HIGHEST_PROTOCOL)
    return _run(task, ctx)


def _run(task, ctx):
    started = _perf_counter()
    try:
        if task[0] == CALL:
            value = task[1](*task[2], **task[3])
        else:
            fn = task[1]
            value = [fn(*args) for args in task[2]]
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the caller
        import traceback
        tb = exc.__traceback__
        text = "".join(traceback.format_exception(type(exc), exc, tb.tb_next if tb else None))
        if isinstance(exc, Exception) and _exhausted(exc, text):
            raise   # the supervisor's resource_exhausted: replace this worker, retry the task
        report = _report(ctx, started, text)
        exc.__traceback__ = None
        try:
            return _dumps(("raised", exc, report))
        except Exception:  # noqa: BLE001 - the exception cannot be pickled
            return _dumps(("raised_unpicklable",
                           ("%s.%s" % (type(exc).__module__, type(exc).__qualname__), str(exc)),
                           report))
    report = _report(ctx, started)
    try:
        return _dumps(("ok", value, report))
    except Exception as exc:  # noqa: BLE001 - the result cannot be pickled
        import traceback
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        report["traceback"] = text
        try:
            return _dumps(("raised", pickle.PicklingError(
                "cannot pickle the task's result %s: %s" % (type(value).__name__, exc)), report))
        except Exception:  # noqa: BLE001
            return _dumps(("raised_unpicklable", ("pickle.PicklingError", str(exc)), report))
