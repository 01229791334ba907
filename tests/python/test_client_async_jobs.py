"""The Python client's async jobs and AsyncClient against a real daemon."""

import asyncio

import pytest

import bulkhead


def test_submit_and_result_through_the_client(start_daemon, tmp_path):
    d = start_daemon({"a": {"handler": "by_payload", "workers": 1, "retries": 0,
                            "poison_after": 0}},
                     server={"listen": "127.0.0.1:0", "journal": str(tmp_path / "j.db")})
    d.wait_ready("a")
    with bulkhead.Client(d.url) as client:
        handle = client.submit("a", b"hello", idempotency_key="once")
        assert handle.result(timeout=15) == b"hello"
        again = client.submit("a", b"hello", idempotency_key="once")
        assert again.id == handle.id and again.duplicate
        failing = client.submit("a", b"crash")
        with pytest.raises(bulkhead.WorkerCrashed) as info:
            failing.result(timeout=15)
        assert info.value.attempts[0]["signal"] == "SIGSEGV"
        assert client.job(handle.id).result(timeout=5) == b"hello"


def test_async_client_calls_and_submits(start_daemon, tmp_path):
    d = start_daemon({"a": {"handler": "by_payload", "workers": 2, "retries": 0,
                            "poison_after": 0}},
                     server={"listen": "127.0.0.1:0", "journal": str(tmp_path / "j.db")})
    d.wait_ready("a")

    async def scenario():
        async with bulkhead.AsyncClient(d.url) as client:
            assert await client.call("a", b"x") == b"x"
            with pytest.raises(bulkhead.WorkerCrashed):
                await client.call("a", b"crash")
            handle = await client.submit("a", b"later")
            return await handle.result(timeout=15)

    assert asyncio.run(asyncio.wait_for(scenario(), 30)) == b"later"


def test_unknown_job_and_runs_header_on_a_woken_long_poll(start_daemon, tmp_path):
    d = start_daemon({"slow": {"handler": "slow", "workers": 1}},
                     server={"listen": "127.0.0.1:0", "journal": str(tmp_path / "j.db")})
    d.wait_ready("slow")
    with bulkhead.Client(d.url) as client:
        with pytest.raises(bulkhead.UnknownJob):
            client.job("424242").result(timeout=5)
    r = d.http("POST", "/v1/pools/slow/jobs?wait=0", body=b"sleep:0.3")
    woken = d.http("GET", r.headers["location"] + "?wait=10s", timeout=15)
    assert woken.status == 200 and woken.headers["x-bulkhead-runs"] == "1", woken
