"""Encoding the clients' HTTP/1.1 requests (sans-I/O, part of ``bulkhead._h1``, which re-exports
everything here): the head once per kind of request (``encode_head``), then one buffer per
request (``finish_request``).  Names and values are checked here, once, so that no caller can
write a request the daemon would read differently (header injection, bad tokens)."""

from ._h1_errors import LocalProtocolError

COALESCE = 64 * 1024     # bodies up to this size go out in the same write as the headers


def host_header(host, port):
    """The ``Host`` value for a TCP peer, as ``http.client`` writes it: IPv6 in brackets, the
    port left out when it is 80."""
    if ":" in host:
        host = "[%s]" % host
    return host if port == 80 else "%s:%d" % (host, port)


def _token_ok(text):
    return bool(text) and all("!" <= c <= "~" and c not in '"(),/:;<=>?@[\\]{}' for c in text)


def encode_head(method, target, host, headers=()):
    """The request line, ``Host`` and ``headers`` (``(name, value)`` pairs), checked, as bytes
    (each line ends in CRLF) for ``finish_request``: a client keeps them for requests alike."""
    if not _token_ok(method):
        raise LocalProtocolError("bad request method %r" % (method,))
    if not target or any(c <= " " or c == "\x7f" for c in target):
        raise LocalProtocolError("request path %r contains whitespace or control characters"
                                 % (target,))
    lines = ["%s %s HTTP/1.1" % (method, target), "Host: " + host]
    for name, value in headers:
        if not _token_ok(name):
            raise LocalProtocolError("bad header name %r" % (name,))
        lines.append("%s: %s" % (name, value))
    return _encode_lines(lines)


def _encode_lines(lines):
    for line in lines:
        if "\r" in line or "\n" in line or "\0" in line:
            raise LocalProtocolError("header line %r contains CR, LF or NUL" % (line[:80],))
    try:
        return "".join([line + "\r\n" for line in lines]).encode("latin-1")
    except UnicodeEncodeError:
        raise LocalProtocolError("request head is not latin-1: %r" % (lines,)) from None


# The Content-Type line of each content type seen (checked once); None: no line (a transport
# leaves it out for application/octet-stream, what a body without one means, RFC 9110 8.3.5).
_TYPE_LINES = {None: b""}


def _type_line(content_type):
    line = _TYPE_LINES.get(content_type)
    if line is None:
        line = _encode_lines(["Content-Type: " + content_type])
        if len(_TYPE_LINES) < 64:
            _TYPE_LINES[content_type] = line
    return line


def finish_request(head, body=None, content_type=None):
    """The parts to write: ``head`` (``encode_head``), then with a body (even empty) its
    ``Content-Type`` (unless None) and ``Content-Length``, the blank line, the body.  ONE part
    (one write: the daemon is woken once) for a body up to ``COALESCE``; a larger one apart, not
    copied (a transport writes both with one ``sendmsg``)."""
    if body is None:
        return [head + b"\r\n"]
    head = b"%b%bContent-Length: %d\r\n\r\n" % (head, _type_line(content_type), len(body))
    if len(body) <= COALESCE:
        return [head + body] if body else [head]
    return [head, body]


def encode_request(method, target, host, headers=(), body=None, content_type=None):
    """The bytes of one request, as a list of parts to write in order (``finish_request``).
    ``headers``: ``(name, value)`` pairs sent after ``Host``; ``Content-Type`` and
    ``Content-Length`` follow when there is a body."""
    return finish_request(encode_head(method, target, host, headers), body, content_type)
