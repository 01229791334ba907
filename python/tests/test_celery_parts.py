"""``bulkhead.celery`` without a broker or a daemon: its exceptions through Celery's result
serialization, where its settings come from, and how a worker finds a task's body."""

import importlib
import pickle
import sys
import textwrap

import pytest

celery = pytest.importorskip("celery")

import bulkhead  # noqa: E402
import bulkhead.celery as bridge  # noqa: E402
from celery.backends.base import BaseBackend  # noqa: E402

CRASH = {"type": "https://bulkhead.dev/problems/crashed", "status": 502, "outcome": "crashed",
         "detail": "worker tasks-2 (pid 42) killed by SIGSEGV", "job": "7", "pool": "tasks",
         "attempts": [{"attempt": 1, "signal": "SIGSEGV", "signal_number": 11,
                       "stderr_tail": "native code about to read address 0\n"}],
         "quarantined": False}


def nothing():
    """A task body for tests that never run it."""


@pytest.fixture
def app():
    app = celery.Celery("parts", set_as_current=False)
    yield app
    app.close()


@pytest.mark.parametrize("serializer", ["json", "pickle"])
def test_a_crash_survives_celerys_result_serialization_with_its_evidence(app, serializer):
    app.conf.result_accept_content = [serializer]
    backend = BaseBackend(app, serializer=serializer)
    task = app.task(name="t.crash", base=bridge.IsolatedTask)(nothing)
    sent = bridge._for_celery(bulkhead.WorkerCrashed(CRASH, 502), task)
    stored = backend.decode(backend.encode(backend.prepare_exception(sent)))
    got = backend.exception_to_python(stored)
    assert type(got) is bulkhead.WorkerCrashed
    assert got.last_attempt["signal"] == "SIGSEGV" and got.status == 502
    assert got.last_attempt["stderr_tail"] == "native code about to read address 0\n"
    assert got.problem["celery_task"] == {"name": "t.crash", "id": None}
    assert "[celery task t.crash None]" in got.detail and "SIGSEGV" in str(got)


@pytest.mark.parametrize("exc", [
    bulkhead.HandlerError({"outcome": "handler_error", "attempts": [
        {"error": {"type": "KeyError", "message": "'x'", "traceback": "Traceback ..."}}]}, 422),
    bulkhead.JobTimedOut({"outcome": "timed_out", "stage": "running"}, 504),
    bulkhead.Overloaded({"outcome": "overloaded"}, 429, 2.0),
    bulkhead.TransportError("cannot connect", True),
    bulkhead.ResponseTooLarge("too large", True, 1024),
])
def test_every_exception_the_bridge_raises_pickles_and_rebuilds_from_its_args(exc):
    again = pickle.loads(pickle.dumps(exc))
    rebuilt = type(exc)(*exc.args)
    for copy in (again, rebuilt):
        assert type(copy) is type(exc) and str(copy) == str(exc)
    if isinstance(exc, bulkhead.HandlerError):
        assert rebuilt.error_type == "KeyError"
    if isinstance(exc, bulkhead.JobTimedOut):
        assert rebuilt.stage == "running"


def test_settings_come_from_the_task_else_from_the_apps_config(app):
    app.conf.bulkhead_url = "unix:/run/bulkhead.sock"
    app.conf.bulkhead_pool = "celery"
    app.conf.bulkhead_options = {"memory_limit": "4GiB"}
    plain = app.task(name="t.plain", base=bridge.IsolatedTask)(nothing)
    assert plain.bulkhead_settings() == ("unix:/run/bulkhead.sock", "celery",
                                         {"memory_limit": "4GiB"})
    own = bridge.isolated(app, name="t.own", url="http://127.0.0.1:9", pool="gpu",
                          options={"max_workers": 2}, acks_late=True)(nothing)
    assert own.bulkhead_settings() == ("http://127.0.0.1:9", "gpu", {"max_workers": 2})
    assert own.acks_late is True and isinstance(own, bridge.IsolatedTask)


def test_pool_keys_cannot_be_given_for_a_running_daemons_pool():
    with pytest.raises(TypeError, match="memory_limit"):
        bridge.executor_for("http://127.0.0.1:9", "p", {"memory_limit": "1GiB"})
    assert not bridge._executors


def test_a_worker_runs_the_body_found_by_module_and_name_not_the_task_again(tmp_path,
                                                                           monkeypatch):
    (tmp_path / "parts_tasks.py").write_text(textwrap.dedent('''
        from celery import Celery
        import bulkhead.celery

        app = Celery("parts_tasks", set_as_current=False)
        calls = []

        @app.task(base=bulkhead.celery.IsolatedTask)
        def add(x, y):
            calls.append("add")
            return x + y

        @app.task(base=bulkhead.celery.IsolatedTask, bind=True, name="custom.name")
        def whoami(self, greeting):
            return "%s from %s" % (greeting, self.name)
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        module = importlib.import_module("parts_tasks")
        run = type(module.add._get_current_object()).run
        assert bridge.run_task_body(run.__module__, module.add.name, run.__qualname__,
                                    (2, 3), {}) == 5
        assert module.calls == ["add"]
        bound = type(module.whoami._get_current_object()).run
        assert bridge.run_task_body(bound.__module__, "custom.name", bound.__qualname__,
                                    ("hi",), {}) == "hi from custom.name"
    finally:
        sys.modules.pop("parts_tasks", None)
