"""How ``bulkhead.Executor`` moves tasks: a local queue, dispatcher threads that each make one
blocking call at a time (so the daemon never holds more than ``inflight_per_worker`` jobs per
worker and its ``queue_limit`` is never reached), automatic batching of short tasks, and the
decoding of the task runner's answers into futures."""

import collections
import pickle
import threading

from . import _executor_task as _task
from .errors import BulkheadError, HandlerError


class _Task(object):
    __slots__ = ("future", "payload", "label", "started", "solo")

    def __init__(self, future, payload, label):
        self.future = future
        self.payload = payload
        self.label = label
        self.started = False   # set_running_or_notify_cancel done
        self.solo = False      # never batched (its batch failed: it runs alone)


def _dumps(obj, by_value=False):
    try:
        if by_value and _task._cloudpickle() is not None:
            raise pickle.PicklingError("a function of a __main__ the workers cannot import")
        return pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)
    except Exception as first:  # noqa: BLE001 - lambdas, closures, interactive functions
        cp = _task._cloudpickle()
        if cp is None:
            raise pickle.PicklingError(
                "%s (install cloudpickle, or joblib which vendors it, to send lambdas, "
                "closures and interactive functions)" % first) from first
        return cp.dumps(obj, pickle.HIGHEST_PROTOCOL)


def describe_call(fn, args=(), kwargs=None, limit=200):
    """``name(arg, ...)``, shortened, for messages that must say which task failed."""
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    module = getattr(fn, "__module__", None)
    if module and module not in ("builtins", "__main__", "__mp_main__"):
        name = "%s.%s" % (module, name)
    if name.endswith("BatchedCalls") or type(fn).__name__ == "BatchedCalls":
        name = repr(fn)
    parts = []
    for a in args:
        r = repr(a)
        parts.append(r if len(r) <= 40 else r[:37] + "...")
    for k, v in (kwargs or {}).items():
        r = repr(v)
        parts.append("%s=%s" % (k, r if len(r) <= 40 else r[:37] + "..."))
    text = "%s(%s)" % (name, ", ".join(parts))
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _task_error(task, exc):
    """Names the task in a worker failure's message (``exc.task``) and returns it."""
    try:
        exc.task = task.label
        exc.detail = ("%s [task %s]" % (exc.detail, task.label)) if getattr(exc, "detail", "") \
            else "task %s" % task.label
    except Exception:  # noqa: BLE001
        pass
    return exc


def _decode(task, body, headers):
    """Sets the task's future from the answer body (a pickle from the task runner)."""
    fut = task.future
    try:
        status, value, report = pickle.loads(body)
    except Exception as exc:  # noqa: BLE001 - e.g. the result's class is not importable here
        fut.set_exception(exc)
        return {}
    report["attempts"] = int(headers.get("x-bulkhead-attempts", 1) or 1)
    for name, key in (("x-bulkhead-run-ms", "run_ms"), ("x-bulkhead-queue-ms", "queue_ms")):
        try:
            report[key] = float(headers[name])
        except (KeyError, ValueError):
            pass
    fut.bulkhead_report = report
    if status == "ok":
        fut.set_result(value)
        return report
    tb = report.get("traceback") or ""
    if status == "raised":
        cause = HandlerError({"outcome": "handler_error", "pool": None,
                              "detail": "task %s raised %s" % (task.label, type(value).__name__),
                              "error": {"type": type(value).__name__, "message": str(value),
                                        "traceback": tb}})
        cause.task = task.label
        value.__cause__ = cause
        fut.set_exception(value)
        return report
    else:
        type_name, message = value
        err = HandlerError({"outcome": "handler_error",
                            "detail": "task %s raised %s (not picklable)" % (task.label,
                                                                             type_name),
                            "error": {"type": type_name, "message": message, "traceback": tb}})
        err.task = task.label
        fut.set_exception(err)
    return report


