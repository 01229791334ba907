"""What both clients share above the wire (``bulkhead._client_core``), driven without sockets."""

import json

import pytest

import bulkhead
from bulkhead._client_core import ClientCore, JobHandleCore, ResultRounds
from bulkhead._h1 import Response


class Core(ClientCore):
    _name = "Core"


class Handle(JobHandleCore):
    _name = "Handle"


Core._handle_class = Handle


def answer(status, body=b"", **headers):
    headers = {k.replace("_", "-").lower(): v for k, v in headers.items()}
    return status, Response(status, "", "HTTP/1.1", headers), body


PENDING = answer(202, b'{"job":"7","state":"running"}', content_type="application/json")
FINAL = answer(200, b"out", x_bulkhead_outcome="ok", x_bulkhead_job="7")


def test_a_call_is_planned_with_its_deadline_and_a_longer_wait():
    core = Core("unix:/run/b.sock", timeout=5)
    path, body, content_type, headers, wait = core._call_plan("faces", "é", None, True)
    assert path == "/v1/pools/faces/jobs" and body == "é".encode() and "text/plain" in content_type
    assert ("X-Bulkhead-Deadline", "5000ms") in headers
    assert ("X-Bulkhead-Allow-Poison", "1") in headers
    assert wait == pytest.approx(7.0)
    assert core._host == "localhost"


def test_a_submit_is_planned_with_its_run_limit_only():
    core = Core("http://[::1]:9000/prefix")
    path, body, _, headers, idempotent = core._submit_plan("a b", {"x": 1}, 2, "k-1", False,
                                                           as_json=True)
    assert path == "/prefix/v1/pools/a%20b/jobs?wait=0" and json.loads(body) == {"x": 1}
    assert headers == [("X-Bulkhead-Timeout", "2000ms"), ("Idempotency-Key", "k-1")]
    assert idempotent and core._host == "[::1]:9000"


def test_result_rounds_end_at_the_final_answer():
    handle = Core("http://h:1").job(7)
    rounds = ResultRounds(handle, timeout=None)
    method, path, wait = rounds.next_poll()
    assert (method, path, wait) == ("GET", "/v1/jobs/7?wait=30s", 32.0)
    rounds.answered(FINAL)
    assert rounds.done and handle._final == FINAL
    assert handle._summary()["outcome"] == "ok"


def test_result_rounds_give_up_when_the_timeout_passed():
    rounds = ResultRounds(Core("http://h:1").job("7"), timeout=0)
    assert rounds.next_poll()[1] == "/v1/jobs/7"          # wait 0: look once
    with pytest.raises(bulkhead.ClientTimeout):
        rounds.answered(PENDING)


def test_an_answer_about_something_else_raises_its_exception():
    rounds = ResultRounds(Core("http://h:1").job("7"), timeout=None)
    rounds.next_poll()
    problem = json.dumps({"status": 404, "error": "unknown_job"}).encode()
    with pytest.raises(bulkhead.ApiError) as info:
        rounds.answered(answer(404, problem, content_type="application/problem+json"))
    assert info.value.status == 404 and not rounds.done


def test_handles_and_clients_name_themselves():
    core = Core("http://h:1")
    assert repr(core) == "Core('http://h:1')"
    assert repr(Handle(core, "7", duplicate=True)) == "Handle(id='7', pool=None, duplicate=True)"
