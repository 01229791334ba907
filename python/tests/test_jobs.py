"""Async (journaled) jobs with the blocking client: Client.submit / Client.job / JobHandle,
against the in-thread fake of docs/api.md's job endpoints (jobs_fake.py)."""

import json
import threading
import time

import pytest

import bulkhead
from bulkhead import client as C
import jobs_fake
from jobs_fake import OUTCOMES, WAIT, api_error, failure, ok, problem_doc

jobs_daemon = jobs_fake.jobs_daemon                # the fixtures
jobs_unix_daemon = jobs_fake.jobs_unix_daemon

SUBMIT = "/v1/pools/faces/jobs"


def in_thread(fn):
    """Runs ``fn`` in a thread; ``join()`` returns its result or raises its exception."""
    box = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    class Joined(object):
        @staticmethod
        def join():
            thread.join(WAIT)
            assert not thread.is_alive(), "client thread still blocked after %s s" % WAIT
            if "error" in box:
                raise box["error"]
            return box["value"]
    return Joined


# -- submit ------------------------------------------------------------------------------------


def test_submit_returns_a_handle_at_once(jobs_daemon):
    with bulkhead.Client(jobs_daemon.url) as client:
        handle = client.submit("faces", b"abc")
    assert isinstance(handle, bulkhead.JobHandle)
    assert handle.id == "1" and handle.pool == "faces" and handle.duplicate is False
    assert handle.location == "/v1/jobs/1"
    req = jobs_daemon.requests[0]
    assert (req.method, req.target) == ("POST", SUBMIT + "?wait=0")
    assert req.body == b"abc"
    assert req.headers["Content-Type"] == "application/octet-stream"
    assert "Idempotency-Key" not in req.headers and "X-Bulkhead-Timeout" not in req.headers
    job = jobs_daemon.jobs["1"]
    assert job.payload == b"abc" and not job.finished


def test_submit_sends_timeout_and_idempotency_key(jobs_daemon):
    with bulkhead.Client(jobs_daemon.url, timeout=2) as client:
        client.submit("faces", "héllo", idempotency_key="req-42")
        client.submit("faces", b"x", timeout=0.25)
    first, second = jobs_daemon.requests
    assert first.headers["Idempotency-Key"] == "req-42"
    assert first.headers["X-Bulkhead-Timeout"] == "2000ms"        # the client's default
    assert first.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert first.body == "héllo".encode()
    assert second.headers["X-Bulkhead-Timeout"] == "250ms"


def test_same_idempotency_key_is_the_same_job(jobs_daemon):
    with bulkhead.Client(jobs_daemon.url) as client:
        first = client.submit("faces", b"x", idempotency_key="k1")
        again = client.submit("faces", b"x", idempotency_key="k1")
        other = client.submit("faces", b"x", idempotency_key="k2")
    assert first.id == again.id and other.id != first.id
    assert (first.duplicate, again.duplicate, other.duplicate) == (False, True, False)
    assert len(jobs_daemon.jobs) == 2


@pytest.mark.parametrize("key", ["", " lead", "new\nline", "tab\t", "é", "x" * 1025, 42])
def test_bad_idempotency_keys_are_refused_locally(jobs_daemon, key):
    with bulkhead.Client(jobs_daemon.url) as client:
        with pytest.raises(ValueError):
            client.submit("faces", b"x", idempotency_key=key)
    assert jobs_daemon.requests == []


def test_submit_json_and_result_json(jobs_daemon):
    jobs_daemon.on_submit = lambda job: jobs_daemon.finish(
        job.id, ok(json.dumps({"got": json.loads(job.payload)}).encode(), "application/json"))
    with bulkhead.Client(jobs_daemon.url) as client:
        handle = client.submit_json("faces", {"x": [1, 2]})
        assert handle.result_json(timeout=WAIT) == {"got": {"x": [1, 2]}}
    assert jobs_daemon.requests[0].headers["Content-Type"] == "application/json"


