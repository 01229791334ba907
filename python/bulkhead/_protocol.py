"""Sans-I/O codec for the worker <-> supervisor frame protocol (docs/protocol.md, version 1).

How this works: bytes go in, frames come out, and nothing here touches a socket or a clock
(the same split as h11).  ``encode_frame`` turns a frame into bytes.  A ``FrameDecoder`` is fed
whatever bytes arrived (``feed``, or ``get_buffer``/``buffer_updated`` to receive straight into the
decoder's memory, like ``asyncio.BufferedProtocol``) and hands back complete frames from ``next``,
or ``None`` while it needs more.  ``feed_eof`` says the peer closed.

The header is validated as soon as its 16 bytes are present and before any body is buffered: magic
first, then version, then type (against the set of types this side accepts), then the body length
against that type's limit.  The first error raises ``ProtocolError`` and latches: every later call
raises the same error, because after a bad header the stream has no frame boundaries left.
``ProtocolError`` means the *peer* sent bad bytes; misuse by our own code (encoding an unknown type,
feeding after EOF) raises ``ValueError``/``RuntimeError`` instead.

Two frames carry a file descriptor beside their bytes: ``JOB_FD`` and ``RESULT_BYTES_FD``, whose
8-byte body is the size of the sealed memfd that rides along as SCM_RIGHTS (docs/protocol.md,
"Large payloads by memfd").  They are not in ``ALL_TYPES`` nor in the direction sets: without
its fd such a frame means nothing, so ``encode_frame`` refuses them (``encode_fd_frame`` makes
one, to be sent with its fd by ``sendmsg``), and a decoder accepts them only when its owner
collects the fds (``SUPERVISOR_TO_WORKER_FD`` / ``WORKER_TO_SUPERVISOR_FD``).  Their body length
is checked from the header like the other limits, but for equality.
"""

from struct import Struct

from ._fresh_bytes import HUGE_FROM, new_bytes

__all__ = [
    "PROTOCOL_VERSION", "MAGIC", "HEADER_SIZE", "MAX_CONTROL_BODY", "DEFAULT_MAX_PAYLOAD",
    "MAX_BODY_LENGTH",
    "HELLO", "READY", "START_FAILED", "RESULT_BYTES", "RESULT_JSON", "RESULT_TEXT",
    "HANDLER_ERROR", "HEARTBEAT", "JOB", "SHUTDOWN", "JOB_FD", "RESULT_BYTES_FD", "PAYLOAD_KEPT",
    "FD_TYPES",
    "FD_BODY_SIZE", "WORKER_TO_SUPERVISOR", "SUPERVISOR_TO_WORKER", "WORKER_TO_SUPERVISOR_FD",
    "SUPERVISOR_TO_WORKER_FD", "ALL_TYPES", "TYPE_NAMES", "RESULT_TYPES",
    "Frame", "ProtocolError", "FrameDecoder", "encode_header", "encode_frame", "encode_fd_frame",
    "decode_fd_size", "body_limit",
]

PROTOCOL_VERSION = 1
MAGIC = b"BK"
HEADER_SIZE = 16
MAX_CONTROL_BODY = 1 << 20          # JSON control frames: 1 MiB
DEFAULT_MAX_PAYLOAD = 64 << 20      # job and result frames: the pool's max_payload, default 64 MiB
MAX_BODY_LENGTH = 0xFFFFFFFF        # the length field is a u32
MAX_JOB_ID = 0xFFFFFFFFFFFFFFFF     # the job id field is a u64

