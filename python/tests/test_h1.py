"""The clients' sans-I/O HTTP/1.1 (``bulkhead._h1``), driven without any socket.

The daemon answers with Content-Length (src/api never sends chunked), but both clients also read
chunked and close-delimited answers from whatever listens at their URL, so those are covered too.
"""

import random

import pytest

from bulkhead import _h1
from bulkhead._h1 import (
    NEED_DATA, Answer, BadResponse, ClientConnection, LocalProtocolError, TooLarge,
    encode_request, host_header, parse_head, read_whole)

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Bulkhead-Outcome: ok\r\n\r\nhello"
CHUNKED = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5;name=value\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: yes\r\n\r\n")
UNTIL_CLOSE = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it"


def sent(method="GET", max_body=None):
    conn = ClientConnection(max_body)
    conn.send_request(method, "/healthz", "localhost")
    return conn


def feed(conn, *pieces, eof=False):
    """Feeds ``pieces`` one by one; the first event that is not NEED_DATA, else NEED_DATA."""
    for piece in pieces:
        conn.receive_data(piece)
        event = conn.next_event()
        if event is not NEED_DATA:
            return event
    if eof:
        conn.receive_data(b"")
        return conn.next_event()
    return NEED_DATA


def bytewise(data):
    return [data[i:i + 1] for i in range(len(data))]


# -- requests ------------------------------------------------------------------------------------


def test_a_request_with_a_small_body_is_one_write():
    parts = encode_request("POST", "/v1/pools/faces/jobs", "127.0.0.1:8787",
                           [("X-Bulkhead-Timeout", "5000ms")], b"abc", "text/plain")
    assert parts == [b"POST /v1/pools/faces/jobs HTTP/1.1\r\nHost: 127.0.0.1:8787\r\n"
                     b"X-Bulkhead-Timeout: 5000ms\r\n"
                     b"Content-Type: text/plain\r\nContent-Length: 3\r\n\r\nabc"]


def test_a_kept_head_is_finished_per_request():
    head = _h1.encode_head("POST", "/j", "h", [("X-Bulkhead-Timeout", "1ms")])
    assert _h1.finish_request(head, b"x", "application/json") == [
        b"POST /j HTTP/1.1\r\nHost: h\r\nX-Bulkhead-Timeout: 1ms\r\n"
        b"Content-Type: application/json\r\nContent-Length: 1\r\n\r\nx"]
    assert _h1.finish_request(head, bytearray(b"yz")) == [   # None: no Content-Type line
        b"POST /j HTTP/1.1\r\nHost: h\r\nX-Bulkhead-Timeout: 1ms\r\nContent-Length: 2\r\n\r\nyz"]
    assert _h1.finish_request(head, b"") == [
        b"POST /j HTTP/1.1\r\nHost: h\r\nX-Bulkhead-Timeout: 1ms\r\nContent-Length: 0\r\n\r\n"]
    with pytest.raises(LocalProtocolError):
        _h1.finish_request(head, b"x", "text/plain\r\nX-Injected: 1")


