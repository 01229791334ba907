"""Server-Sent Events for the clients' ``events()``, sans-I/O: bytes in, events out.

This module owns reading ``GET /v1/events``: the answer's head (a ``200 text/event-stream``, or
an error answer turned into the client's exception), the body's framing (until the connection
closes, as the daemon sends it, or chunked, as a proxy may re-frame it), the event-stream format
(WHATWG HTML, "Server-sent events": ``field: value`` lines, blank-line dispatch, ``:`` comments,
CR, LF or CRLF line ends, ``id``, ``event``, ``data``, ``retry``) and the resumption rules (the
last id seen, sent back as ``?since=`` and ``Last-Event-ID``; when to try again after the stream
drops, and when to give up).  No sockets and no clock of its own: the transports
(``bulkhead._events_io``) read, feed ``receive_data`` and pass the time in.

How this works: ``SseParser`` turns bytes into ``ServerEvent``s and knows nothing of HTTP.
``StreamReader`` is one connection's answer: ``HEAD`` until the blank line, then ``STREAM``
(body bytes go to the parser, de-chunked if need be) or ``ERROR_ANSWER`` (the whole answer is
read by a ``bulkhead._h1.ClientConnection`` and raised as ``ApiError``).  ``Resume`` spans
connections: it turns events into the dicts ``events()`` yields, and says how long to wait before
the next connection.
"""

import json

from ._h1 import BadResponse, ClientConnection, NEED_DATA, TooLarge, encode_request, parse_head
from ._http import error_from_response

# An event (or a line) larger than this is refused: the daemon's are a few KiB.
MAX_EVENT_BYTES = 16 * 1024 * 1024
# The first wait before connecting again after the stream dropped, doubled after each failed
# try up to RECONNECT_MAX_DELAY; a server's ``retry:`` field replaces the first.
RECONNECT_DELAY = 0.1
RECONNECT_MAX_DELAY = 2.0
# With no ``timeout``, how long reconnecting may fail before ``events()`` gives up.
RECONNECT_GIVE_UP = 30.0

_BOM = b"\xef\xbb\xbf"

HEAD = "HEAD"
STREAM = "STREAM"
ERROR_ANSWER = "ERROR_ANSWER"
ENDED = "ENDED"


class ServerEvent(object):
    """One dispatched event: ``id`` (the last event id, a str, or None), ``event`` (its type,
    ``"message"`` when the server named none), ``data`` (str)."""

    __slots__ = ("id", "event", "data")

    def __init__(self, id, event, data):
        self.id = id
        self.event = event
        self.data = data

    def __eq__(self, other):
        return (isinstance(other, ServerEvent)
                and (self.id, self.event, self.data) == (other.id, other.event, other.data))

    def __repr__(self):
        return "ServerEvent(id=%r, event=%r, data=%r)" % (self.id, self.event, self.data)


class SseParser(object):
    """The event-stream format.  ``feed(bytes)`` returns the events completed by those bytes;
    ``retry`` holds the last ``retry:`` field (milliseconds) or None.  An event cut off by the
    end of the stream is never returned (the format says to drop it)."""

    def __init__(self, max_event=MAX_EVENT_BYTES):
        self.max_event = max_event
        self.retry = None
        self.last_id = None       # persists across events, as the format wants
        self._buffer = bytearray()
        self._skip_lf = False     # the last line ended in CR: an LF right after belongs to it
        self._started = False     # a UTF-8 BOM is dropped at the very start only
        self._type = ""
        self._data = []
        self._size = 0

    def feed(self, data):
        buffer = self._buffer
        buffer += data
        if not self._started:
            if len(buffer) < 3 and _BOM.startswith(bytes(buffer)):
                return []          # maybe the start of a BOM: wait for the rest
            if buffer[:3] == _BOM:
                del buffer[:3]
            self._started = True
        events = []
        start = 0
        while True:
            if self._skip_lf and start < len(buffer):
                if buffer[start] == 0x0A:
                    start += 1
                self._skip_lf = False
            cr = buffer.find(b"\r", start)
            lf = buffer.find(b"\n", start)
            end = cr if lf < 0 or 0 <= cr < lf else lf
            if end < 0:
                break
            self._skip_lf = buffer[end] == 0x0D
            event = self._line(bytes(buffer[start:end]).decode("utf-8", "replace"))
            if event is not None:
                events.append(event)
            start = end + 1
        del buffer[:start]
        if len(buffer) > self.max_event:
            raise BadResponse("event-stream line over %d bytes" % self.max_event)
        return events

    def _line(self, line):
        if not line:
            return self._dispatch()
        if line[0] == ":":
            return None            # a comment (keep-alive)
        field, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if field == "data":
            self._size += len(value) + 1
            if self._size > self.max_event:
                raise BadResponse("event over %d bytes" % self.max_event)
            self._data.append(value)
        elif field == "event":
            self._type = value
        elif field == "id":
            if "\0" not in value:
                self.last_id = value
        elif field == "retry":
            if value.isdigit() and value.isascii():
                self.retry = int(value)
        return None                # other fields are ignored, as the format says

    def _dispatch(self):
        data, kind = self._data, self._type
        self._data, self._type, self._size = [], "", 0
        if not data:
            return None
        return ServerEvent(self.last_id, kind or "message", "\n".join(data))