def test_submit_refusals_raise_like_call(jobs_daemon):
    jobs_daemon.overrides[("POST", "/v1/pools/slow/jobs?wait=0")] = lambda req: failure(
        "overloaded", 429, headers={"Retry-After": "3"})
    with bulkhead.Client(jobs_daemon.url) as client:
        with pytest.raises(bulkhead.UnknownPool):
            client.submit("nope", b"x")
        with pytest.raises(bulkhead.Overloaded) as info:
            client.submit("slow", b"x")
        assert info.value.retry_after == 3.0
        with pytest.raises(ValueError):
            client.submit("", b"x")
        with pytest.raises(TypeError):
            client.submit("faces", object())


def test_submit_answered_synchronously_gives_a_finished_handle(jobs_daemon):
    # A daemon that ignores wait=0 runs the job and answers 200: the result is not lost.
    jobs_daemon.overrides[("POST", SUBMIT + "?wait=0")] = lambda req: ok(
        b"ran", **{"X-Bulkhead-Job": "77"})
    with bulkhead.Client(jobs_daemon.url) as client:
        handle = client.submit("faces", b"x")
        assert handle.id == "77"
        assert handle.result() == b"ran"
        assert handle.status()["state"] == "finished"
    assert len(jobs_daemon.requests) == 1


def test_202_without_a_job_id_is_an_api_error(jobs_daemon):
    jobs_daemon.overrides[("POST", SUBMIT + "?wait=0")] = lambda req: (
        202, {"Content-Type": "application/json"}, b"{}")
    with bulkhead.Client(jobs_daemon.url) as client:
        with pytest.raises(bulkhead.ApiError):
            client.submit("faces", b"x")


def test_job_id_from_location_when_the_body_lacks_it(jobs_daemon):
    jobs_daemon.overrides[("POST", SUBMIT + "?wait=0")] = lambda req: (
        202, {"Location": "/v1/jobs/9"}, b"")
    with bulkhead.Client(jobs_daemon.url) as client:
        assert client.submit("faces", b"x").id == "9"


# -- result ------------------------------------------------------------------------------------


def test_result_long_polls_until_the_job_finishes(jobs_daemon):
    with bulkhead.Client(jobs_daemon.url) as client:
        handle = client.submit("faces", b"x")
        waiter = in_thread(handle.result)
        jobs_daemon.wait_polling(1)              # the client is blocked in a long-poll
        jobs_daemon.finish(handle.id, ok(b"done"))
        assert waiter.join() == b"done"
    polls = jobs_daemon.requests_to("GET", "/v1/jobs/1")
    assert [p.target for p in polls] == ["/v1/jobs/1?wait=30s"]   # one poll, capped at 30 s
    assert {r.connection for r in jobs_daemon.requests} == {1}     # one keep-alive connection


def test_result_is_kept_once_read(jobs_daemon):
    jobs_daemon.on_submit = lambda job: jobs_daemon.finish(job.id, ok(b"once"))
    with bulkhead.Client(jobs_daemon.url) as client:
        handle = client.submit("faces", b"x")
        assert handle.result() == b"once"
        assert handle.result() == b"once"
        assert handle.status() == {"job": "1", "state": "finished", "outcome": "ok",
                                   "http_status": 200, "runs": 1}
    assert len(jobs_daemon.requests_to("GET", "/v1/jobs/1")) == 1


def test_result_polls_again_after_an_empty_round(jobs_daemon):
    with bulkhead.Client(jobs_daemon.url) as client:
        client.max_poll_wait = 0.05
        handle = client.submit("faces", b"x")
        waiter = in_thread(handle.result)
        jobs_daemon.wait_requests(4)             # the submit and three empty 50 ms rounds
        jobs_daemon.finish(handle.id, ok(b"late"))
        assert waiter.join() == b"late"
    polls = jobs_daemon.requests_to("GET", "/v1/jobs/1")
    assert len(polls) >= 3
    assert all(p.query["wait"] == "50ms" for p in polls)


def test_result_timeout_leaves_the_job_running(jobs_daemon):
    with bulkhead.Client(jobs_daemon.url) as client:
        handle = client.submit("faces", b"x")
        started = time.monotonic()
        with pytest.raises(bulkhead.ClientTimeout) as info:
            handle.result(timeout=0.2)
        assert time.monotonic() - started < WAIT
        assert info.value.job_may_have_run and "keeps running" in str(info.value)
        polls = jobs_daemon.requests_to("GET", "/v1/jobs/1")
        assert polls and all(_ms(p.query["wait"]) <= 200 for p in polls)
        assert handle.status()["state"] == "queued"
        # and it can be waited for again
        jobs_daemon.finish(handle.id, ok(b"later"))
        assert handle.result(timeout=WAIT) == b"later"


