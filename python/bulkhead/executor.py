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

import collections
import itertools
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import weakref
from concurrent.futures import Executor as _BaseExecutor, Future
from concurrent.futures import CancelledError, TimeoutError as FuturesTimeout  # noqa: F401

from . import _executor_task as _task
from .errors import BulkheadError, HandlerError

__all__ = ["Executor", "ExecutorStartError", "pool_config", "render_toml", "find_binary"]

# A duration the config accepts that no batch job reaches (the config's bound is 1e18 ns).
NO_TIMEOUT = "100000h"
DEFAULT_START_TIMEOUT = 120.0
DEFAULT_STOP_TIMEOUT = 60.0
INFLIGHT_PER_WORKER = 2
_LISTEN_RE = re.compile(r"listening on (unix:[^\s\"']+)")


class ExecutorStartError(BulkheadError):
    """The private supervisor did not start (bad option, binary missing, workers never ready).
    ``log`` is the tail of its log."""

    def __init__(self, message, log=""):
        BulkheadError.__init__(self, message)
        self.log = log

    def __str__(self):
        text = self.args[0]
        if self.log:
            text += "\n--- bulkhead log (tail) ---\n" + self.log
        return text


# -- configuration ----------------------------------------------------------------------------

_SIZES = ("memory_limit", "max_rss", "max_payload")
_DURATIONS = ("job_timeout", "queue_timeout", "async_queue_timeout", "startup_timeout",
              "kill_grace", "sample_interval", "max_age", "hang_after")
_INTS = ("pids_limit", "max_threads", "max_maps", "max_fds", "retries", "poison_after",
         "threads", "gpus_per_worker", "max_jobs")
_STRINGS = ("python", "zygote_fallback")
_ENTRY_POINTS = ("preload", "init")
_ALIASES = {"max_jobs_per_worker": "max_jobs", "profiles": "profile"}
_OTHER = ("mode", "profile", "env", "inherit_env", "gpus", "python_path", "trend", "breaker",
          "max_jobs_strict")
POOL_KWARGS = frozenset(_SIZES + _DURATIONS + _INTS + _STRINGS + _ENTRY_POINTS + _OTHER) | \
    frozenset(_ALIASES)

# Defaults for batch work (the daemon's are for a web service): no run limit, a job never
# times out waiting in the daemon's queue (the Executor keeps its own queue), retries of
# infrastructure failures (crash, OOM kill, pids limit, hang) on a fresh worker: 1.
BATCH_DEFAULTS = {"job_timeout": NO_TIMEOUT, "queue_timeout": NO_TIMEOUT, "retries": 1,
                  "max_payload": "1GiB", "startup_timeout": "120s"}


def _size(key, value):
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError("%s: expected a size such as \"4GiB\" or a number of bytes, got %r"
                        % (key, value))
    if isinstance(value, int) and value < 0:
        raise ValueError("%s: a size can't be negative, got %r" % (key, value))
    return value


def _duration(key, value):
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError("%s: expected a duration such as \"2h\" or a number of seconds, got %r"
                        % (key, value))
    if value < 0 or value != value:
        raise ValueError("%s: expected a duration of at least 0 seconds, got %r" % (key, value))
    return "%dus" % int(round(value * 1e6))


def _entry_point(key, value):
    if isinstance(value, str):
        if ":" not in value:
            raise ValueError("%s: expected \"module:function\", got %r" % (key, value))
        return value
    if callable(value):
        module = getattr(value, "__module__", None)
        name = getattr(value, "__qualname__", None)
        if not module or not name or "<" in name or module == "__main__":
            raise ValueError("%s: %r is not importable by name in a worker: pass a function "
                             "defined at the top level of an importable module, or "
                             "\"module:function\"" % (key, value))
        return "%s:%s" % (module, name)
    raise TypeError("%s: expected \"module:function\" or a function, got %r" % (key, value))


