"""The event stream's sans-I/O layer (``bulkhead._sse``): the format, the answer, resuming."""

import json

import pytest

import bulkhead
from bulkhead._h1 import BadResponse
from bulkhead._sse import (
    RECONNECT_DELAY, RECONNECT_GIVE_UP, RECONNECT_MAX_DELAY, Resume, ServerEvent, SseParser,
    StreamReader, event_dict, events_request)

STREAM_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
               b"Connection: close\r\n\r\n")


def daemon_event(ident, kind, **fields):
    """An event as the daemon writes it (src/api/http_session.h)."""
    data = json.dumps(dict(fields, kind=kind), separators=(",", ":"))
    return ("id: %d\nevent: %s\ndata: %s\n\n" % (ident, kind, data)).encode()


# -- the format -----------------------------------------------------------------------------------


def test_an_event_is_dispatched_at_the_blank_line_with_its_id_type_and_data():
    parser = SseParser()
    assert parser.feed(b"id: 7\nevent: crashed\ndata: {\"a\": 1}\n") == []
    assert parser.feed(b"\n") == [ServerEvent("7", "crashed", '{"a": 1}')]


def test_every_line_end_and_every_split_of_the_bytes_give_the_same_events():
    text = (": keep-alive comment\nid: 1\nevent: started\ndata: one\ndata:two\n\n"
            "data: three\n\nretry: 1500\nid: 2\nevent: ready\ndata: x\n\n")
    want = [ServerEvent("1", "started", "one\ntwo"), ServerEvent("1", "message", "three"),
            ServerEvent("2", "ready", "x")]
    for eol in (b"\n", b"\r\n", b"\r"):
        data = text.encode().replace(b"\n", eol)
        for cut in range(len(data) + 1):
            parser = SseParser()
            got = parser.feed(data[:cut]) + parser.feed(data[cut:])
            assert got == want, (eol, cut)
            assert parser.retry == 1500
        one_by_one = SseParser()
        assert [e for i in range(len(data)) for e in one_by_one.feed(data[i:i + 1])] == want


def test_a_crlf_cut_between_its_two_bytes_is_one_line_end():
    parser = SseParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"\n\r\n") == [ServerEvent(None, "message", "a")]


def test_no_data_no_event_and_the_id_persists_unless_it_holds_nul():
    parser = SseParser()
    assert parser.feed(b"id: 3\nevent: x\n\n") == []       # no data: nothing dispatched
    assert parser.feed(b"data: a\n\n") == [ServerEvent("3", "message", "a")]
    assert parser.feed(b"id: 4\0\ndata: b\n\n") == [ServerEvent("3", "message", "b")]
    assert parser.feed(b"data\n\n") == [ServerEvent("3", "message", "")]   # field, no colon


def test_a_leading_bom_is_dropped_even_when_it_arrives_byte_by_byte():
    parser = SseParser()
    assert parser.feed(b"\xef") == [] and parser.feed(b"\xbb") == []
    assert parser.feed(b"\xbfdata: a\n\n") == [ServerEvent(None, "message", "a")]


def test_a_line_or_event_over_the_bound_is_refused():
    with pytest.raises(BadResponse):
        SseParser(max_event=100).feed(b"data: " + b"x" * 200)
    parser = SseParser(max_event=100)
    with pytest.raises(BadResponse):
        for _ in range(20):
            parser.feed(b"data: " + b"x" * 10 + b"\n")


# -- the answer -----------------------------------------------------------------------------------


def test_the_daemons_stream_read_in_pieces_ends_with_the_connection():
    reader = StreamReader()
    body = daemon_event(1, "started", pool="p", worker="p-1") + daemon_event(2, "ready", pool="p")
    data = STREAM_HEAD + body + b"id: 3\nevent: crashed\ndata: {\"cut"
    events = []
    for i in range(0, len(data), 7):
        events += reader.receive_data(data[i:i + 7])
    assert [e.id for e in events] == ["1", "2"] and not reader.ended
    assert reader.response.status == 200
    assert reader.receive_data(b"") == [] and reader.ended   # the cut-off event is dropped


def test_a_chunked_stream_from_a_proxy_is_de_chunked():
    event = daemon_event(5, "ready", pool="p")
    head = STREAM_HEAD.replace(b"Connection: close\r\n", b"Transfer-Encoding: chunked\r\n")
    body = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (event[:9], event[9:]))
    reader = StreamReader()
    events = []
    data = head + body + b"0\r\n\r\n"
    for i in range(len(data)):
        events += reader.receive_data(data[i:i + 1])
    assert [e.event for e in events] == ["ready"] and reader.ended