# Automatic batching (``autobatch=True``): once tasks are known to be short (a moving average of
# their run time under BATCH_TASK_MS), a dispatcher thread sends up to BATCH_MAX queued tasks
# as one job, about BATCH_TARGET_MS of work, never more than its share of the queue.  Each task
# still gets its own result or exception; if the job fails as a whole (crash, OOM kill, pids
# limit, timeout), each of its tasks is run again alone, so only the culprit fails.
BATCH_TASK_MS = 2.0
BATCH_TARGET_MS = 20.0
BATCH_MAX = 64


class _Core(object):
    """What the dispatcher threads share (no reference to the Executor, so that an Executor
    dropped without ``shutdown`` is finalized)."""

    def __init__(self, client, pool, threads, autobatch=True):
        self.client = client
        self.pool = pool
        self.autobatch = autobatch
        self.avg_ms = None   # moving average of a task's run time in the worker
        self.queue = collections.deque()
        self.cond = threading.Condition(threading.Lock())
        self.closed = False
        self.threads = []
        for i in range(threads):
            t = threading.Thread(target=self.run, name="bulkhead-executor-%d" % i, daemon=True)
            t.start()
            self.threads.append(t)

    def put(self, task):
        with self.cond:
            self.queue.append(task)
            self.cond.notify()

    def put_many(self, tasks):
        with self.cond:
            self.queue.extend(tasks)
            self.cond.notify(len(tasks))

    def close(self, cancel=False):
        with self.cond:
            self.closed = True
            cancelled = []
            if cancel:
                while self.queue:
                    cancelled.append(self.queue.popleft())
            self.cond.notify_all()
        for task in cancelled:
            task.future.cancel()

    def _batch_size(self, waiting):
        avg = self.avg_ms
        if not self.autobatch or avg is None or avg > BATCH_TASK_MS or waiting < 2:
            return 1
        share = -(-waiting // len(self.threads))
        return max(1, min(BATCH_MAX, share, int(BATCH_TARGET_MS / max(avg, 0.01))))

    def _observe(self, report):
        ms = report.get("task_ms")
        if ms is not None:
            avg = self.avg_ms
            self.avg_ms = ms if avg is None else 0.8 * avg + 0.2 * ms

    def run(self):
        queue, cond = self.queue, self.cond
        while True:
            with cond:
                while not queue:
                    if self.closed:
                        return
                    cond.wait()
                tasks = [queue.popleft()]
                if not tasks[0].solo:
                    n = self._batch_size(len(queue) + 1)
                    while len(tasks) < n and queue and not queue[0].solo:
                        tasks.append(queue.popleft())
            live = []
            for task in tasks:
                if task.started or task.future.set_running_or_notify_cancel():
                    task.started = True
                    live.append(task)
            if len(live) == 1:
                self._one(live[0])
            elif live:
                self._many(live)

    def _one(self, task):
        fut = task.future
        try:
            status, response, body = self.client._call(self.pool, task.payload, None, False,
                                                       False)
        except BaseException as exc:  # noqa: BLE001 - transport failure: this task only
            fut.set_exception(_task_error(task, exc) if isinstance(exc, BulkheadError) else exc)
            return
        if status == 200:
            self._observe(_decode(task, body, response.headers))
        else:
            from ._http import error_from_response
            exc = error_from_response(status, response, body)
            fut.bulkhead_report = {"attempts": getattr(exc, "attempts", None)}
            fut.set_exception(_task_error(task, exc))

    def _many(self, tasks):
        try:
            payload = pickle.dumps((_task.MULTI, [t.payload for t in tasks]),
                                   pickle.HIGHEST_PROTOCOL)
            status, response, body = self.client._call(self.pool, payload, None, False, False)
            answers = pickle.loads(body) if status == 200 else None
        except BaseException:  # noqa: BLE001 - run them alone: each gets its own error
            answers = None
        if answers is None or len(answers) != len(tasks):
            with self.cond:
                for task in reversed(tasks):
                    task.solo = True
                    self.queue.appendleft(task)
                self.cond.notify(len(tasks))
            return
        headers = response.headers
        for task, answer in zip(tasks, answers):
            self._observe(_decode(task, answer, headers))


def _finalize(core, daemon):
    core.close(cancel=True)
    if daemon is not None:
        daemon.stop()
    try:
        core.client.close()
    except Exception:  # noqa: BLE001
        pass