def test_a_large_body_goes_apart_and_no_body_has_no_length():
    body = b"x" * (_h1.COALESCE + 1)
    head, rest = encode_request("POST", "/j", "h", (), body, "application/octet-stream")
    assert rest is body and head.endswith(b"Content-Length: %d\r\n\r\n" % len(body))
    assert encode_request("GET", "/healthz", "h") == [b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n"]


@pytest.mark.parametrize("method, target, headers", [
    ("GET", "/a b", ()), ("GET", "/a\r\nX: 1", ()), ("GET", "", ()), ("G T", "/", ()),
    ("GET", "/", [("X-Key", "a\r\nInjected: 1")]), ("GET", "/", [("Bad Name", "1")]),
    ("GET", "/", [("X-Key", "\u20ac")]),
])
def test_a_request_that_cannot_be_written_is_refused_here(method, target, headers):
    with pytest.raises(LocalProtocolError) as info:
        encode_request(method, target, "h", headers)
    assert isinstance(info.value, ValueError)


def test_host_header_as_http_client_writes_it():
    assert host_header("127.0.0.1", 8787) == "127.0.0.1:8787"
    assert host_header("example.org", 80) == "example.org"
    assert host_header("::1", 8787) == "[::1]:8787"


def test_one_request_at_a_time():
    conn = sent()
    with pytest.raises(LocalProtocolError):
        conn.send_request("GET", "/", "h")
    with pytest.raises(LocalProtocolError):
        ClientConnection().next_event()     # nothing asked: nothing to read


# -- answers, split at every byte ----------------------------------------------------------------


@pytest.mark.parametrize("data, body, keep", [
    (OK, b"hello", True), (CHUNKED, b"hello world", True), (UNTIL_CLOSE, b"all of it", False),
])
def test_every_split_reads_the_same_answer(data, body, keep):
    for pieces in (bytewise(data), [data], [data[:7], data[7:40], data[40:]]):
        conn = sent()
        answer = feed(conn, *pieces, eof=not keep)
        assert isinstance(answer, Answer)
        assert (answer.response.status, answer.body, answer.keep_alive) == (200, body, keep)
        assert conn.reusable is keep


def test_random_splits_read_the_same_answer():
    rng = random.Random(11)
    for _ in range(200):
        data = rng.choice([OK, CHUNKED])
        cuts = sorted(rng.sample(range(1, len(data)), rng.randint(0, 6)))
        pieces = [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]
        answer = feed(sent(), *pieces)
        assert answer.body in (b"hello", b"hello world"), (11, cuts)


def test_the_answer_waits_for_its_last_byte():
    conn = sent()
    assert feed(conn, OK[:-1]) is NEED_DATA
    assert feed(conn, OK[-1:]).body == b"hello"


def test_headers_are_read_case_insensitively_and_repeats_joined():
    response = parse_head(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 3\r\n"
                          b"X-A: 1\r\nx-a: 2\r\nX-Folded: one\r\n two")
    assert (response.status, response.reason, response.version) == (
        503, "Service Unavailable", "HTTP/1.1")
    assert response.getheader("retry-after") == "3"
    assert response.getheader("X-A") == "1, 2"
    assert response.getheader("X-Folded") == "one two"
    assert response.getheader("Missing", "d") == "d"


def test_names_seen_before_are_still_read_strictly():
    # Checked names are remembered (the daemon repeats the same ones); a line that only looks
    # like one of them is still refused, and a peer cannot grow the memory without bound.
    parse_head(b"HTTP/1.1 200 OK\r\nX-Seen: 1")
    for bad in (b"X-Seen", b" X-Seen: 1", b"X-Seen : 1"):
        with pytest.raises(BadResponse):
            parse_head(b"HTTP/1.1 200 OK\r\n" + bad)
    assert parse_head(b"HTTP/1.1 200 OK\r\nx-seen:  2 \r\nX-Seen: 3").getheader("x-seen") == "2, 3"
    for i in range(2 * _h1._NAMES_MAX):
        parse_head(b"HTTP/1.1 200 OK\r\nX-N%d: 1" % i)
    assert len(_h1._NAMES) <= _h1._NAMES_MAX


def test_framing_headers_off_the_fast_path():
    conn = sent()
    answer = feed(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\nConnection: close\r\n\r\nabc")
    assert (answer.body, answer.keep_alive) == (b"abc", False)
    with pytest.raises(BadResponse):
        feed(sent(), b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\nabc")  # a latin-1 digit
    keep = feed(sent(), b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n")
    assert keep.keep_alive


def test_interim_answers_are_skipped():
    answer = feed(sent(), b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\n\r\n" + OK)
    assert answer.response.status == 200 and answer.body == b"hello"


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_answers(status):
    answer = feed(sent(), b"HTTP/1.1 %d X\r\nContent-Length: 7\r\n\r\n" % status)
    assert answer.body == b"" and answer.keep_alive


def test_a_head_request_has_no_body():
    assert feed(sent("HEAD"), b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n").body == b""


# -- keep-alive ----------------------------------------------------------------------------------


@pytest.mark.parametrize("head, keep", [
    (b"HTTP/1.1 200 OK\r\n", True),
    (b"HTTP/1.1 200 OK\r\nConnection: close\r\n", False),
    (b"HTTP/1.1 200 OK\r\nConnection: Upgrade, Close\r\n", False),
    (b"HTTP/1.0 200 OK\r\n", False),
    (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n", True),
])
def test_keep_alive_or_close(head, keep):
    conn = sent()
    answer = feed(conn, head + b"Content-Length: 2\r\n\r\nok")
    assert answer.keep_alive is keep and conn.reusable is keep
    if keep:
        conn.start_next_cycle()
        conn.send_request("GET", "/again", "h")
        assert feed(conn, OK).body == b"hello"
    else:
        with pytest.raises(LocalProtocolError):
            conn.start_next_cycle()


def test_bytes_past_the_answer_make_the_connection_unusable():
    conn = sent()
    answer = feed(conn, OK + b"HTTP/1.1 200 OK")       # more than Content-Length said
    assert answer.body == b"hello" and answer.keep_alive
    assert not conn.reusable and conn.trailing_data == (b"HTTP/1.1 200 OK", False)


def test_a_close_after_the_answer_makes_the_connection_unusable():
    conn = sent()
    feed(conn, OK)
    conn.receive_data(b"")
    assert not conn.reusable and conn.trailing_data == (b"", True)


# -- the body cap --------------------------------------------------------------------------------


def test_a_content_length_over_the_cap_is_refused_from_the_head():
    conn = sent(max_body=100)
    with pytest.raises(TooLarge) as info:
        feed(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 101\r\n\r\n")    # no body byte yet
    assert "(101 bytes) is over max_response_body (100 bytes)" in str(info.value)


def test_a_chunked_body_over_the_cap_is_refused_at_the_chunk_that_passes_it():
    conn = sent(max_body=100)
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert feed(conn, head, b"40\r\n" + b"y" * 64 + b"\r\n") is NEED_DATA
    with pytest.raises(TooLarge) as info:
        feed(conn, b"40\r\n")
    assert "at least 128 bytes" in str(info.value)


def test_a_close_delimited_body_over_the_cap_is_refused_as_it_arrives():
    conn = sent(max_body=100)
    assert feed(conn, b"HTTP/1.0 200 OK\r\n\r\n", b"y" * 100) is NEED_DATA
    with pytest.raises(TooLarge):
        feed(conn, b"y")


@pytest.mark.parametrize("data", [OK, CHUNKED, UNTIL_CLOSE])
def test_a_body_at_the_cap_is_read(data):
    size = len(feed(sent(), data, eof=data is UNTIL_CLOSE).body)
    assert feed(sent(max_body=size), data, eof=data is UNTIL_CLOSE).body


# -- bad answers, and the error latches ----------------------------------------------------------


@pytest.mark.parametrize("data", [
    b"HTTP/2 200 OK\r\n\r\n", b"HTTP/1.1 abc OK\r\n\r\n", b"HTTP/1.1 20 OK\r\n\r\n",
    b"ICY 200 OK\r\n\r\n", b"garbage\r\n\r\n", b"HTTP/1.1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n folded first\r\n\r\n", b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 0x5\r\n\r\nhello",
    b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
])
def test_a_malformed_answer_is_a_bad_response(data):
    with pytest.raises(BadResponse):
        feed(sent(), data)


@pytest.mark.parametrize("data", [
    b"", b"HTTP/1.1 200 OK\r\nContent-Len", OK[:-2],
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
])
def test_a_connection_that_ends_mid_answer_is_a_bad_response(data):
    conn = sent()
    if data:                    # (b"" would be the end itself)
        assert feed(conn, data) is NEED_DATA
    with pytest.raises(BadResponse):
        feed(conn, eof=True)


def test_a_head_over_the_limit_is_refused():
    conn = sent()
    with pytest.raises(BadResponse):
        feed(conn, b"HTTP/1.1 200 OK\r\nX: " + b"a" * _h1.HEAD_LIMIT)


def test_errors_latch():
    conn = sent()
    with pytest.raises(BadResponse) as first:
        feed(conn, b"HTTP/9 200 OK\r\n\r\n")
    for again in (conn.next_event, lambda: conn.receive_data(OK),
                  lambda: conn.start_request("GET")):
        with pytest.raises(BadResponse) as info:
            again()
        assert info.value is first.value
    assert conn.their_state == _h1.ERROR and not conn.reusable


def test_data_after_the_end_is_our_bug():
    conn = sent()
    conn.receive_data(b"")
    with pytest.raises(LocalProtocolError):
        conn.receive_data(b"x")


# -- an answer written before the request was sent completely ------------------------------------


def test_read_whole_finds_an_answer_the_server_wrote_before_closing():
    answer = read_whole(b"HTTP/1.1 413 Payload Too Large\r\nConnection: close\r\n"
                        b"Content-Length: 2\r\n\r\n{}", "POST")
    assert answer.response.status == 413 and answer.body == b"{}"
    assert read_whole(UNTIL_CLOSE, "POST").body == b"all of it"
    assert read_whole(OK[:-1], "POST") is None
    assert read_whole(b"junk\r\n\r\n", "POST") is None
    assert read_whole(OK, "POST", max_body=4) is None


# -- a body read whole by the transport -------------------------------------------------------


def test_a_body_read_apart_is_the_answers_body_object_itself():
    body = bytes(range(256)) * 8192     # 2 MiB
    conn = sent("POST")
    assert conn.body_bytes_wanted == 0                   # no head yet
    assert feed(conn, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)) is NEED_DATA
    assert conn.body_bytes_wanted == len(body)
    conn.receive_body(body)
    answer = conn.next_event()
    assert answer.body is body                           # not copied
    assert conn.reusable


def test_a_body_partly_buffered_is_wanted_only_after_the_buffer_is_taken():
    conn = sent("POST")
    assert feed(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc") is NEED_DATA
    assert conn.body_bytes_wanted == 7                   # "abc" already taken into the body
    conn.receive_body(b"defg")
    assert conn.next_event() is NEED_DATA
    assert conn.body_bytes_wanted == 3
    with pytest.raises(LocalProtocolError):
        conn.receive_body(b"hijk")                        # more than the body has left
    conn.receive_body(b"hij")
    assert conn.next_event().body == b"abcdefghij"
    with pytest.raises(LocalProtocolError):
        conn.receive_body(b"x")                           # no body is being read now
