"""HTTP/1.1 for the bulkhead clients, sans-I/O in the manner of h11: bytes in, values out.

This module owns the wire format of the clients' HTTP/1.1: encoding a request (``encode_head``,
once per kind of request, and ``finish_request``: one buffer; in ``bulkhead._h1_request``,
re-exported here), reading the answer (status line,
headers, a body delimited by Content-Length, chunked, or the end of the connection), keep-alive,
and the bound on an answer's body (``max_body``, the clients' ``max_response_body``).  No
sockets, no event loop, no clock: the clients write the parts, call ``start_request``, feed what
they read to ``receive_data`` (``b""`` at the end) and call ``next_event`` until it returns an
``Answer``.  What an answer means for bulkhead is ``bulkhead._http``'s business.

How this works: one ``ClientConnection`` per socket, one request at a time (the clients do not
pipeline).  Our side is ``IDLE`` until a request is encoded, then ``SENT``.  Their side goes
``HEAD`` -> one of ``BODY_LENGTH``, ``CHUNK_SIZE`` / ``CHUNK_DATA`` / ``CHUNK_END`` /
``TRAILERS``, ``BODY_UNTIL_CLOSE`` -> ``DONE``; ``start_next_cycle`` takes a connection that may
be kept back to ``IDLE``.  Interim ``1xx`` answers are skipped.  The first error latches
(``ERROR``): every later call raises it again, so a transport cannot read on past a bad answer.
``BadResponse``: the peer sent something that is not an HTTP/1.x answer as we read it (or closed
mid-answer); ``TooLarge``: the body is over ``max_body`` (raised as soon as that is known, before
the body is read); ``LocalProtocolError`` (a ``ValueError``): the caller misused the connection.
"""

from ._h1_errors import BadResponse, LocalProtocolError, ProtocolError, TooLarge  # noqa: F401
from ._h1_request import (COALESCE, _token_ok, encode_head, encode_request,  # noqa: F401
                          finish_request, host_header)

HEAD_LIMIT = 64 * 1024   # the longest status line + headers (and chunk trailers) accepted
_CHUNK_LINE_LIMIT = 1024

# our side
IDLE = "IDLE"
SENT = "SENT"
# their side
HEAD = "HEAD"
BODY_LENGTH = "BODY_LENGTH"
CHUNK_SIZE = "CHUNK_SIZE"
CHUNK_DATA = "CHUNK_DATA"
CHUNK_END = "CHUNK_END"
TRAILERS = "TRAILERS"
BODY_UNTIL_CLOSE = "BODY_UNTIL_CLOSE"
DONE = "DONE"
ERROR = "ERROR"


class _NeedData(object):
    __slots__ = ()

    def __repr__(self):
        return "NEED_DATA"


NEED_DATA = _NeedData()   # next_event(): feed more bytes (or the end of the connection) first


class Response(object):
    """The status line and headers of one answer (``status``, ``reason``, ``version``,
    ``getheader``), as the helpers of ``bulkhead._http`` read it."""

    __slots__ = ("status", "reason", "version", "headers")

    def __init__(self, status, reason, version, headers):
        self.status = status
        self.reason = reason
        self.version = version
        self.headers = headers   # lower-case name -> value (repeated fields joined by ", ")

    def getheader(self, name, default=None):
        return self.headers.get(name.lower(), default)

    def __repr__(self):
        return "<Response %d %s>" % (self.status, self.reason)


class Answer(object):
    """One whole answer: ``response`` (a ``Response``), ``body`` (bytes) and ``keep_alive``
    (whether the connection may carry another request)."""

    __slots__ = ("response", "body", "keep_alive")

    def __init__(self, response, body, keep_alive):
        self.response = response
        self.body = body
        self.keep_alive = keep_alive

    def __repr__(self):
        return "<Answer %d, %d bytes%s>" % (self.response.status, len(self.body),
                                            "" if self.keep_alive else ", close")


# -- answers --------------------------------------------------------------------------------------