def _ms(value):
    return int(value[:-2]) if value.endswith("ms") else int(value[:-1]) * 1000


def test_result_timeout_zero_looks_once(jobs_daemon):
    with bulkhead.Client(jobs_daemon.url) as client:
        handle = client.submit("faces", b"x")
        with pytest.raises(bulkhead.ClientTimeout):
            handle.result(timeout=0)
    assert [p.target for p in jobs_daemon.requests_to("GET", "/v1/jobs/1")] == ["/v1/jobs/1"]


@pytest.mark.parametrize("bad", [-1, float("nan"), "5", True])
def test_bad_result_timeouts(jobs_daemon, bad):
    with bulkhead.Client(jobs_daemon.url) as client:
        handle = client.job("1")
        with pytest.raises((ValueError, TypeError)):
            handle.result(timeout=bad)
    assert jobs_daemon.requests == []


def test_a_daemon_that_does_not_long_poll_is_not_flooded(jobs_daemon):
    jobs_daemon.honour_wait = False              # every poll answers 202 at once
    with bulkhead.Client(jobs_daemon.url) as client:
        handle = client.submit("faces", b"x")
        with pytest.raises(bulkhead.ClientTimeout):
            handle.result(timeout=0.5)
    polls = jobs_daemon.requests_to("GET", "/v1/jobs/1")
    assert 1 <= len(polls) <= 20


def test_a_zero_max_poll_wait_does_not_spin(jobs_daemon):
    with bulkhead.Client(jobs_daemon.url) as client:
        client.max_poll_wait = 0
        handle = client.submit("faces", b"x")
        with pytest.raises(bulkhead.ClientTimeout):
            handle.result(timeout=0.3)
    polls = jobs_daemon.requests_to("GET", "/v1/jobs/1")
    assert 1 <= len(polls) <= 20 and all(p.target == "/v1/jobs/1" for p in polls)


@pytest.mark.parametrize("outcome, status, cls, headers", OUTCOMES)
def test_result_raises_exactly_what_call_raises(jobs_daemon, outcome, status, cls, headers):
    attempt = {"attempt": 1, "worker": "faces-2", "pid": 4242, "outcome": outcome,
               "stderr_tail": "boom\n",
               "error": {"type": "ValueError", "message": "bad", "traceback": "Traceback\n"}}
    answer = failure(outcome, status, headers=headers, attempts=[attempt])
    jobs_daemon.on_submit = lambda job: jobs_daemon.finish(job.id, answer)
    with bulkhead.Client(jobs_daemon.url) as client:
        with pytest.raises(cls) as via_call:
            client.call("faces", b"x")
        handle = client.submit("faces", b"x")
        with pytest.raises(cls) as via_result:
            handle.result(timeout=WAIT)
        assert handle.status()["outcome"] == outcome
        assert handle.status()["http_status"] == status
    a, b = via_call.value, via_result.value
    assert type(a) is type(b)
    assert str(a) == str(b)
    assert (a.status, a.outcome, a.attempts, a.retry_after) == \
        (b.status, b.outcome, b.attempts, b.retry_after)


def test_outcome_header_is_used_when_the_problem_lacks_it(jobs_daemon):
    doc = problem_doc("crashed", 502)
    del doc["outcome"]
    answer = (502, {"Content-Type": "application/problem+json", "X-Bulkhead-Outcome": "crashed"},
              json.dumps(doc).encode())
    jobs_daemon.on_submit = lambda job: jobs_daemon.finish(job.id, answer)
    with bulkhead.Client(jobs_daemon.url) as client:
        handle = client.submit("faces", b"x")
        with pytest.raises(bulkhead.WorkerCrashed):
            handle.result(timeout=WAIT)
        assert handle.status()["outcome"] == "crashed"


# -- status ------------------------------------------------------------------------------------


def test_status_of_a_pending_job_does_not_wait(jobs_daemon):
    with bulkhead.Client(jobs_daemon.url) as client:
        handle = client.submit("faces", b"x")
        assert handle.status() == {"job": "1", "state": "queued"}
        jobs_daemon.set_state("1", "running", runs=2)     # started again after a restart
        assert handle.status() == {"job": "1", "state": "running", "runs": 2}
    assert [p.target for p in jobs_daemon.requests_to("GET", "/v1/jobs/1")] == \
        ["/v1/jobs/1", "/v1/jobs/1"]
    assert jobs_daemon.polling == 0