# Worker -> supervisor.
HELLO = 0x01
READY = 0x02
START_FAILED = 0x03
RESULT_BYTES = 0x10
RESULT_JSON = 0x11
RESULT_TEXT = 0x12
HANDLER_ERROR = 0x13
HEARTBEAT = 0x20
# Worker -> supervisor, with a sealed memfd holding the result bytes (SCM_RIGHTS).
RESULT_BYTES_FD = 0x14
# Worker -> supervisor, empty, before a JOB_FD job's answer: its payload file is still mapped here
# (a handler kept a view), so the daemon must not write another payload into it.
PAYLOAD_KEPT = 0x15
# Zygote -> supervisor (answers to FORK, with the request's id).
FORKED = 0x30
FORK_REFUSED = 0x31
# Supervisor -> worker.
JOB = 0x80
SHUTDOWN = 0x81
# Supervisor -> zygote; the new worker's file descriptors ride along as SCM_RIGHTS.
FORK = 0x82
# Supervisor -> worker, with a sealed memfd holding the payload (SCM_RIGHTS).
JOB_FD = 0x83

TYPE_NAMES = {
    HELLO: "HELLO", READY: "READY", START_FAILED: "START_FAILED",
    RESULT_BYTES: "RESULT_BYTES", RESULT_JSON: "RESULT_JSON", RESULT_TEXT: "RESULT_TEXT",
    HANDLER_ERROR: "HANDLER_ERROR", HEARTBEAT: "HEARTBEAT", JOB: "JOB", SHUTDOWN: "SHUTDOWN",
    FORKED: "FORKED", FORK_REFUSED: "FORK_REFUSED", FORK: "FORK",
    JOB_FD: "JOB_FD", RESULT_BYTES_FD: "RESULT_BYTES_FD", PAYLOAD_KEPT: "PAYLOAD_KEPT",
}
WORKER_TO_SUPERVISOR = frozenset(
    (HELLO, READY, START_FAILED, RESULT_BYTES, RESULT_JSON, RESULT_TEXT, HANDLER_ERROR, HEARTBEAT,
     PAYLOAD_KEPT))
SUPERVISOR_TO_WORKER = frozenset((JOB, SHUTDOWN))
ZYGOTE_TO_SUPERVISOR = frozenset((HELLO, READY, START_FAILED, FORKED, FORK_REFUSED))
SUPERVISOR_TO_ZYGOTE = frozenset((FORK, SHUTDOWN))
ALL_TYPES = WORKER_TO_SUPERVISOR | SUPERVISOR_TO_WORKER | ZYGOTE_TO_SUPERVISOR | \
    SUPERVISOR_TO_ZYGOTE
RESULT_TYPES = frozenset((RESULT_BYTES, RESULT_JSON, RESULT_TEXT, HANDLER_ERROR))
# Frames with one fd beside them; their body is the fd's size, a u64, and nothing else.
FD_TYPES = frozenset((JOB_FD, RESULT_BYTES_FD))
FD_BODY_SIZE = 8
SUPERVISOR_TO_WORKER_FD = SUPERVISOR_TO_WORKER | frozenset((JOB_FD,))
WORKER_TO_SUPERVISOR_FD = WORKER_TO_SUPERVISOR | frozenset((RESULT_BYTES_FD,))

# Bodies limited by max_payload; every other body is a control body (1 MiB).  HANDLER_ERROR is
# JSON, so it counts as control (as in src/proto/frame.cc); the worker keeps it below 1 MiB.
# SHUTDOWN is documented as empty but, as in the C++ codec, only the control limit is enforced.
_PAYLOAD_TYPES = frozenset((RESULT_BYTES, RESULT_JSON, RESULT_TEXT, JOB))

# magic (2 bytes), version (u8), type (u8), body length (u32), job id (u64); little-endian.
_HEADER = Struct("<2sBBIQ")
_pack_header = _HEADER.pack
_unpack_header = _HEADER.unpack_from
_FD_SIZE = Struct("<Q")

# Bodies at least this long are received into one preallocated buffer of their exact size.
_LARGE_BODY = 64 * 1024
_SCRATCH_SIZE = 256 * 1024
# Large bodies up to this size are received into one buffer kept for the next frame: a fresh
# buffer per job costs a page fault per 4 KiB (~10 ms per MiB on a VM), a kept one nothing.
_KEEP_BODY_BUFFER = 64 * 1024 * 1024


