"""How ``bulkhead.Executor`` describes its private pool: keyword arguments turned into the pool's
TOML keys (with defaults for batch work, not the web daemon's), the TOML text, and what a worker
needs of the caller (its ``sys.path``, its ``__main__``).  Pure: no process is started here."""

import os
import re
import sys
import sysconfig

from . import _executor_task as _task

# The config's word for "no limit" (job_timeout, queue_timeout).
NO_TIMEOUT = "off"


_SIZES = ("memory_limit", "max_rss", "max_payload")
_DURATIONS = ("job_timeout", "queue_timeout", "async_queue_timeout", "startup_timeout",
              "kill_grace", "sample_interval", "max_age", "hang_after")
_INTS = ("pids_limit", "max_threads", "max_maps", "max_fds", "retries", "poison_after",
         "threads", "gpus_per_worker", "max_jobs", "standby")
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
