"""``bulkhead.Executor``: a ``concurrent.futures`` executor whose tasks run in bulkhead workers.

    with bulkhead.Executor(max_workers=3, memory_limit="4GiB", pids_limit=7000,
                           max_jobs_per_worker=1, profile=["tensorflow"], threads=4) as ex:
        scores = list(ex.map(train_fold, range(3)))

It starts a private supervisor (``bulkhead serve --stop-when-stdin-closes``) on a Unix socket in
a private temporary directory, with a generated config whose one pool runs
``bulkhead._executor_task``: a task is a pickle of ``(fn, args, kwargs)`` sent as one sync job.
A task that raises re-raises the original exception in the caller (``__cause__`` is a
``HandlerError`` with the remote traceback); a worker that dies (crash, OOM kill, pids limit,
timeout, hang) fails only its own task, with the typed exceptions of ``bulkhead.errors``, after
the pool's retries on fresh workers.  ``Executor(url=..., pool=...)`` attaches to a running
daemon's pool instead.  See docs/executor.md.

Dispatch: tasks wait in a local queue; ``inflight_per_worker`` (2) threads per worker each take a
task and make one blocking call (keep-alive connection per thread), so the daemon never holds
more than 2 jobs per worker and its ``queue_limit`` is never reached, however many tasks wait.
"""

import itertools
import os
import threading
import time
import weakref
from concurrent.futures import Executor as _BaseExecutor, Future
from concurrent.futures import CancelledError, TimeoutError as FuturesTimeout  # noqa: F401

from . import _executor_task as _task
from ._executor_config import (NO_TIMEOUT, POOL_KWARGS, caller_main,  # noqa: F401
                               caller_python_path, pool_config, render_toml)
from ._executor_daemon import ExecutorStartError, _Daemon, find_binary
from ._executor_dispatch import _Core, _dumps, _finalize, _Task, describe_call
from .errors import BulkheadError

__all__ = ["Executor", "ExecutorStartError", "pool_config", "render_toml", "find_binary"]

DEFAULT_START_TIMEOUT = 120.0
INFLIGHT_PER_WORKER = 2


