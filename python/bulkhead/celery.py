"""Celery bridge: a task's body runs in a bulkhead worker, not in the Celery worker process
(docs/integrations.md).

    from celery import Celery
    import bulkhead.celery

    app = Celery("jobs", broker="redis://127.0.0.1:6379/0", backend="redis://127.0.0.1:6379/1")

    @app.task(base=bulkhead.celery.IsolatedTask, acks_late=True)
    def embed(text):
        return model.encode(text).tolist()          # may segfault inside a native library

    @bulkhead.celery.isolated(app, options={"memory_limit": "4GiB"})
    def train(fold):
        ...

Why: a segfault or abort in a plain task kills the Celery pool process.  Celery then reports
``WorkerLostError`` (no signal evidence, no stderr), and with ``acks_late`` plus
``task_reject_on_worker_lost`` it redelivers the message, which kills the next process too: a
redelivery storm that never ends.  Through the bridge the body runs in a bulkhead worker; the
Celery process only waits for the answer, so it never dies: a crash becomes the typed exception
``bulkhead.WorkerCrashed`` (``OomKilled``, ``JobTimedOut``, ... likewise) with its evidence,
after the bulkhead pool's own retries on a fresh worker (1 by default), and Celery records an
ordinary failure and acks the message.  The body's own exceptions are re-raised with their own
type, as without the bridge.

Where the bodies run (task attributes, else the app's config ``bulkhead_url``,
``bulkhead_pool``, ``bulkhead_options``):

- ``bulkhead_url`` None (the default): a private supervisor per Celery worker process, a
  ``bulkhead.Executor`` created on the first isolated task and stopped at the process's
  shutdown (``worker_process_shutdown``); it also dies with the process, even a SIGKILLed one.
  ``bulkhead_options`` are its keyword arguments (``max_workers`` 1 by default: a prefork
  process runs one task at a time; give the concurrency for ``--pool=threads``).
- ``bulkhead_url="unix:/run/bulkhead.sock"`` (or ``http://host:port``) with ``bulkhead_pool``:
  the pool of a running daemon, which must run the Executor's task runner (docs/executor.md,
  "Attaching to a running daemon") and import the task modules (its ``python_path``).

The body is found in the bulkhead worker by importing the task's module and looking the task up
by name, so tasks must live in importable modules (as Celery itself needs).  Exceptions survive
Celery's result serialization (``json`` included): the client's ``AsyncResult.get()`` raises
``bulkhead.WorkerCrashed`` with ``attempts`` (signal, exit code, stderr tail) when the client
has imported ``bulkhead`` (Celery rebuilds an exception class only from a module already
loaded), and ``AsyncResult.traceback`` ends with the same evidence as text.
"""

import importlib
import os
import threading

from celery import Task, current_app, signals

from .errors import JobFailed

__all__ = ["IsolatedTask", "isolated", "shutdown_executors"]

_SETTINGS = ("bulkhead_url", "bulkhead_pool", "bulkhead_options")
_DEFAULT_OPTIONS = {"max_workers": 1}

_executors = {}          # settings key -> Executor, of this process only
_lock = threading.Lock()


def _forget_parents_executors():
    # A forked child (a prefork pool process) must not use its parent's Executors: their
    # threads did not survive the fork.  The parent still owns and stops them.
    global _lock
    _executors.clear()
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_parents_executors)


class IsolatedTask(Task):
    """A Celery task base class whose body runs in a bulkhead worker: ``@app.task(base=
    bulkhead.celery.IsolatedTask)``.  Class attributes (or ``app.task`` keyword arguments):
    ``bulkhead_url``, ``bulkhead_pool``, ``bulkhead_options`` (see the module's docstring)."""

    bulkhead_url = None
    bulkhead_pool = None
    bulkhead_options = None

    def __call__(self, *args, **kwargs):
        url, pool, options = self.bulkhead_settings()
        executor = executor_for(url, pool, options)
        run = type(self).run       # the decorated function (app.task keeps it as ``run``)
        label = "%s[%s]" % (self.name, getattr(self.request, "id", None) or "-")
        future = executor.submit_labelled(
            run_task_body, label, getattr(run, "__module__", None) or self.__module__, self.name,
            getattr(run, "__qualname__", None), args, kwargs)
        try:
            return future.result()
        except JobFailed as exc:
            raise _for_celery(exc, self) from None

    def bulkhead_settings(self):
        """``(url, pool, options)``: the task's attributes, else the app's configuration."""
        conf = self.app.conf
        url = self.bulkhead_url or conf.get("bulkhead_url")
        pool = self.bulkhead_pool or conf.get("bulkhead_pool")
        options = self.bulkhead_options
        if options is None:
            options = conf.get("bulkhead_options")
        return url, pool, dict(options or {})


def isolated(app, *, url=None, pool=None, options=None, **task_options):
    """``@bulkhead.celery.isolated(app, ...)``: ``app.task(base=IsolatedTask, ...)`` with the
    bulkhead settings as keyword arguments; ``task_options`` go to ``app.task`` (``name=``,
    ``acks_late=``, ``autoretry_for=``, ...)."""
    task_options.setdefault("base", IsolatedTask)
    return app.task(bulkhead_url=url, bulkhead_pool=pool, bulkhead_options=options,
                    **task_options)


def executor_for(url, pool, options):
    """This process's ``bulkhead.Executor`` for these settings, created on first use."""
    key = (url, pool, repr(sorted(options.items())))
    executor = _executors.get(key)
    if executor is None:
        with _lock:
            executor = _executors.get(key)
            if executor is None:
                from .executor import Executor
                if url is not None:
                    executor = Executor(options.pop("max_workers", None), url=url,
                                        pool=pool or "default", **options)
                else:
                    kwargs = dict(_DEFAULT_OPTIONS, **options)
                    if pool is not None:
                        kwargs["pool"] = pool
                    executor = Executor(**kwargs)
                _executors[key] = executor
    return executor


def shutdown_executors(**_signal_kwargs):
    """Stops this process's Executors (their private supervisors and workers).  Connected to
    Celery's ``worker_process_shutdown`` (each prefork pool process) and ``worker_shutdown``
    (the solo and thread pools run tasks in the main process)."""
    with _lock:
        executors = list(_executors.values())
        _executors.clear()
    for executor in executors:
        executor.shutdown(wait=True, cancel_futures=True)


signals.worker_process_shutdown.connect(shutdown_executors, weak=False)
signals.worker_shutdown.connect(shutdown_executors, weak=False)


def run_task_body(module, name, qualname, args, kwargs):
    """In the bulkhead worker: import the task's module, find the task, run its body (``run``,
    not ``__call__``, so it runs here and is not sent again)."""
    loaded = importlib.import_module(module)
    task = None
    if qualname and "<locals>" not in qualname:
        task = loaded
        for part in qualname.split("."):
            task = getattr(task, part, None)
    if not isinstance(task, Task):
        task = current_app.tasks[name]   # importing the module registered it with its app
    return task.run(*args, **kwargs)


def _for_celery(exc, task):
    """The same exception, its problem naming the Celery task: it travels as ``exc.args``
    (``problem``, ``status``, ``retry_after``), the only part Celery's result backends keep, so
    the client's rebuilt exception carries the evidence and says which task failed."""
    problem = dict(exc.problem)
    task_id = getattr(task.request, "id", None)
    problem["celery_task"] = {"name": task.name, "id": task_id}
    problem["detail"] = "%s [celery task %s %s]" % (exc.problem.get("detail") or exc.outcome,
                                                    task.name, task_id)
    return type(exc)(problem, exc.status, exc.retry_after)