def body_limit(frame_type, max_payload=DEFAULT_MAX_PAYLOAD, max_control=MAX_CONTROL_BODY):
    """The largest body allowed for ``frame_type`` (for an fd frame, the only length allowed)."""
    if frame_type in _PAYLOAD_TYPES:
        return max_payload
    if frame_type in FD_TYPES:
        return FD_BODY_SIZE
    return max_control


def _byte_view(data):
    """A flat unsigned-byte memoryview of any C-contiguous bytes-like object."""
    view = memoryview(data)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view


class ProtocolError(Exception):
    """The peer sent bytes that are not a valid frame stream.  Latches in the decoder."""


class Frame(object):
    """One decoded frame: ``type`` (int), ``job_id`` (int), ``body`` (bytes)."""

    __slots__ = ("type", "job_id", "body")

    def __init__(self, type, job_id, body):  # noqa: A002 - the protocol's word
        self.type = type
        self.job_id = job_id
        self.body = body

    def __eq__(self, other):
        if not isinstance(other, Frame):
            return NotImplemented
        return (self.type, self.job_id, self.body) == (other.type, other.job_id, other.body)

    __hash__ = None

    def __repr__(self):
        body = self.body
        shown = repr(body[:64]) + ("..." if len(body) > 64 else "")
        return "Frame(%s, job_id=%d, body=%s (%d bytes))" % (
            TYPE_NAMES.get(self.type, hex(self.type)), self.job_id, shown, len(body))


def encode_header(frame_type, job_id, length):
    """The 16-byte header of a frame whose body is ``length`` bytes long."""
    if frame_type not in ALL_TYPES:
        raise ValueError("unknown frame type %r" % (frame_type,))
    if not 0 <= length <= MAX_BODY_LENGTH:
        raise ValueError("frame body of %d bytes does not fit the u32 length field" % length)
    if not 0 <= job_id <= MAX_JOB_ID:
        raise ValueError("job id %r does not fit in a u64" % (job_id,))
    return _pack_header(MAGIC, PROTOCOL_VERSION, frame_type, length, job_id)


def encode_frame(frame_type, job_id, body=b""):
    """Header + body as one bytes object.  ``body`` is any bytes-like object."""
    if not isinstance(body, (bytes, bytearray)):
        body = _byte_view(body)
    return encode_header(frame_type, job_id, len(body)) + body


def encode_fd_frame(frame_type, job_id, size):
    """Header + body of a ``JOB_FD``/``RESULT_BYTES_FD`` frame for an fd of ``size`` bytes; the
    caller sends them in one ``sendmsg`` with the fd as SCM_RIGHTS."""
    if frame_type not in FD_TYPES:
        raise ValueError("frame type %r does not carry a file descriptor" % (frame_type,))
    if not 0 <= job_id <= MAX_JOB_ID:
        raise ValueError("job id %r does not fit in a u64" % (job_id,))
    if not 0 <= size <= MAX_JOB_ID:
        raise ValueError("size %r does not fit in a u64" % (size,))
    return _pack_header(MAGIC, PROTOCOL_VERSION, frame_type, FD_BODY_SIZE, job_id) + \
        _FD_SIZE.pack(size)


def decode_fd_size(body):
    """The size an fd frame's body declares (the decoder already checked its length)."""
    return _FD_SIZE.unpack(body)[0]