class _Dechunker(object):
    """The body of a chunked answer: chunk sizes and CRLFs out, data through."""

    def __init__(self):
        self._buffer = bytearray()
        self._left = 0           # bytes of the current chunk still to pass through
        self._crlf = False       # a chunk's data ended: its CRLF is due
        self.done = False

    def feed(self, data):
        self._buffer += data
        out = []
        buffer = self._buffer
        while buffer and not self.done:
            if self._left:
                piece = bytes(buffer[:self._left])
                del buffer[:len(piece)]
                self._left -= len(piece)
                self._crlf = not self._left
                out.append(piece)
                continue
            end = buffer.find(b"\r\n")
            if end < 0:
                if len(buffer) > 1024:
                    raise BadResponse("chunk size line over 1024 bytes")
                break
            line = bytes(buffer[:end]).split(b";", 1)[0].strip()
            del buffer[:end + 2]
            if self._crlf:
                if line:
                    raise BadResponse("chunk not followed by CRLF")
                self._crlf = False
                continue
            try:
                size = int(line.decode("latin-1"), 16)
            except ValueError:
                raise BadResponse("bad chunk size %r" % line[:40]) from None
            if size == 0:
                self.done = True     # trailers, if any, are not read: the stream is over
            self._left = size
        return b"".join(out)


class StreamReader(object):
    """One connection's answer to ``GET /v1/events``.  ``receive_data(bytes)`` (``b""`` at the
    end of the connection) returns the events those bytes completed; ``ended`` is then True once
    the stream is over.  An error answer (any status but 200) raises its client exception
    (``ApiError`` and subclasses) once it has been read whole; a 200 that is not an event stream,
    or bytes that are not HTTP, raise ``BadResponse``."""

    def __init__(self, max_event=MAX_EVENT_BYTES):
        self.state = HEAD
        self.response = None
        self.parser = SseParser(max_event)
        self._head = bytearray()
        self._chunks = None
        self._answer = None      # ERROR_ANSWER: reads the whole error answer

    @property
    def ended(self):
        return self.state == ENDED

    def receive_data(self, data):
        if self.state == HEAD:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                if not data:
                    raise BadResponse("the connection closed before the answer's head")
                if len(self._head) > 65536:
                    raise BadResponse("answer head over 64 KiB")
                return []
            head, rest = bytes(self._head[:end]), bytes(self._head[end + 4:])
            self._head = bytearray()
            response = parse_head(head)
            if response.status < 200:   # an interim answer (100, 103): the real one follows
                return self.receive_data(rest) if rest else []
            self.response = response
            if response.status != 200:
                return self._error_answer(head + b"\r\n\r\n" + rest, data)
            kind = (response.getheader("Content-Type") or "").split(";")[0].strip().lower()
            if kind != "text/event-stream":
                raise BadResponse("GET /v1/events answered 200 with Content-Type %r, not an "
                                  "event stream" % (kind,))
            if "chunked" in (response.getheader("Transfer-Encoding") or "").lower():
                self._chunks = _Dechunker()
            self.state = STREAM
            return self._stream(rest, data)
        if self.state == STREAM:
            return self._stream(data, data)
        if self.state == ERROR_ANSWER:
            return self._error_answer(data, data)
        return []

    def _stream(self, body, data):
        if self._chunks is not None:
            body = self._chunks.feed(body)
        events = self.parser.feed(body) if body else []
        if not data or (self._chunks is not None and self._chunks.done):
            self.state = ENDED     # a cut-off event is dropped (the format's rule)
        return events

    def _error_answer(self, received, data):
        if self._answer is None:
            self._answer = ClientConnection(MAX_EVENT_BYTES)
            self._answer.start_request("GET")
            self.state = ERROR_ANSWER
        if received:
            self._answer.receive_data(received)
        if not data:
            self._answer.receive_data(b"")
        try:
            answer = self._answer.next_event()
        except TooLarge:
            raise BadResponse("the error answer to GET /v1/events is over %d bytes"
                              % MAX_EVENT_BYTES) from None
        if answer is NEED_DATA:
            return []
        self.state = ENDED
        raise error_from_response(answer.response.status, answer.response, answer.body)