def test_an_error_answer_raises_the_clients_exception_once_read_whole():
    problem = json.dumps({"status": 404, "error": "not_found", "detail": "no route"}).encode()
    data = (b"HTTP/1.1 404 Not Found\r\nContent-Type: application/problem+json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(problem) + problem)
    reader = StreamReader()
    assert reader.receive_data(data[:-5]) == []
    with pytest.raises(bulkhead.ApiError) as caught:
        reader.receive_data(data[-5:])
    assert caught.value.status == 404 and caught.value.error == "not_found"


def test_an_interim_answer_is_skipped():
    reader = StreamReader()
    events = reader.receive_data(b"HTTP/1.1 100 Continue\r\n\r\n" + STREAM_HEAD
                                 + daemon_event(1, "ready"))
    assert [e.id for e in events] == ["1"]


@pytest.mark.parametrize("data", [
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
    b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
])
def test_what_is_not_an_event_stream_is_a_bad_response(data):
    with pytest.raises(BadResponse):
        StreamReader().receive_data(data)


def test_a_connection_closed_before_the_head_is_a_bad_response():
    reader = StreamReader()
    reader.receive_data(b"HTTP/1.1 200 OK\r\n")
    with pytest.raises(BadResponse):
        reader.receive_data(b"")


# -- resuming -------------------------------------------------------------------------------------


def test_events_become_dicts_with_their_id_and_kind():
    assert event_dict(ServerEvent("9", "crashed", '{"pool": "p", "kind": "crashed"}')) == \
        {"pool": "p", "kind": "crashed", "id": 9}
    assert event_dict(ServerEvent("x", "message", "hello")) == \
        {"data": "hello", "id": "x", "kind": "message"}


def test_the_next_connection_asks_for_the_events_after_the_last_one_yielded():
    resume = Resume(since=0, timeout=None, now=0.0)
    assert b"GET /v1/events?since=0 HTTP/1.1\r\n" in resume.request("", "h")
    assert b"Last-Event-ID" not in resume.request("", "h")
    taken = resume.take([ServerEvent("4", "started", "{}"), ServerEvent("6", "ready", "{}")], 1.0)
    assert [e["id"] for e in taken] == [4, 6] and resume.since == 6
    request = resume.request("/prefix", "h:1")
    assert b"GET /prefix/v1/events?since=6 HTTP/1.1\r\n" in request
    assert b"Last-Event-ID: 6\r\n" in request and b"Accept: text/event-stream\r\n" in request
    assert events_request("", "h", 0).count(b"\r\n\r\n") == 1


def test_reconnect_waits_double_to_a_cap_and_give_up_without_a_timeout():
    resume = Resume(since=0, timeout=None, now=0.0)
    resume.opened()
    now, delays = 100.0, []
    while True:
        delay = resume.next_try(now)
        if delay is None:
            break
        delays.append(delay)
        now += delay
    assert delays[:3] == [RECONNECT_DELAY, RECONNECT_DELAY * 2, RECONNECT_DELAY * 4]
    assert max(delays) == RECONNECT_MAX_DELAY
    assert RECONNECT_GIVE_UP - RECONNECT_MAX_DELAY <= now - 100.0 <= RECONNECT_GIVE_UP
    resume.opened()                     # a stream again: the waits start over
    assert resume.next_try(now) == RECONNECT_DELAY


def test_with_a_timeout_the_next_events_deadline_bounds_reconnecting_and_events_restart_it():
    resume = Resume(since=0, timeout=1.0, now=0.0)
    assert resume.wait(0.25) == 0.75 and not resume.late(0.5) and resume.late(1.0)
    resume.take([ServerEvent("1", "ready", "{}")], now=0.9)
    assert resume.wait(1.0) == pytest.approx(0.9)
    assert resume.next_try(1.0) == RECONNECT_DELAY
    assert resume.next_try(1.85) is None          # 1.85 + 0.2 is past 1.9


def test_a_servers_retry_field_sets_the_first_wait():
    resume = Resume(since=0, timeout=None, now=0.0)
    resume.take([], 0.0, retry_ms=500)
    resume.opened()
    assert resume.next_try(0.0) == 0.5


@pytest.mark.parametrize("since", [-1, True, "3", 1.5])
def test_since_must_be_an_event_id(since):
    with pytest.raises(ValueError):
        Resume(since, None, 0.0)


def test_a_new_daemon_is_read_from_its_first_event_the_same_one_from_the_last_id():
    resume = Resume(since=0, timeout=None, now=0.0)
    resume.daemon_uptime(5.0, asked=100.0, answered=100.3)     # started in [95.0, 95.3]
    resume.take([ServerEvent("40", "ready", "{}")], 101.0)
    resume.daemon_uptime(10.9, asked=106.0, answered=106.2)    # [95.1, 95.3]: the same one
    assert resume.since == 40
    resume.daemon_uptime(0.4, asked=106.0, answered=106.1)     # [105.6, 105.7]: restarted
    assert resume.since == 0
    resume.daemon_uptime("?", asked=107.0, answered=107.0)     # no uptime: nothing learnt
    assert resume.since == 0