def pool_config(workers, python=None, python_path=(), main=None, **kwargs):
    """The pool table (a dict of TOML keys) for ``Executor(max_workers=workers, **kwargs)``.

    ``main``: ``("name", module_name)`` or ``("path", script_path)``: the caller's ``__main__``.
    Raises ``TypeError`` naming an unknown keyword."""
    keys = dict(BATCH_DEFAULTS)
    keys["handler"] = "bulkhead._executor_task:handle"
    keys["preload"] = "bulkhead._executor_task:preload"
    keys["python"] = python or _default_python()
    keys["workers"] = int(workers)
    env = {}
    extra_path = []
    for name, value in kwargs.items():
        if name not in POOL_KWARGS:
            raise TypeError("Executor() got an unexpected keyword argument %r" % name)
        key = _ALIASES.get(name, name)
        if value is None:
            continue
        if key in _SIZES:
            keys[key] = _size(key, value)
        elif key in _DURATIONS:
            keys[key] = _duration(key, value)
        elif key in _INTS:
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError("%s: expected an integer, got %r" % (name, value))
            keys[key] = value
        elif key in _ENTRY_POINTS:
            spec = _entry_point(key, value)
            if key == "preload":
                env[_task.USER_PRELOAD_ENV] = spec
            else:
                keys[key] = spec
        elif key == "mode":
            if value not in ("spawn", "zygote"):
                raise ValueError("mode: expected \"spawn\" or \"zygote\", got %r" % (value,))
            keys[key] = value
        elif key == "profile":
            keys[key] = [value] if isinstance(value, str) else list(value)
        elif key == "env":
            env.update({str(k): str(v) for k, v in dict(value).items()})
        elif key == "inherit_env":
            keys[key] = [value] if isinstance(value, str) else list(value)
        elif key == "gpus":
            keys[key] = [int(g) for g in value]
        elif key == "python_path":
            extra_path.extend([value] if isinstance(value, str) else list(value))
        elif key in ("trend", "max_jobs_strict"):
            keys[key] = bool(value)
        elif key == "breaker":
            keys[key] = dict(value)
        else:   # python, zygote_fallback
            keys[key] = str(value)
    if keys.get("max_jobs") and "max_jobs_strict" not in keys:
        # max_jobs_per_worker=1 means one task per process: the retiring worker takes no
        # further task while its replacement starts (the daemon's default lets it).
        keys["max_jobs_strict"] = True
    if main is not None:
        kind, where = main
        env[_task.MAIN_NAME_ENV if kind == "name" else _task.MAIN_PATH_ENV] = where
    paths = []
    for p in list(extra_path) + list(python_path):
        p = os.path.abspath(p)
        if p not in paths:
            paths.append(p)
    if paths:
        keys["python_path"] = paths
    if env:
        keys["env"] = env
    return keys


def _toml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        import json
        return json.dumps(value)  # JSON string escapes are valid TOML basic-string escapes
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join("%s = %s" % (_toml_key(k), _toml_value(v))
                                for k, v in value.items()) + " }"
    raise TypeError("cannot write %r as TOML" % (value,))


def _toml_key(key):
    if re.match(r"^[A-Za-z0-9_-]+$", key):
        return key
    return _toml_value(str(key))


def render_toml(server, pools):
    """``[server]`` and ``[pool.NAME]`` tables as TOML text."""
    lines = ["[server]"]
    lines += ["%s = %s" % (k, _toml_value(v)) for k, v in server.items()]
    for name, keys in pools.items():
        lines += ["", "[pool.%s]" % name]
        lines += ["%s = %s" % (k, _toml_value(v)) for k, v in keys.items()]
    return "\n".join(lines) + "\n"


def _default_python():
    exe = sys.executable
    return exe if exe and os.path.isabs(exe) and os.access(exe, os.X_OK) else "/usr/bin/python3"


def caller_python_path():
    """The caller's ``sys.path`` entries a worker needs: existing directories, without the
    standard library (the worker's interpreter has its own)."""
    skip = set()
    for key in ("stdlib", "platstdlib"):
        try:
            skip.add(os.path.realpath(sysconfig.get_paths()[key]))
        except KeyError:
            pass
    out = []
    for entry in sys.path:
        path = os.path.abspath(entry or os.getcwd())
        if not os.path.isdir(path):
            continue
        real = os.path.realpath(path)
        if real in skip or any(real.startswith(s + os.sep) for s in skip):
            continue
        if path not in out:
            out.append(path)
    return out