# Header names already checked (as sent -> lower case): checking the daemon's dozen names char by
# char in every answer was most of the parsing time.  Bounded: a peer cannot grow it for ever.
_NAMES = {}
_NAMES_MAX = 512


def parse_head(head):
    """A ``Response`` from the bytes of a status line and its header block (CRLF-separated, the
    final empty line optional)."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or parts[0] not in ("HTTP/1.1", "HTTP/1.0"):
        raise BadResponse("bad status line %r" % lines[0][:100])
    if not (len(parts[1]) == 3 and parts[1].isdigit()):
        raise BadResponse("bad status line %r" % lines[0][:100])
    status = int(parts[1])
    if status < 100:
        raise BadResponse("bad status %d" % status)
    headers = {}
    last = None
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        key = _NAMES.get(name)
        if key is None or not sep:      # not a name seen before: the full checks
            if not line:
                continue
            if line[0] in " \t":            # obsolete line folding
                if last is None:
                    raise BadResponse("header block starts with a continuation line")
                headers[last] += " " + line.strip()
                continue
            if not sep or not _token_ok(name):
                raise BadResponse("bad header line %r" % line[:100])
            key = name.lower()
            if len(_NAMES) < _NAMES_MAX:
                _NAMES[name] = key
        value = value.strip()
        headers[key] = headers[key] + ", " + value if key in headers else value
        last = key
    return Response(status, parts[2] if len(parts) > 2 else "", parts[0], headers)


def _tokens(value):
    return [t.strip().lower() for t in (value or "").split(",") if t.strip()]


def _content_length(response):
    value = response.getheader("Content-Length")
    if value is None:
        return None
    values = {v.strip() for v in value.split(",")}
    if len(values) != 1:
        raise BadResponse("conflicting Content-Length %r" % value)
    value = values.pop()
    if not value.isdigit() or not value.isascii():
        raise BadResponse("bad Content-Length %r" % value)
    return int(value)


def _keep_alive(response):
    connection = _tokens(response.getheader("Connection"))
    if response.version == "HTTP/1.0":
        return "keep-alive" in connection
    return "close" not in connection


_HEX = frozenset("0123456789abcdefABCDEF")


class ClientConnection(object):
    """The client's side of one HTTP/1.1 connection (see the module's docstring).

    ``max_body``: the largest answer body accepted, in bytes (None: no bound).
    """

    def __init__(self, max_body=None):
        self.max_body = max_body
        self.our_state = IDLE
        self.their_state = DONE      # nothing asked yet: nothing to read
        self._method = None
        self._buffer = bytearray()
        self._eof = False
        self._error = None
        self._response = None
        self._keep = False
        self._body = []
        self._size = 0               # body bytes taken so far
        self._left = 0               # bytes left of the body (BODY_LENGTH) or the chunk

    # -- state

    @property
    def trailing_data(self):
        """``(bytes, eof)``: what was received past the last answer, and whether the peer has
        closed; a connection with either cannot carry another request."""
        return bytes(self._buffer), self._eof

    @property
    def reusable(self):
        """True when the last answer is complete, allows keep-alive, and nothing came after."""
        return (self.our_state == SENT and self.their_state == DONE and self._keep
                and not self._buffer and not self._eof and self._error is None)

    @property
    def body_bytes_wanted(self):
        """While a ``Content-Length`` body is being read and nothing is buffered: how many of
        its bytes are still due.  A transport may read them itself (all at once, into one bytes
        object) and hand them to ``receive_body``; 0 otherwise."""
        if (self.their_state == BODY_LENGTH and not self._buffer and not self._eof
                and self._error is None):
            return self._left
        return 0

    @property
    def buffered(self):
        """How many received bytes wait in the parser (past the last answer, when idle)."""
        return len(self._buffer)

    @property
    def ended(self):
        """True once the peer has closed (``receive_data(b"")``)."""
        return self._eof

    def hand_back_body(self):
        """While a ``Content-Length`` body is wanted (``body_bytes_wanted``): the part of it
        already taken from received data, handed back so that a transport reading the rest
        apart can give ``receive_body`` the whole body as one object.  ``body_bytes_wanted`` is
        the whole body's length after this."""
        if not self.body_bytes_wanted:
            raise LocalProtocolError("hand_back_body() outside a wanted body")
        taken = b"".join(self._body)
        self._body = []
        self._left += self._size
        self._size = 0
        return taken

    def receive_body(self, data):
        """Body bytes read apart (``body_bytes_wanted``), kept as they are: a body read whole
        this way is the answer's body object itself, never copied."""
        if not data or len(data) > self.body_bytes_wanted:
            raise LocalProtocolError("receive_body(%d bytes) outside a wanted body" % len(data))
        self._body.append(data)
        self._size += len(data)
        self._left -= len(data)

    def start_next_cycle(self):
        """Ready for the next request on this connection (only when ``reusable``)."""
        if not self.reusable:
            raise LocalProtocolError("the connection cannot carry another request")
        self.our_state = IDLE
        self._response = None

    # -- our side

    def send_request(self, method, target, host, headers=(), body=None, content_type=None):
        """The parts to write for one request (``encode_request``); then answers are read."""
        parts = encode_request(method, target, host, headers, body, content_type)
        self.start_request(method)
        return parts

    def start_request(self, method):
        """A request encoded apart (``encode_request``, ``finish_request``) is being written."""
        if self._error is not None:
            raise self._error
        if self.our_state is not IDLE:
            raise LocalProtocolError("a request was already sent on this connection")
        self.our_state = SENT
        self.their_state = HEAD
        self._method = method

    # -- their side

    def receive_data(self, data):
        """Bytes read from the peer; ``b""`` when the connection ended (EOF)."""
        if self._error is not None:
            raise self._error
        if self._eof and data:
            raise LocalProtocolError("data received after the end of the connection")
        if data:
            self._buffer += data
        else:
            self._eof = True

    def next_event(self):
        """``NEED_DATA``, or the ``Answer`` to the request sent, once it is all here; raises
        ``BadResponse`` or ``TooLarge`` (and again on every later call)."""
        if self._error is not None:
            raise self._error
        if self.our_state is not SENT:
            raise LocalProtocolError("no request was sent: no answer to read")
        try:
            return self._step()
        except ProtocolError as exc:
            self.their_state = ERROR
            self._error = exc
            raise

    def _step(self):
        while True:
            state = self.their_state
            if state == DONE:
                raise LocalProtocolError("the answer was already read")
            if state == HEAD:
                if not self._read_head():
                    return NEED_DATA
            elif state == BODY_LENGTH:
                self._take(min(self._left, len(self._buffer)))
                if self._left:
                    if self._eof:
                        raise BadResponse("the connection closed %d bytes before the end of "
                                          "the body (Content-Length %d)"
                                          % (self._left, self._size + self._left))
                    return NEED_DATA
                return self._finish()
            elif state == BODY_UNTIL_CLOSE:
                self._take(len(self._buffer))
                self._check_size(self._size, at_least=True)
                if not self._eof:
                    return NEED_DATA
                self._keep = False
                return self._finish()
            elif state == CHUNK_SIZE:
                if not self._read_chunk_size():
                    return NEED_DATA
            elif state == CHUNK_DATA:
                self._take(min(self._left, len(self._buffer)))
                if self._left:
                    return self._need_more("in a chunk")
                self.their_state = CHUNK_END
            elif state == CHUNK_END:
                if len(self._buffer) < 2:
                    return self._need_more("after a chunk")
                if self._buffer[:2] != b"\r\n":
                    raise BadResponse("chunk not followed by CRLF")
                del self._buffer[:2]
                self.their_state = CHUNK_SIZE
            elif state == TRAILERS:
                line = self._line(HEAD_LIMIT, "trailer")
                if line is None:
                    return NEED_DATA
                if not line:
                    return self._finish()
            else:   # ERROR is latched before we get here; IDLE is not a state of theirs
                raise LocalProtocolError("no answer can be read in state %s" % state)

    def _need_more(self, where):
        if self._eof:
            raise BadResponse("the connection closed %s" % where)
        return NEED_DATA

    def _line(self, limit, what):
        """The next CRLF-terminated line (without it), or None when it is not all here."""
        end = self._buffer.find(b"\r\n")
        if end < 0:
            if len(self._buffer) > limit:
                raise BadResponse("%s line over %d bytes" % (what, limit))
            self._need_more("in a %s line" % what)
            return None
        line = bytes(self._buffer[:end])
        del self._buffer[:end + 2]
        return line

    def _read_head(self):
        buffer = self._buffer
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > HEAD_LIMIT:
                raise BadResponse("answer head over %d bytes" % HEAD_LIMIT)
            if self._eof:
                raise BadResponse("the connection closed before the answer's head was complete "
                                  "(%d bytes of it)" % len(buffer))
            return False
        if end > HEAD_LIMIT:
            raise BadResponse("answer head over %d bytes" % HEAD_LIMIT)
        response = parse_head(buffer[:end])
        del buffer[:end + 4]
        status = response.status
        if status < 200:
            if status == 101:
                raise BadResponse("unexpected 101 Switching Protocols")
            return True   # 100 Continue, 103 Early Hints: the real answer follows
        headers = response.headers
        self._response = response
        # The daemon's answers name no Connection and no Transfer-Encoding, and give a plain
        # Content-Length: those are looked up once each; anything else takes the general path.
        self._keep = (response.version == "HTTP/1.1" if "connection" not in headers
                      else _keep_alive(response))
        self._body = []
        self._size = 0
        if self._method == "HEAD" or status == 204 or status == 304:
            self._left = 0               # no body, whatever the headers say
            self.their_state = BODY_LENGTH
            return True
        if "transfer-encoding" in headers and "chunked" in _tokens(headers["transfer-encoding"]):
            self.their_state = CHUNK_SIZE
            return True
        length = headers.get("content-length")
        if length is None:
            self.their_state = BODY_UNTIL_CLOSE
            return True
        length = int(length) if length.isascii() and length.isdigit() else _content_length(
            response)   # the general path: "5, 5", a bad value
        self._check_size(length)
        self._left = length
        self.their_state = BODY_LENGTH
        return True

    def _read_chunk_size(self):
        line = self._line(_CHUNK_LINE_LIMIT, "chunk size")
        if line is None:
            return False
        size_text = line.split(b";", 1)[0].strip().decode("latin-1")
        if not size_text or not _HEX.issuperset(size_text):
            raise BadResponse("bad chunk size %r" % size_text[:40])
        size = int(size_text, 16)
        if size == 0:
            self.their_state = TRAILERS
            return True
        self._check_size(self._size + size, at_least=True)
        self._left = size
        self.their_state = CHUNK_DATA
        return True

    def _take(self, count):
        if count:
            buffer = self._buffer
            if count == len(buffer):
                self._body.append(bytes(buffer))
                buffer.clear()
            else:
                with memoryview(buffer) as view:     # one copy, and released before the del
                    self._body.append(bytes(view[:count]))
                del buffer[:count]
            self._size += count
            if self.their_state != BODY_UNTIL_CLOSE:
                self._left -= count

    def _check_size(self, size, at_least=False):
        limit = self.max_body
        if limit is not None and size > limit:
            raise TooLarge("the answer's body (%s%d bytes) is over max_response_body (%d bytes)"
                           % ("at least " if at_least else "", size, limit))

    def _finish(self):
        body = b"".join(self._body)
        self._body = []
        self.their_state = DONE
        return Answer(self._response, body, self._keep)


def read_whole(data, method, max_body=None):
    """The ``Answer`` in ``data``, bytes that a connection carried before it ended (an answer the
    server wrote before closing), or None when they hold no whole answer."""
    conn = ClientConnection(max_body)
    conn.start_request(method)
    try:
        conn.receive_data(data)
        conn.receive_data(b"")
        event = conn.next_event()
    except ProtocolError:
        return None
    return event if isinstance(event, Answer) else None
