"""The Python client against the real daemon: results, and one exception class per outcome."""

import pytest

bulkhead = pytest.importorskip("bulkhead")


@pytest.fixture
def d(start_daemon):
    return start_daemon({
        "echo": {"handler": "echo", "workers": 2},
        "dict": {"handler": "echo_dict"},
        "text": {"handler": "echo_text"},
        "segv": {"handler": "segfault"},
        "raise": {"handler": "raise_value_error"},
        "slow": {"handler": "slow", "job_timeout": "500ms"},
    })


def test_call_returns_bytes(d):
    assert d.client.call("echo", b"abc") == b"abc"


def test_call_json(d):
    result = d.client.call_json("dict", {"k": 1})
    assert isinstance(result, dict)
    assert result["len"] > 0


def test_text_result(d):
    out = d.client.call("text", b"hi")
    assert out in (b"hi", "hi")


def test_pools_and_health(d):
    pools = d.client.pools()
    names = {p["name"] for p in (pools["pools"] if isinstance(pools, dict) else pools)}
    assert {"echo", "dict", "segv"} <= names
    health = d.client.health()
    assert health in (True, {"status": "ok"}) or getattr(health, "get", lambda k: None)(
        "status") == "ok"


def test_crash_raises_worker_crashed(d):
    with pytest.raises(bulkhead.WorkerCrashed) as ei:
        d.client.call("segv", b"x")
    exc = ei.value
    assert isinstance(exc, bulkhead.JobFailed)
    assert exc.outcome == "crashed"
    assert exc.status == 502
    assert exc.attempts[-1]["signal"] == "SIGSEGV"
    assert exc.problem["pool"] == "segv"
    assert "SIGSEGV" in str(exc)


def test_handler_error_raises_handler_error(d):
    with pytest.raises(bulkhead.HandlerError) as ei:
        d.client.call("raise", b"x")
    exc = ei.value
    assert exc.status == 422
    assert len(exc.attempts) == 1
    assert exc.attempts[-1]["error"]["type"] == "ValueError"


def test_timeout_raises_job_timed_out(d):
    with pytest.raises(bulkhead.JobTimedOut) as ei:
        d.client.call("slow", b"sleep:10")
    assert ei.value.status == 504
    assert "slow" in ei.value.attempts[-1]["stacks"]


def test_unknown_pool_raises_unknown_pool(d):
    with pytest.raises(bulkhead.UnknownPool) as ei:
        d.client.call("nope", b"x")
    assert ei.value.status == 404


def test_unix_socket_url(start_daemon):
    d = start_daemon({"echo": {"handler": "echo"}}, unix=True)
    c = bulkhead.Client(d.url)
    assert c.call("echo", b"via unix") == b"via unix"