def test_status_of_a_failed_job_does_not_raise(jobs_daemon):
    with bulkhead.Client(jobs_daemon.url) as client:
        handle = client.submit("faces", b"x")
        jobs_daemon.finish("1", failure("crashed", 502))
        assert handle.status() == {"job": "1", "state": "finished", "outcome": "crashed",
                                   "http_status": 502, "runs": 1}
        with pytest.raises(bulkhead.WorkerCrashed):
            handle.result()


# -- cancel ------------------------------------------------------------------------------------


def test_cancel_a_running_job(jobs_daemon):
    with bulkhead.Client(jobs_daemon.url) as client:
        handle = client.submit("faces", b"x")
        assert handle.cancel() is True
        with pytest.raises(bulkhead.Cancelled) as info:
            handle.result(timeout=WAIT)
        assert info.value.status == 409
        assert handle.cancel() is False              # already finished
    deletes = jobs_daemon.requests_to("DELETE", "/v1/jobs/1")
    assert len(deletes) == 2


def test_cancel_wakes_a_waiting_result(jobs_daemon):
    with bulkhead.Client(jobs_daemon.url) as waiting_client, \
            bulkhead.Client(jobs_daemon.url) as other:
        handle = waiting_client.submit("faces", b"x")
        waiter = in_thread(handle.result)
        jobs_daemon.wait_polling(1)
        assert other.job(handle.id).cancel() is True    # another thread, its own client
        with pytest.raises(bulkhead.Cancelled):
            waiter.join()


def test_cancel_of_a_finished_job_is_false(jobs_daemon):
    jobs_daemon.on_submit = lambda job: jobs_daemon.finish(job.id, ok())
    with bulkhead.Client(jobs_daemon.url) as client:
        assert client.submit("faces", b"x").cancel() is False


# -- handles for ids -----------------------------------------------------------------------------


def test_job_handle_for_an_existing_id(jobs_daemon):
    job = jobs_daemon.add_job(state="running")
    jobs_daemon.finish(job.id, ok(b"from elsewhere"))
    with bulkhead.Client(jobs_daemon.url) as client:
        handle = client.job(job.id)
        assert handle.pool is None and handle.duplicate is False
        assert handle.result() == b"from elsewhere"
        assert client.job(int(job.id)).id == job.id
    assert jobs_daemon.requests[0].target == "/v1/jobs/%s?wait=30s" % job.id


def test_unknown_and_malformed_job_ids(jobs_daemon):
    with bulkhead.Client(jobs_daemon.url) as client:
        for call in (lambda h: h.result(timeout=1), lambda h: h.status(), lambda h: h.cancel()):
            with pytest.raises(bulkhead.ApiError) as info:
                call(client.job("999"))
            assert info.value.status == 404 and info.value.error == "unknown_job"
            assert not isinstance(info.value, bulkhead.JobFailed)
        with pytest.raises(bulkhead.BadRequest) as info:
            client.job("not a number/..").status()
        assert info.value.status == 400
        for bad in ("", None, 1.5):
            with pytest.raises(ValueError):
                client.job(bad)
    # ids are quoted into the path
    assert jobs_daemon.requests[-1].path == "/v1/jobs/not%20a%20number%2F.."


def test_sync_failures_can_be_read_back_by_job_id(jobs_daemon):
    jobs_daemon.on_submit = lambda job: jobs_daemon.finish(
        job.id, failure("crashed", 502, job=job.id))
    with bulkhead.Client(jobs_daemon.url) as client:
        with pytest.raises(bulkhead.WorkerCrashed) as info:
            client.call("faces", b"x")
        with pytest.raises(bulkhead.WorkerCrashed):
            client.job(info.value.job_id).result(timeout=WAIT)


# -- transport -----------------------------------------------------------------------------------


