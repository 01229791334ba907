"""bulkhead.Executor without a daemon: the generated pool config, the binary search, the task
runner called in-process, and that ``import bulkhead`` stays cheap."""

import os
import pickle
import subprocess
import sys

import pytest

from bulkhead import _executor_task as task
from bulkhead import executor as X


def test_batch_defaults_and_handler():
    keys = X.pool_config(3, python="/usr/bin/python3")
    assert keys["handler"] == "bulkhead._executor_task:handle"
    assert keys["preload"] == "bulkhead._executor_task:preload"
    assert keys["workers"] == 3
    assert keys["job_timeout"] == X.NO_TIMEOUT and keys["queue_timeout"] == X.NO_TIMEOUT
    assert keys["retries"] == 1
    assert "max_jobs_strict" not in keys


def test_kwargs_map_to_pool_keys():
    keys = X.pool_config(2, python="/usr/bin/python3", memory_limit="4GiB", max_rss=1 << 30,
                         pids_limit=7000, max_jobs_per_worker=1, profile="tensorflow",
                         threads=4, job_timeout=2.5, hang_after="1m", env={"A": 1},
                         mode="zygote", gpus=[0, 1], retries=0, inherit_env="HF_HOME",
                         init="os.path:join", max_maps=1000)
    assert keys["memory_limit"] == "4GiB"
    assert keys["max_rss"] == 1 << 30
    assert keys["pids_limit"] == 7000
    assert keys["max_jobs"] == 1 and keys["max_jobs_strict"] is True
    assert keys["profile"] == ["tensorflow"]
    assert keys["threads"] == 4
    assert keys["job_timeout"] == "2500000us"
    assert keys["hang_after"] == "1m"
    assert keys["env"]["A"] == "1"
    assert keys["mode"] == "zygote" and keys["gpus"] == [0, 1] and keys["retries"] == 0
    assert keys["inherit_env"] == ["HF_HOME"]
    assert keys["init"] == "os.path:join"
    assert keys["max_maps"] == 1000
    assert X.pool_config(1, max_jobs=3, max_jobs_strict=False)["max_jobs_strict"] is False
    assert X.pool_config(1, max_jobs_per_worker=1, standby=1)["standby"] == 1


def test_preload_goes_through_the_task_runner():
    keys = X.pool_config(1, preload=os.path.join)
    assert keys["preload"] == "bulkhead._executor_task:preload"
    assert keys["env"][task.USER_PRELOAD_ENV] == "posixpath:join"


def test_unknown_and_bad_kwargs():
    with pytest.raises(TypeError, match="memroy_limit"):
        X.pool_config(1, memroy_limit="1GiB")
    with pytest.raises(TypeError):
        X.pool_config(1, pids_limit="lots")
    with pytest.raises(ValueError):
        X.pool_config(1, mode="fork")
    with pytest.raises(ValueError):
        X.pool_config(1, init=lambda: None)
    with pytest.raises(ValueError):
        X.pool_config(1, job_timeout=-1)


def test_rendered_toml_is_what_the_daemon_reads():
    text = X.render_toml({"listen": "unix:/tmp/x.sock", "journal": ""},
                         {"tasks": X.pool_config(1, python="/usr/bin/python3",
                                                 env={"A B": "x\"y"}, main=("path", "/a/b.py"))})
    assert '[pool.tasks]' in text
    assert 'listen = "unix:/tmp/x.sock"' in text
    assert '"A B" = "x\\"y"' in text
    assert '%s = "/a/b.py"' % task.MAIN_PATH_ENV in text


def test_find_binary_order(tmp_path, monkeypatch):
    fake = tmp_path / "bulkhead"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("BULKHEAD_BIN", str(fake))
    assert X.find_binary("/nonexistent") == str(fake)
    monkeypatch.setenv("BULKHEAD_BIN", str(tmp_path / "missing"))
    with pytest.raises(X.ExecutorStartError, match="BULKHEAD_BIN"):
        X.find_binary()
    monkeypatch.delenv("BULKHEAD_BIN")
    assert X.find_binary(str(fake)) == str(fake)


def test_caller_python_path_keeps_user_dirs_not_the_stdlib():
    paths = X.caller_python_path()
    assert os.path.dirname(os.path.dirname(os.path.abspath(task.__file__))) in paths
    assert not any(p.rstrip("/").endswith("/python%d.%d" % sys.version_info[:2]) for p in paths)


def test_describe_call_is_short():
    text = X.describe_call(X.describe_call, ("x" * 500,), {"k": list(range(100))})
    assert text.startswith("bulkhead._executor_dispatch.describe_call('xxx")
    assert len(text) <= 200


class _Ctx(object):
    worker_id = "tasks-1"
    job_id = 7


def _boom(x):
    raise KeyError(x)


def test_runner_in_process_values_errors_and_batches():
    ok = pickle.loads(task.handle(pickle.dumps((task.CALL, divmod, (7, 2), {})), _Ctx()))
    assert ok[0] == "ok" and ok[1] == (3, 1) and ok[2]["worker"] == "tasks-1"
    raised = pickle.loads(task.handle(pickle.dumps((task.CALL, _boom, ("k",), {})), _Ctx()))
    assert raised[0] == "raised" and isinstance(raised[1], KeyError)
    assert "_boom" in raised[2]["traceback"]
    batch = pickle.loads(task.handle(pickle.dumps((task.BATCH, pow, [(2, 3), (3, 2)])), _Ctx()))
    assert batch[1] == [8, 9]
    multi = pickle.loads(task.handle(pickle.dumps((task.MULTI, [
        pickle.dumps((task.CALL, abs, (-1,), {})),
        pickle.dumps((task.CALL, _boom, (1,), {}))])), _Ctx()))
    assert pickle.loads(multi[0])[1] == 1
    assert pickle.loads(multi[1])[0] == "raised"


def test_runner_lets_exhaustion_reach_the_supervisor():
    def no_threads():
        raise RuntimeError("can't start new thread")
    payload = task._dumps((task.CALL, no_threads, (), {}))
    with pytest.raises(RuntimeError, match="can't start new thread"):
        task.handle(payload, _Ctx())


def test_import_bulkhead_stays_cheap():
    code = ("import sys, bulkhead; heavy = [m for m in ('threading', 'subprocess', "
            "'concurrent.futures', 'bulkhead.executor') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                         env={"PYTHONPATH": os.path.dirname(os.path.dirname(task.__file__))})
    assert out.returncode == 0, out.stderr
    assert "bulkhead.executor" not in out.stdout and "subprocess" not in out.stdout
