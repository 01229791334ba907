"""The clients' views of a real daemon: ``pool(name)``, ``quarantine()`` and ``events()``
(blocking and asyncio), including a stream that follows the daemon across a restart."""

import asyncio
import socket

import pytest

from conftest import wait_until

bulkhead = pytest.importorskip("bulkhead")

POOL = {"handler": "by_payload", "workers": 1, "retries": 0, "poison_after": 1}


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _next_of(stream, kind, pool):
    for event in stream:
        if event.get("kind") == kind and event.get("pool") == pool:
            return event
    raise AssertionError("the stream ended before a %s event of %s" % (kind, pool))


def test_pool_view_quarantine_and_unknown_pool(start_daemon):
    d = start_daemon({"ev": POOL})
    d.wait_ready("ev")
    client = d.client
    assert client.quarantine() == []
    with pytest.raises(bulkhead.WorkerCrashed) as crashed:
        client.call("ev", b"crash")
    assert crashed.value.quarantined
    entries = client.quarantine()
    assert [(e["pool"], e["job"]) for e in entries] == [("ev", crashed.value.job_id)]
    assert entries[0]["attempts"][0]["signal"] == "SIGSEGV"
    d.wait_ready("ev")
    view = client.pool("ev")
    assert view["name"] == "ev" and view["quarantined"] == 1
    assert "history" in view["workers"][0] and "limits" in view
    assert {e["kind"] for e in view["events"]} >= {"started", "ready", "crashed"}
    assert "ev" in {p["name"] for p in client.pools()["pools"]}
    with pytest.raises(bulkhead.UnknownPool) as unknown:
        client.pool("no-such-pool")
    assert unknown.value.status == 404 and "no-such-pool" in str(unknown.value)


def test_events_follow_new_ones_and_resume_after_the_last_id(start_daemon):
    d = start_daemon({"ev": POOL})
    d.wait_ready("ev")
    with d.client.events(timeout=15) as stream:
        ready = _next_of(stream, "ready", "ev")
        with pytest.raises(bulkhead.WorkerCrashed):
            d.client.call("ev", b"crash")
        crash = _next_of(stream, "crashed", "ev")
        assert "SIGSEGV" in crash["detail"] and crash["id"] > ready["id"]
        last = stream.last_id
    assert last == crash["id"]
    # A new stream from that id starts right after it (ids are consecutive).
    with d.client.events(since=last, timeout=15) as later:
        assert next(later)["id"] == last + 1


def test_events_time_out_when_nothing_happens(start_daemon):
    d = start_daemon({"ev": POOL})
    d.wait_ready("ev")
    stream = d.client.events(since=10 ** 9, timeout=0.5)
    with pytest.raises(bulkhead.ClientTimeout):
        next(stream)
    with pytest.raises(StopIteration):     # a stream that timed out is closed
        next(stream)


def test_without_reconnect_the_iteration_ends_with_the_daemon(start_daemon):
    d = start_daemon({"ev": POOL})
    d.wait_ready("ev")
    stream = d.client.events(timeout=20, reconnect=False)
    _next_of(stream, "ready", "ev")
    assert d.stop() == 0
    rest = list(stream)            # ends (no error, no reconnect) once the daemon closed it
    assert all(e["kind"] != "started" for e in rest), rest
    with pytest.raises(StopIteration):
        next(stream)


def test_events_of_a_daemon_that_is_not_there_fail_at_once():
    client = bulkhead.Client("http://127.0.0.1:%d" % _free_port())
    with pytest.raises(bulkhead.TransportError) as caught:
        next(client.events(timeout=5))
    assert "cannot follow events" in str(caught.value)


@pytest.mark.limit(90)
def test_events_follow_the_daemon_across_a_restart(start_daemon):
    d = start_daemon({"ev": POOL}, server={"listen": "127.0.0.1:%d" % _free_port()})
    d.wait_ready("ev")
    old_pid = d.idle_pids("ev")[0]
    with d.client.events(timeout=30) as stream:
        _next_of(stream, "ready", "ev")
        assert d.stop() == 0
        d.start()
        # The new daemon's ids start over at 1; its first events are still seen.
        ready = _next_of(stream, "ready", "ev")
        assert ready["id"] <= 3
    new_pids = d.wait_ready("ev")
    assert old_pid not in {w["pid"] for w in new_pids}


def test_async_client_views_and_events(start_daemon):
    d = start_daemon({"ev": POOL})
    d.wait_ready("ev")

    async def main():
        async with bulkhead.AsyncClient(d.url) as client:
            with pytest.raises(bulkhead.UnknownPool):
                await client.pool("nope")
            assert (await client.pool("ev"))["name"] == "ev"
            async with client.events(timeout=15) as stream:
                kinds = []
                async for event in stream:
                    kinds.append(event["kind"])
                    if event["kind"] == "ready":
                        break
                with pytest.raises(bulkhead.WorkerCrashed):
                    await client.call("ev", b"crash")
                async for event in stream:
                    if event["kind"] == "crashed":
                        break
            assert kinds[0] == "started"
            entries = await client.quarantine()
            assert [e["pool"] for e in entries] == ["ev"]
            return event

    crash = asyncio.run(main())
    assert crash["pool"] == "ev" and "SIGSEGV" in crash["detail"]
    wait_until(lambda: d.idle_pids("ev"), 20, "the replacement worker")
