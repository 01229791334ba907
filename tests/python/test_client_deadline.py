"""The Python clients against the real daemon: $BULKHEAD_URL, deadlines (X-Bulkhead-Deadline)
ending in JobTimedOut with its stage, a payload over max_request_body, and quarantined crashes."""

import asyncio
import os
import subprocess
import threading

import pytest

from conftest import PYTHON, REPO, wait_until

bulkhead = pytest.importorskip("bulkhead")


def test_bulkhead_url_is_the_default(daemon):
    code = ("import asyncio, bulkhead\n"
            "print(bulkhead.Client().call('echo', b'via env').decode())\n"
            "async def main():\n"
            "    async with bulkhead.AsyncClient() as c:\n"
            "        print((await c.call('echo', b'async via env')).decode())\n"
            "asyncio.run(main())\n")
    env = dict(os.environ, BULKHEAD_URL=daemon.url, PYTHONPATH=os.path.join(REPO, "python"))
    p = subprocess.run([PYTHON, "-c", code], env=env, capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr.decode()
    assert p.stdout.decode().split("\n")[:2] == ["via env", "async via env"]


def test_payload_over_max_request_body_is_payload_too_large(daemon):
    big = b"x" * (100 << 20)          # the default max_request_body is 64 MiB
    client = daemon.new_client()
    with pytest.raises(bulkhead.PayloadTooLarge) as info:
        client.call("echo", big)
    assert info.value.status == 413 and info.value.error == "payload_too_large"
    assert client.call("echo", b"small") == b"small"

    async def main():
        async with bulkhead.AsyncClient(daemon.url) as aclient:
            with pytest.raises(bulkhead.PayloadTooLarge):
                await aclient.call("echo", big)
            return await aclient.call("echo", b"after")
    assert asyncio.run(main()) == b"after"


# -- deadlines (server side: X-Bulkhead-Deadline, "stage") ---------------------------------------


@pytest.fixture
def slow(start_daemon):
    d = start_daemon({"slow": {"handler": "slow", "workers": 1, "job_timeout": "60s"}})
    d.wait_ready("slow")
    return d


def test_deadline_passed_while_running_is_timed_out_running(slow):
    with pytest.raises(bulkhead.JobTimedOut) as info:
        slow.client.call("slow", b"sleep:30", timeout=1.5)
    exc = info.value
    assert exc.status == 504 and exc.stage == "running", exc.problem
    assert "slow" in exc.attempts[-1]["stacks"]      # taken before the kill


def test_deadline_passed_in_the_queue_is_timed_out_queued(slow):
    # The only worker is held busy; the job waits in the queue until its deadline passes.
    busy = []
    holder = threading.Thread(target=lambda: busy.append(
        slow.new_client().call("slow", b"wait:release")), daemon=True)
    holder.start()
    wait_until(lambda: slow.pool_status("slow")["in_flight"] == 1, 20, "the worker to be busy")
    try:
        with pytest.raises(bulkhead.JobTimedOut) as info:
            slow.client.call("slow", b"never runs", timeout=0.5)
        exc = info.value
        assert exc.status == 504 and exc.stage == "queued", exc.problem
        assert exc.attempts == []
    finally:
        open(os.path.join(slow.scratch, "release"), "w").close()
        holder.join(30)
    assert busy == [b"released"]


def test_async_client_gets_the_stage_too(slow):
    async def main():
        async with bulkhead.AsyncClient(slow.url) as client:
            with pytest.raises(bulkhead.JobTimedOut) as info:
                await client.call("slow", b"sleep:30", timeout=1.5)
            return info.value
    assert asyncio.run(main()).stage == "running"


# -- quarantine (server side: the real outcome, "quarantined": true) -----------------------------


def test_a_crash_that_quarantines_is_worker_crashed_and_a_resubmission_poisoned(start_daemon):
    d = start_daemon({"p": {"handler": "by_payload", "workers": 2, "retries": 2,
                            "poison_after": 2}})
    d.wait_ready("p", 2)
    with pytest.raises(bulkhead.WorkerCrashed) as crashed:
        d.client.call("p", b"crash")
    assert crashed.value.quarantined is True, crashed.value.problem
    assert len(crashed.value.attempts) == 2
    with pytest.raises(bulkhead.Poisoned) as refused:
        d.client.call("p", b"crash")
    assert refused.value.quarantined is True
    d.wait_ready("p", 2)
    with pytest.raises(bulkhead.WorkerCrashed):     # run anyway: it crashes again
        d.client.call("p", b"crash", allow_poison=True)
    d.wait_ready("p", 2)
    assert d.client.call("p", b"fine") == b"fine"