def events_request(prefix, host, since):
    """The request bytes of ``GET /v1/events`` resuming after event id ``since`` (0: every event
    the daemon still keeps)."""
    headers = [("Accept", "text/event-stream")]
    if since:
        headers.append(("Last-Event-ID", str(since)))
    return b"".join(encode_request("GET", "%s/v1/events?since=%d" % (prefix, since), host,
                                   headers))


def check_since(since):
    if isinstance(since, bool) or not isinstance(since, int) or since < 0:
        raise ValueError("since must be an event id (an int >= 0), got %r" % (since,))
    return since


def event_dict(event):
    """What ``events()`` yields for a ``ServerEvent``: the daemon's JSON object, with ``"id"``
    (int) and ``"kind"`` (the event type) added when it lacks them; data that is not a JSON
    object comes as ``{"id", "kind", "data": text}``."""
    try:
        value = json.loads(event.data)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        value = {"data": event.data}
    if "id" not in value and event.id is not None:
        value["id"] = int(event.id) if event.id.isdigit() else event.id
    value.setdefault("kind", event.event)
    return value


class Resume(object):
    """What spans the connections of one ``events()`` iteration: the last event id (the next
    connection asks for the events after it), the deadline of the next event (``timeout``), and
    the waits between tries to connect again.  Times are ``time.monotonic()`` values passed in.
    """

    def __init__(self, since, timeout, now):
        self.since = check_since(since)
        if timeout is not None and (isinstance(timeout, bool) or timeout <= 0):
            raise ValueError("timeout must be a number of seconds > 0 or None, got %r"
                             % (timeout,))
        self.timeout = timeout
        self.connected = False    # a connection has answered 200 at least once
        self.first_delay = RECONNECT_DELAY
        self._delay = RECONNECT_DELAY
        self._deadline = None if timeout is None else now + timeout
        self._failing_since = None
        self._started = None      # (earliest, latest) start of the daemon, on our clock

    def request(self, prefix, host):
        return events_request(prefix, host, self.since)

    def wait(self, now):
        """Seconds the next read may wait (None: for ever) before the event is late."""
        return None if self._deadline is None else max(0.0, self._deadline - now)

    def late(self, now):
        return self._deadline is not None and now >= self._deadline

    def daemon_uptime(self, uptime, asked, answered):
        """Before each connection: the daemon's ``uptime_s`` (``GET /v1/pools``, asked and
        answered at those times).  Ids start over with each daemon: one that started after the
        daemon of the previous connection is a new one, and its stream is read from its first
        event (``since`` 0), so none of its events is missed.  Its start lies between ``asked -
        uptime`` and ``answered - uptime``: a new daemon is one whose earliest possible start
        is later than the previous one's latest."""
        if isinstance(uptime, bool) or not isinstance(uptime, (int, float)):
            return
        if self._started is not None and asked - uptime > self._started[1]:
            self.since = 0
        self._started = (asked - uptime, answered - uptime)

    def opened(self):
        """The connection answered 200: resuming from here is possible."""
        self.connected = True
        self._failing_since = None
        self._delay = self.first_delay

    def take(self, events, now, retry_ms=None):
        """The dicts to yield for ``events``; they restart the ``timeout`` clock."""
        if retry_ms is not None:
            self.first_delay = min(retry_ms / 1000.0, RECONNECT_MAX_DELAY * 5)
        out = []
        for event in events:
            value = event_dict(event)
            ident = value.get("id")
            if isinstance(ident, int) and not isinstance(ident, bool) and ident > self.since:
                self.since = ident
            out.append(value)
        if out and self.timeout is not None:
            self._deadline = now + self.timeout
        return out

    def next_try(self, now):
        """After the stream dropped or a try to connect failed: seconds to wait before the
        next try, or None to give up (the next event's deadline would pass first, or, with no
        timeout, reconnecting kept failing for ``RECONNECT_GIVE_UP`` seconds)."""
        if self._failing_since is None:
            self._failing_since = now
        delay = self._delay
        self._delay = min(self._delay * 2, RECONNECT_MAX_DELAY)
        if self._deadline is not None:
            if now + delay >= self._deadline:
                return None
        elif now - self._failing_since + delay > RECONNECT_GIVE_UP:
            return None
        return delay
