"""Reading HTTP/1.1 answers from an ``asyncio.StreamReader``, for ``bulkhead.aio``.

The status line and headers are parsed from bytes (``parse_head``); ``read_response`` reads one
whole answer (Content-Length, chunked, or delimited by the end of the connection), refusing a body
over the caller's limit before reading it; ``early_answer`` recovers an answer the server wrote
before the request was sent completely.
"""

import asyncio
import os
import socket

HEAD_LIMIT = 64 * 1024   # the longest status line + headers accepted from the daemon
_READ_CHUNK = 1 << 20


class BadResponse(Exception):
    """The peer's answer is not HTTP/1.x as this client reads it."""


class Response(object):
    """The status line and headers of one answer, read the way the shared helpers expect
    (``status``, ``reason``, ``getheader``)."""

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


def parse_head(head):
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or parts[0] not in ("HTTP/1.1", "HTTP/1.0"):
        raise BadResponse("bad status line %r" % lines[0][:100])
    try:
        status = int(parts[1])
    except ValueError:
        raise BadResponse("bad status line %r" % lines[0][:100]) from None
    if not 100 <= status <= 999:
        raise BadResponse("bad status %d" % status)
    headers = {}
    last = None
    for line in lines[1:]:
        if not line:
            continue
        if line[0] in " \t":            # obsolete line folding
            if last is None:
                raise BadResponse("header block starts with a continuation line")
            headers[last] += " " + line.strip()
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise BadResponse("bad header line %r" % line[:100])
        name = name.lower()
        value = value.strip()
        headers[name] = headers[name] + ", " + value if name in headers else value
        last = name
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
    if not value.isdigit():
        raise BadResponse("bad Content-Length %r" % value)
    return int(value)


class TooLarge(Exception):
    """The answer's body is over the client's ``max_response_body``."""


def _check_size(size, limit, at_least=False):
    if limit is not None and size > limit:
        raise TooLarge("the answer's body (%s%d bytes) is over max_response_body (%d bytes)"
                        % ("at least " if at_least else "", size, limit))


async def _read_chunked(reader, limit):
    chunks = []
    total = 0
    while True:
        line = await reader.readuntil(b"\r\n")
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise BadResponse("bad chunk size %r" % size_text[:40]) from None
        if size < 0:
            raise BadResponse("bad chunk size %r" % size_text[:40])
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":   # trailer fields
                pass
            return b"".join(chunks)
        total += size
        _check_size(total, limit, at_least=True)
        chunks.append(await reader.readexactly(size))
        if await reader.readexactly(2) != b"\r\n":
            raise BadResponse("chunk not followed by CRLF")


async def read_response(reader, method, limit=None):
    """``(response, body, keep_alive)`` of the next answer on ``reader``; a body over ``limit``
    bytes raises ``TooLarge`` before it is read."""
    while True:
        response = parse_head(await reader.readuntil(b"\r\n\r\n"))
        if response.status >= 200:
            break
        if response.status == 101:
            raise BadResponse("unexpected 101 Switching Protocols")
        # 1xx interim answers (100 Continue, 103 Early Hints) come before the real one
    connection = _tokens(response.getheader("Connection"))
    if response.version == "HTTP/1.0":
        keep = "keep-alive" in connection
    else:
        keep = "close" not in connection
    if method == "HEAD" or response.status in (204, 304):
        return response, b"", keep
    if "chunked" in _tokens(response.getheader("Transfer-Encoding")):
        return response, await _read_chunked(reader, limit), keep
    length = _content_length(response)
    if length is not None:
        _check_size(length, limit)
        return response, await reader.readexactly(length), keep
    chunks = []   # delimited by the end of the connection
    total = 0
    while True:
        chunk = await reader.read(_READ_CHUNK)
        if not chunk:
            return response, b"".join(chunks), False
        total += len(chunk)
        _check_size(total, limit, at_least=True)
        chunks.append(chunk)


_EARLY_ANSWER_MAX = 1 << 20   # an early answer is a short problem document


def _unread(sock):
    """What the kernel still holds for ``sock``, a transport's socket that stopped reading after
    a failed write but is not closed yet; never waits (the connection is dead: nothing more
    comes)."""
    try:
        fd = sock.fileno() if sock is not None else -1
        if fd < 0:
            return b""
        copy = socket.socket(fileno=os.dup(fd))
    except (OSError, ValueError):
        return b""
    chunks = []
    total = 0
    with copy:
        copy.setblocking(False)
        while total < _EARLY_ANSWER_MAX:
            try:
                data = copy.recv(65536)
            except OSError:      # EAGAIN: all of it; ECONNRESET: after all of it
                break
            if not data:
                break
            chunks.append(data)
            total += len(data)
    return b"".join(chunks)


async def early_answer(reader, method, limit, sock=None):
    """The answer the server wrote before our request was sent completely (it refused it from the
    headers, e.g. 413, and closed, which broke the send), or None.

    The transport's write failure sets an exception on ``reader`` that every read raises first,
    though the answer may sit in its buffer (asyncio handles a socket's read event before its
    write event) or, when the write failed at once, still in the kernel (``sock``): so those
    bytes are parsed from a reader of their own."""
    buffered = bytes(getattr(reader, "_buffer", b"")) + _unread(sock)
    if not buffered:
        return None
    copy = asyncio.StreamReader(limit=HEAD_LIMIT)
    copy.feed_data(buffered)
    copy.feed_eof()
    try:
        return await read_response(copy, method, limit)
    except (EOFError, ValueError, asyncio.LimitOverrunError, BadResponse, TooLarge):
        return None