class FrameDecoder(object):
    """Incremental decoder of one direction of a frame stream.

    ``accept``: the frame types this side may receive (a worker passes ``SUPERVISOR_TO_WORKER``,
    a supervisor or test passes ``WORKER_TO_SUPERVISOR``; the ``_FD`` sets add the frames that
    carry an fd, for a reader that collects them); any other type is a protocol error.
    ``max_payload`` bounds job and result bodies, ``max_control`` the JSON control bodies.

    Use either ``feed(data)`` or the zero-copy pair ``buf = get_buffer(); n = sock.recv_into(buf);
    buffer_updated(n)``, then call ``next()`` until it returns ``None``.
    """

    def __init__(self, accept=ALL_TYPES, max_payload=DEFAULT_MAX_PAYLOAD,
                 max_control=MAX_CONTROL_BODY):
        accept = frozenset(accept)
        unknown = accept - ALL_TYPES - FD_TYPES
        if unknown:
            raise ValueError("unknown frame types in accept: %r" % sorted(unknown))
        self._limits = {t: min(body_limit(t, max_payload, max_control), MAX_BODY_LENGTH)
                        for t in accept}
        self._buf = bytearray()      # unparsed bytes: a header, or a header and a short body
        self._body = None            # memoryview: the body of a large frame being received
        self._kept = None            # bytearray reused for large bodies (_KEEP_BODY_BUFFER)
        # True: a large body is returned as a memoryview of the kept buffer, not copied into
        # bytes; the caller must be done with it (release it) before the next next() call.
        self.large_bodies_as_views = False
        self._body_fill = 0
        self._pending = None         # (type, job_id) of the large frame being received
        self._scratch = None         # memoryview handed out by get_buffer when not in a body
        self._handed = None          # which buffer get_buffer handed out last: "body"/"scratch"
        self._error = None
        self._eof = False

    # -- state -------------------------------------------------------------------------------

    @property
    def eof(self):
        """True once ``feed_eof`` was called."""
        return self._eof

    @property
    def error(self):
        """The latched ``ProtocolError``, or None."""
        return self._error

    @property
    def buffered(self):
        """Bytes held that do not yet form a complete frame (0 between frames)."""
        if self._body is not None:
            return HEADER_SIZE + self._body_fill + len(self._buf)
        return len(self._buf)

    def _fail(self, message):
        self._error = ProtocolError(message)
        self._buf = bytearray()
        self._body = None
        raise self._error

    # -- input -------------------------------------------------------------------------------

    def feed(self, data):
        """Append received bytes (any bytes-like object)."""
        if self._error is not None:
            raise self._error
        if self._eof:
            raise RuntimeError("feed() after feed_eof()")
        body = self._body
        if body is not None:
            view = _byte_view(data)
            n = len(view)
            fill = self._body_fill
            take = min(n, len(body) - fill)
            body[fill:fill + take] = view[:take]
            self._body_fill = fill + take
            if take < n:
                self._buf += view[take:]
            view.release()
        else:
            self._buf += data

    def feed_eof(self):
        """The peer closed its side.  A partial frame then is the peer's error (raised by next)."""
        if self._error is not None:
            raise self._error
        self._eof = True

    def get_buffer(self):
        """A writable memoryview to receive into; report the count with ``buffer_updated``.

        While a large body is incomplete this is the rest of that body's own buffer (no copy, and
        never past the body's end); otherwise a reusable scratch buffer.
        """
        if self._error is not None:
            raise self._error
        if self._eof:
            raise RuntimeError("get_buffer() after feed_eof()")
        body = self._body
        if body is not None and self._body_fill < len(body) and not self._buf:
            self._handed = "body"
            return memoryview(body)[self._body_fill:]
        if self._scratch is None:
            self._scratch = memoryview(bytearray(_SCRATCH_SIZE))
        self._handed = "scratch"
        return self._scratch

    def buffer_updated(self, nbytes):
        """``nbytes`` were written into the buffer from the last ``get_buffer``."""
        handed, self._handed = self._handed, None
        if handed is None:
            raise RuntimeError("buffer_updated() without get_buffer()")
        if nbytes <= 0:
            return
        if handed == "body":
            if self._body is None or self._body_fill + nbytes > len(self._body):
                raise RuntimeError("buffer_updated(%d) overruns the buffer" % nbytes)
            self._body_fill += nbytes
        else:
            if nbytes > len(self._scratch):
                raise RuntimeError("buffer_updated(%d) overruns the buffer" % nbytes)
            self.feed(self._scratch[:nbytes])

    # -- output ------------------------------------------------------------------------------

    def next(self):
        """The next complete frame, or None if more bytes are needed (or the stream ended)."""
        if self._error is not None:
            raise self._error
        body = self._body
        if body is not None:
            if self._body_fill < len(body):
                if self._eof:
                    self._fail("EOF in the middle of a frame body (%d of %d bytes)"
                               % (self._body_fill, len(body)))
                return None
            frame_type, job_id = self._pending
            self._body = None
            self._pending = None
            if self.large_bodies_as_views:
                view = body.toreadonly()     # a handler cannot write into the kept buffer
                body.release()
                return Frame(frame_type, job_id, view)
            made = new_bytes(len(body)) if len(body) >= HUGE_FROM else None
            if made is None:
                data = body.tobytes()
            else:               # a block of its own: filled on huge pages (_fresh_bytes)
                data, view = made
                view[:] = body
                view.release()
            body.release()
            return Frame(frame_type, job_id, data)
        buf = self._buf
        have = len(buf)
        if have < HEADER_SIZE:
            # Refuse garbage at once rather than after 16 bytes of it.
            if (have and buf[0] != MAGIC[0]) or (have > 1 and buf[1] != MAGIC[1]):
                self._fail("bad magic %r (expected %r)" % (bytes(buf[:2]), MAGIC))
            if self._eof and have:
                self._fail("EOF in the middle of a frame header (%d of %d bytes)"
                           % (have, HEADER_SIZE))
            return None
        magic, version, frame_type, length, job_id = _unpack_header(buf, 0)
        if magic != MAGIC:
            self._fail("bad magic %r (expected %r)" % (bytes(magic), MAGIC))
        if version != PROTOCOL_VERSION:
            self._fail("unsupported protocol version %d (expected %d)"
                       % (version, PROTOCOL_VERSION))
        limit = self._limits.get(frame_type)
        if limit is None:
            self._fail("unexpected frame type 0x%02x (%s)"
                       % (frame_type, TYPE_NAMES.get(frame_type, "unknown")))
        if length > limit:
            self._fail("%s body of %d bytes exceeds the limit of %d bytes"
                       % (TYPE_NAMES[frame_type], length, limit))
        if length != FD_BODY_SIZE and frame_type in FD_TYPES:
            self._fail("%s body of %d bytes (it must be exactly %d: the fd's size)"
                       % (TYPE_NAMES[frame_type], length, FD_BODY_SIZE))
        end = HEADER_SIZE + length
        if have >= end:
            if length:
                view = memoryview(buf)
                try:
                    data = view[HEADER_SIZE:end].tobytes()
                finally:
                    view.release()
            else:
                data = b""
            del buf[:end]
            return Frame(frame_type, job_id, data)
        if length >= _LARGE_BODY:
            # Move what we have into the body's buffer (the kept one if it fits); the rest of
            # the body is received there.
            big = self._kept
            if big is None or len(big) < length:
                big = bytearray(length)
                if length <= _KEEP_BODY_BUFFER:
                    self._kept = big
            body = memoryview(big)[:length]
            got = have - HEADER_SIZE
            body[:got] = buf[HEADER_SIZE:]
            del buf[:]
            self._body = body
            self._body_fill = got
            self._pending = (frame_type, job_id)
            return None
        if self._eof:
            self._fail("EOF in the middle of a frame body (%d of %d bytes)"
                       % (have - HEADER_SIZE, length))
        return None

    def forget_kept_buffer(self):
        """Stop reusing the large-body buffer (someone still holds a view of the last body)."""
        self._kept = None

    def __iter__(self):
        """Every complete frame buffered now."""
        while True:
            frame = self.next()
            if frame is None:
                return
            yield frame