class Executor(_BaseExecutor):
    """A ``concurrent.futures.Executor`` running tasks in bulkhead workers (docs/executor.md).

    ``max_workers``: worker processes (default: the CPU count).  Pool keys as keyword arguments
    (``memory_limit="4GiB"``, ``pids_limit=7000``, ``max_jobs_per_worker=1``, ``job_timeout="2h"``,
    ``retries=1``, ``profile=["tensorflow"]``, ``threads=4``, ``env={...}``, ``mode="zygote"``,
    ``preload=``, ``init=``, ...).  ``url=`` and ``pool=``: attach to a running daemon's pool
    instead of starting one.  ``bulkhead_bin=``: the binary (after ``$BULKHEAD_BIN``).
    ``start_timeout``: seconds to wait for the workers to be ready.
    ``inflight_per_worker``: jobs sent to the daemon at once per worker (2).
    ``autobatch``: send several queued short tasks (under 2 ms each) as one job (True).
    """

    def __init__(self, max_workers=None, *, url=None, pool=None, bulkhead_bin=None,
                 start_timeout=DEFAULT_START_TIMEOUT, inflight_per_worker=INFLIGHT_PER_WORKER,
                 autobatch=True, **pool_kwargs):
        from .client import Client
        if _task._bootstrapping:
            raise RuntimeError(
                "bulkhead.Executor was started while a worker imported the main module: like "
                "multiprocessing's spawn start method, the Executor runs the caller's main "
                "script in each worker, so a script must create its Executor under "
                "`if __name__ == \"__main__\":`")
        if max_workers is not None and (isinstance(max_workers, bool)
                                        or not isinstance(max_workers, int) or max_workers < 1):
            raise ValueError("max_workers must be an integer of at least 1, got %r"
                             % (max_workers,))
        self._shutdown = False
        self._lock = threading.Lock()
        self._daemon = None
        self.url = None
        self._main_in_workers = False   # the workers import the caller's __main__
        if url is not None:
            if pool_kwargs:
                raise TypeError("pool keys (%s) can't be given when attaching to a running "
                                "daemon (url=): they are that pool's config"
                                % ", ".join(sorted(pool_kwargs)))
            self.pool = pool or "default"
            self.url = url
            client = Client(url)
            workers = max_workers or self._attached_workers(client)
        else:
            self.pool = pool or "tasks"
            workers = max_workers or os.cpu_count() or 1
            # Validate everything before starting a process.
            main = caller_main()
            self._main_in_workers = main is not None
            keys = pool_config(workers, python_path=caller_python_path(), main=main,
                               **pool_kwargs)
            binary = find_binary(bulkhead_bin)
            self._daemon = _Daemon(binary, keys, self.pool, start_timeout)
            client = None
            try:
                deadline = time.monotonic() + start_timeout
                self.url = self._daemon.wait_listening(deadline)
                client = Client(self.url)
                self._wait_ready(client, workers, deadline)
            except BaseException:
                if client is not None:
                    client.close()
                self._daemon.stop(timeout=10)
                raise
        self.max_workers = workers
        self._core = _Core(client, self.pool, max(1, workers * int(inflight_per_worker)),
                           autobatch)
        self._finalizer = weakref.finalize(self, _finalize, self._core, self._daemon)

    # -- start-up -------------------------------------------------------------------------------

    def _pool_status(self, client):
        import json
        from ._http import final_value
        return json.loads(final_value(client._request(
            "GET", client._prefix + "/v1/pools/" + self.pool, idempotent=True)))

    def _attached_workers(self, client):
        status = self._pool_status(client)
        workers = status.get("workers_target")
        if not isinstance(workers, int):
            workers = len(status.get("workers") or ()) or 1
        return max(1, workers)

    def _wait_ready(self, client, workers, deadline):
        """Until a worker is idle (started, preloaded: the others start beside it, and tasks
        queue in the daemon meanwhile), a worker fails to start, the daemon exits, or the
        deadline."""
        workers = 1
        last = None
        while True:
            if self._daemon.proc.poll() is not None:
                raise ExecutorStartError("bulkhead exited with status %s during start-up"
                                         % self._daemon.proc.returncode, self._daemon.log_tail())
            try:
                status = self._pool_status(client)
                idle = [w for w in status.get("workers", [])
                        if w.get("state") == "idle" and w.get("pid")]
                if len(idle) >= workers:
                    return
                failure = status.get("last_start_failure")
                if failure and not idle:
                    # A worker that cannot start (bad preload, a main script that starts an
                    # Executor at import, ...) fails the same way every time: say so now.
                    raise ExecutorStartError("the workers cannot start: %s" % failure,
                                             self._daemon.log_tail(1500))
                last = "%d of %d workers ready" % (len(idle), workers)
            except BulkheadError as exc:
                if isinstance(exc, ExecutorStartError):
                    raise
                last = exc
            if time.monotonic() > deadline:
                raise ExecutorStartError(
                    "the workers were not ready within the start timeout (%s)" % (last,),
                    self._daemon.log_tail())
            time.sleep(0.02)

    # -- the Executor API -----------------------------------------------------------------------

    def _by_value(self, fn):
        """A function of a ``__main__`` the workers cannot import (a REPL, a notebook, an
        attached pool): pickled by value (cloudpickle), not by a reference they cannot
        resolve."""
        return not self._main_in_workers and getattr(fn, "__module__", None) == "__main__"

    def _check_open(self):
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")

    def submit(self, fn, /, *args, **kwargs):
        """Schedules ``fn(*args, **kwargs)``; returns a ``concurrent.futures.Future``.  A task
        that cannot be pickled gives a future that raises the ``PicklingError``."""
        return self._submit(fn, args, kwargs, None)

    def submit_labelled(self, fn, label, /, *args, **kwargs):
        """``submit`` with the text that failure messages use to name the task."""
        return self._submit(fn, args, kwargs, label)

    def _submit(self, fn, args, kwargs, label):
        with self._lock:
            self._check_open()
        fut = Future()
        if label is None:
            label = describe_call(fn, args, kwargs)
        try:
            payload = _dumps((_task.CALL, fn, args, kwargs), self._by_value(fn))
        except Exception as exc:  # noqa: BLE001 - reported through the future, at once
            fut.set_exception(exc)
            return fut
        self._core.put(_Task(fut, payload, label))
        return fut

    def _submit_chunk(self, fn, chunk):
        fut = Future()
        label = describe_call(fn, chunk[0]) + (" and %d more" % (len(chunk) - 1)
                                               if len(chunk) > 1 else "")
        try:
            payload = _dumps((_task.BATCH, fn, chunk), self._by_value(fn))
        except Exception as exc:  # noqa: BLE001
            fut.set_exception(exc)
            return fut
        self._core.put(_Task(fut, payload, label))
        return fut

    def map(self, fn, *iterables, timeout=None, chunksize=1):
        """Like ``ProcessPoolExecutor.map``: results in order; ``chunksize`` > 1 sends that many
        calls as one job (one round trip); ``timeout`` bounds the whole iteration."""
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        end_time = None if timeout is None else timeout + time.monotonic()
        with self._lock:
            self._check_open()
        if chunksize == 1:
            fs = [self.submit(fn, *args) for args in zip(*iterables)]
            chunked = False
        else:
            it = zip(*iterables)
            fs = []
            while True:
                chunk = list(itertools.islice(it, chunksize))
                if not chunk:
                    break
                fs.append(self._submit_chunk(fn, chunk))
            chunked = True

        def results():
            try:
                fs.reverse()
                while fs:
                    if end_time is None:
                        value = fs[-1].result()
                    else:
                        value = fs[-1].result(end_time - time.monotonic())
                    fs.pop()
                    if chunked:
                        yield from value
                    else:
                        yield value
            finally:
                for f in fs:
                    f.cancel()
        return results()

    def shutdown(self, wait=True, *, cancel_futures=False):
        """Stops taking tasks; ``cancel_futures`` cancels those not started; ``wait`` waits for
        the others, then stops the private supervisor (no process is left behind)."""
        with self._lock:
            self._shutdown = True
        core = self._core
        core.close(cancel=cancel_futures)
        if wait:
            for t in core.threads:
                t.join()
            self._finalizer()
        else:
            def finish():
                for t in core.threads:
                    t.join()
                self._finalizer()
            threading.Thread(target=finish, name="bulkhead-executor-shutdown",
                             daemon=True).start()

    # -- extras ---------------------------------------------------------------------------------

    def pool_status(self):
        """``GET /v1/pools/{pool}`` of this executor's pool (a dict)."""
        return self._pool_status(self._core.client)

    @property
    def log_path(self):
        """The private supervisor's log file (None when attached)."""
        return self._daemon.log_path if self._daemon else None