def caller_main():
    """Where the caller's ``__main__`` comes from, as ``multiprocessing`` spawn sees it:
    ``("name", module)`` (run with ``-m``), ``("path", file)``, or None (interactive)."""
    main = sys.modules.get("__main__")
    if main is None:
        return None
    spec = getattr(main, "__spec__", None)
    name = getattr(spec, "name", None)
    if name is not None:
        if name == "__main__" or name.endswith(".__main__"):
            return None
        return ("name", name)
    path = getattr(main, "__file__", None)
    if path and path.endswith(".py") and os.path.isfile(path):
        return ("path", os.path.normpath(os.path.abspath(path)))
    return None


def find_binary(explicit=None):
    """``$BULKHEAD_BIN``, then ``bulkhead_bin=``, then ``build/bulkhead`` of a checkout, then
    ``bulkhead`` on PATH."""
    candidates = []
    env = os.environ.get("BULKHEAD_BIN")
    if env:
        candidates.append(("$BULKHEAD_BIN", env))
    if explicit:
        candidates.append(("bulkhead_bin=", explicit))
    here = os.path.dirname(os.path.abspath(__file__))
    candidates.append(("checkout", os.path.join(here, "..", "..", "build", "bulkhead")))
    for what, path in candidates:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return os.path.abspath(path)
        if what != "checkout":
            raise ExecutorStartError("bulkhead binary from %s not found or not executable: %s"
                                     % (what, path))
    found = shutil.which("bulkhead")
    if found:
        return found
    raise ExecutorStartError(
        "bulkhead binary not found: set $BULKHEAD_BIN, pass bulkhead_bin=, build the checkout "
        "(build/bulkhead) or put `bulkhead` on PATH")


# -- the private supervisor ---------------------------------------------------------------------


class _Daemon(object):
    """A private ``bulkhead serve``: its process, temp dir and log.  ``stop()`` is idempotent
    and safe from a finalizer."""

    def __init__(self, binary, pool_keys, pool_name, start_timeout):
        self.dir = tempfile.mkdtemp(prefix="bkx-", dir="/tmp")
        self.sock = os.path.join(self.dir, "s.sock")
        self.config = os.path.join(self.dir, "bulkhead.toml")
        self.log_path = os.path.join(self.dir, "bulkhead.log")
        self.proc = None
        self._stopped = False
        server = {"listen": "unix:" + self.sock, "journal": "",
                  "max_request_body": pool_keys.get("max_payload", "1GiB")}
        with open(self.config, "w") as f:
            f.write(render_toml(server, {pool_name: pool_keys}))
        self._log = open(self.log_path, "wb")
        try:
            self.proc = subprocess.Popen(
                [binary, "serve", "-c", self.config, "--stop-when-stdin-closes"],
                stdin=subprocess.PIPE, stdout=self._log, stderr=subprocess.STDOUT,
                cwd=self.dir, start_new_session=True, close_fds=True)
        except OSError as exc:
            self.stop()
            raise ExecutorStartError("cannot start %s: %s" % (binary, exc))

    def log_tail(self, size=4000):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, 2)
                f.seek(max(0, f.tell() - size))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def wait_listening(self, deadline):
        while True:
            if self.proc.poll() is not None:
                raise ExecutorStartError("bulkhead exited with status %s during start-up"
                                         % self.proc.returncode, self.log_tail())
            try:
                with open(self.log_path, "rb") as f:
                    m = _LISTEN_RE.search(f.read().decode("utf-8", "replace"))
            except OSError:
                m = None
            if m:
                return m.group(1).rstrip(".,;")
            if time.monotonic() > deadline:
                raise ExecutorStartError("bulkhead did not listen within the start timeout",
                                         self.log_tail())
            time.sleep(0.01)

    def stop(self, timeout=DEFAULT_STOP_TIMEOUT):
        if self._stopped:
            return
        self._stopped = True
        proc = self.proc
        if proc is not None:
            try:
                if proc.stdin is not None:
                    proc.stdin.close()   # --stop-when-stdin-closes: drain and exit
            except OSError:
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(timeout)
                except (subprocess.TimeoutExpired, OSError):
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)
                    except OSError:
                        pass
                    proc.wait()
        try:
            self._log.close()
        except Exception:  # noqa: BLE001
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


# -- tasks and dispatch ------------------------------------------------------------------------


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