def test_submit_without_key_is_never_resent(jobs_daemon):
    def lose_answer(req):
        jobs_daemon.handle_default(req)   # the job is journaled ...
        return None                       # ... and the answer lost
    jobs_daemon.overrides[("POST", SUBMIT + "?wait=0")] = lose_answer
    with bulkhead.Client(jobs_daemon.url) as client:
        with pytest.raises(bulkhead.TransportError) as info:
            client.submit("faces", b"x")
    assert info.value.job_may_have_run
    assert len(jobs_daemon.jobs) == 1 and len(jobs_daemon.requests) == 1


def test_submit_with_key_is_resent_once_and_finds_the_same_job(jobs_daemon):
    answers = []

    def lose_first_answer(req):
        answer = jobs_daemon.handle_default(req)
        answers.append(answer)
        return None if len(answers) == 1 else answer
    jobs_daemon.overrides[("POST", SUBMIT + "?wait=0")] = lose_first_answer
    with bulkhead.Client(jobs_daemon.url) as client:
        handle = client.submit("faces", b"x", idempotency_key="k")
    assert handle.id == "1" and handle.duplicate is True
    assert len(jobs_daemon.jobs) == 1 and len(jobs_daemon.requests) == 2


def test_polls_are_retried_once_after_a_lost_answer(jobs_daemon):
    lost = []

    def flaky(req):
        if not lost:
            lost.append(req)
            return None
        return jobs_daemon.handle_default(req)
    job = jobs_daemon.add_job()
    jobs_daemon.finish(job.id, ok(b"r"))
    jobs_daemon.overrides[("GET", "/v1/jobs/1")] = flaky
    with bulkhead.Client(jobs_daemon.url) as client:
        assert client.job("1").status()["outcome"] == "ok"
    assert len(lost) == 1 and len(jobs_daemon.requests) == 2


def test_unix_socket(jobs_unix_daemon):
    with bulkhead.Client(jobs_unix_daemon.url) as client:
        handle = client.submit("faces", b"x", idempotency_key="u")
        waiter = in_thread(lambda: handle.result(timeout=WAIT))
        jobs_unix_daemon.wait_polling(1)
        jobs_unix_daemon.finish(handle.id, ok(b"over unix"))
        assert waiter.join() == b"over unix"


def test_poll_socket_timeout_is_the_wait_plus_the_margin(jobs_daemon):
    def stall(req):
        jobs_daemon.release.wait(30)
        return None
    job = jobs_daemon.add_job()
    jobs_daemon.overrides[("GET", "/v1/jobs/%s?wait=50ms" % job.id)] = stall
    with bulkhead.Client(jobs_daemon.url) as client:
        client.timeout_margin = 0.05
        with pytest.raises(bulkhead.ClientTimeout):
            client.job(job.id).result(timeout=0.05)


# -- sans-I/O helpers -----------------------------------------------------------------------------


@pytest.mark.parametrize("seconds, value", [(30, "30s"), (30.0, "30s"), (1.5, "1500ms"),
                                            (0.0001, "1ms"), (0.25, "250ms"), (0, None),
                                            (-1, None)])
def test_wait_param(seconds, value):
    assert C.wait_param(seconds) == value


def test_poll_clock():
    clock = C.PollClock(None, 30)
    assert clock.next_wait() == 30 and clock.after_pending(30, 30) == 0
    assert clock.after_pending(30, 0.001) > 0         # came back early: pause a little
    assert clock.after_pending(30, 0.002) > clock.after_pending(30, 30) == 0
    assert clock.after_pending(0, 0) > 0                # no wait asked: never spin
    assert C.PollClock(0, 30).after_pending(0, 0) is None
    assert C.PollClock(100, 30).next_wait() == 30


def test_cancel_answer_reading():
    class R(object):
        reason = "Conflict"

        def __init__(self, **headers):
            self.headers = headers

        def getheader(self, name, default=None):
            return self.headers.get(name, default)
    status, headers, body = api_error(409, "already_finished")
    assert C.cancel_answer(status, R(**headers), body) is False
    status, headers, body = api_error(404, "unknown_job")
    with pytest.raises(bulkhead.ApiError):
        C.cancel_answer(status, R(**headers), body)
    assert C.cancel_answer(202, R(), b'{"state": "cancelling"}') is True


def test_public_names():
    assert bulkhead.JobHandle is C.JobHandle
    assert "JobHandle" in bulkhead.__all__ and "JobHandle" in dir(bulkhead)
