"""File descriptors on the worker's control socket: large payloads and results as sealed memfds
(docs/protocol.md, "Large payloads by memfd").

It owns four things, and ``bulkhead.worker`` decides when each is used:

- the worker's receiving side (``Receiver``): every read is a ``recvmsg`` with room for a few
  fds, received close-on-exec (a handler's subprocesses must not inherit them).  The fds queue up
  in arrival order until the ``JOB_FD`` frame they came with is decoded: the kernel hands an fd
  over with the first byte of the ``sendmsg`` it rode in, so it is queued no later than the
  frame is complete, possibly one read earlier;
- a ``JOB_FD`` job's payload (``open_job``): the fd must hold at least the frame's size (the
  daemon reuses a pool's files: one may be larger, zeros past the payload), the handler gets
  bytes (one copy, read from the fd into a ``_fresh_bytes`` object, and the fd is closed before
  it runs) or, annotated ``memoryview``, a read-only view of a mapping of the memfd (``Job``);
- the end of such a job (``settle_job``): its answer made independent of the mapping, then the
  mapping ended before the answer is sent, since once answered the daemon may write the next
  payload into the same file. If the handler kept a view, the mapping stays and the worker says
  so first (``PAYLOAD_KEPT``): that file is then never reused;
- ``RESULT_BYTES_FD`` (``send_result_fd``, ``send_file``): the result written into a new memfd
  and sealed, or the job's own fd when the handler gave back its whole payload view.

Nothing here writes anything but ``RESULT_BYTES_FD``, and only from the main thread after the
heartbeat thread was told the job ended: the same order as every other result frame.
``mmap`` is imported at the first ``JOB_FD``, so a worker that never gets one does not load it.
"""

import os
from _socket import CMSG_SPACE, MSG_CTRUNC, SCM_RIGHTS, SOL_SOCKET
from errno import ENOMEM
from struct import Struct

from ._fresh_bytes import read_new_bytes
from ._protocol import RESULT_BYTES, RESULT_BYTES_FD, ProtocolError, decode_fd_size, encode_fd_frame

try:
    from _socket import MSG_CMSG_CLOEXEC as _CLOEXEC
except ImportError:  # pragma: no cover - not Linux
    _CLOEXEC = 0
try:
    from _socket import MSG_NOSIGNAL as _NO_SIGPIPE   # EPIPE even if a handler reset SIGPIPE
except ImportError:  # pragma: no cover - not Linux
    _NO_SIGPIPE = 0
try:
    from fcntl import fcntl, F_ADD_SEALS, F_SEAL_GROW, F_SEAL_SEAL, F_SEAL_SHRINK, F_SEAL_WRITE
    _SEALS = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL    # nothing may change
except ImportError:  # pragma: no cover - not Linux: results stay inline
    F_ADD_SEALS = None

__all__ = ["Receiver", "Job", "open_job", "settle_job", "send_file", "send_result_fd"]

_FDS_PER_READ = 4               # one rides with each JOB_FD; more in one read: MSG_CTRUNC
_MAX_QUEUED_FDS = 4             # fds waiting for their frame; more: the supervisor is confused
_ANCILLARY = CMSG_SPACE(_FDS_PER_READ * 4)
_INT = Struct("i")              # one fd as SCM_RIGHTS data (a C int)


class Receiver(object):
    """The worker's ``read_frame``: frames from ``decoder``, the fds beside them in ``fds``."""

    def __init__(self, sock, decoder):
        self._recvmsg_into = sock.recvmsg_into
        self._decoder = decoder
        self.fds = []           # received, not yet taken by a JOB_FD frame (oldest first)

    def read_frame(self):
        """The next frame from the supervisor, or None at EOF.  Raises ProtocolError."""
        decoder = self._decoder
        recvmsg_into = self._recvmsg_into
        while True:
            frame = decoder.next()
            if frame is not None or decoder.eof:
                return frame
            buf = decoder.get_buffer()
            try:
                n, ancillary, flags, _ = recvmsg_into([buf], _ANCILLARY, _CLOEXEC)
            except ConnectionResetError:
                n, ancillary, flags = 0, None, 0
            buf = None
            if ancillary or flags & MSG_CTRUNC:
                self._queue(ancillary, flags)
            if n:
                decoder.buffer_updated(n)
            else:
                decoder.buffer_updated(0)
                decoder.feed_eof()

    def _queue(self, ancillary, flags):
        fds = self.fds
        for level, kind, data in ancillary or ():
            if level == SOL_SOCKET and kind == SCM_RIGHTS:
                fds.extend(memoryview(data[:len(data) - len(data) % 4]).cast("i").tolist())
        if flags & MSG_CTRUNC:
            self.close_fds()
            raise ProtocolError("file descriptors were cut off (MSG_CTRUNC): more than %d came "
                                "with one read, or no fd was free here" % _FDS_PER_READ)
        if len(fds) > _MAX_QUEUED_FDS:
            count = len(fds)
            self.close_fds()
            raise ProtocolError("%d file descriptors arrived without their JOB_FD frames" % count)

    def pop_fd(self):
        """The oldest fd not yet taken: the one that came with the ``JOB_FD`` just decoded."""
        if not self.fds:
            raise ProtocolError("JOB_FD frame without a file descriptor (SCM_RIGHTS)")
        return self.fds.pop(0)

    def close_fds(self):
        fds, self.fds = self.fds, []
        for fd in fds:
            _close(fd)


class Job(object):
    """A ``JOB_FD`` job of a ``memoryview`` handler: its fd, its read-only mapping and the view
    the handler got.  ``close`` (after the job's answer was sent) ends all three."""

    __slots__ = ("fd", "size", "mapping", "view")

    def __init__(self, fd, size, mapping):
        self.fd = fd
        self.size = size
        self.mapping = mapping
        self.view = memoryview(mapping)     # read-only: the mapping is PROT_READ

    def is_whole_payload(self, body):
        """True when ``body`` (a result) is a C-contiguous view of this job's whole mapping:
        the answer is then this job's own fd, already sealed by the daemon, without a copy."""
        return (type(body) is memoryview and body.obj is self.mapping and body.c_contiguous
                and body.nbytes == self.size)

    def close(self):
        """The view stops working (a handler that kept it gets ValueError), the mapping is
        unmapped and the fd closed.  If something still exports from the view or the mapping
        (numpy.frombuffer), that is left to unmap it when it goes; our fd is closed anyway.
        True when the mapping stays for that reason."""
        view, self.view = self.view, None
        mapping, self.mapping = self.mapping, None
        fd, self.fd = self.fd, -1
        try:
            view.release()
        except BufferError:
            pass
        kept = False
        try:
            mapping.close()
        except BufferError:
            kept = True
        if fd >= 0:
            _close(fd)
        return kept


def open_job(frame, fd, as_view):
    """``(job, payload)`` of a ``JOB_FD`` frame whose fd is ``fd`` (it is ours to close): for a
    ``memoryview`` handler ``(Job, its view)``, for any other ``(None, bytes)``.  Raises
    ProtocolError when the fd is not what the frame says (the worker then exits)."""
    size = decode_fd_size(frame.body)
    try:
        try:
            actual = os.fstat(fd).st_size
        except OSError as exc:
            raise ProtocolError("JOB_FD's file descriptor: %s" % exc) from None
        if size == 0 or actual < size:
            raise ProtocolError("JOB_FD declares %d bytes but its file descriptor holds %d"
                                % (size, actual))
        if not as_view:
            data = _read_whole(fd, size)    # the one copy; nothing stays mapped during the job
            if data is not None:
                return None, data
        mapping = _map(fd, size)
        if as_view:
            job = Job(fd, size, mapping)
            fd = -1                         # the job closes it once answered
            return job, job.view
        try:
            return None, mapping[:]         # the same copy, where _fresh_bytes is not available
        finally:
            mapping.close()
    finally:
        if fd >= 0:
            _close(fd)


def _read_whole(fd, size):
    """The file's ``size`` bytes read straight into a new ``bytes`` (``_fresh_bytes``: on huge
    pages when large), or None where that is not available."""
    try:
        data = read_new_bytes(size, lambda view, offset: os.preadv(fd, [view], offset))
    except OSError as exc:
        raise ProtocolError("cannot read JOB_FD's file descriptor: %s" % exc) from None
    if data is not None and len(data) < size:   # a sealed file cannot shrink: never
        raise ProtocolError("JOB_FD's file descriptor ended after %d of %d bytes"
                            % (len(data), size))
    return data


def _map(fd, size):
    from mmap import MAP_SHARED, PROT_READ, mmap
    try:
        from mmap import MAP_POPULATE       # the pages are there: map them all in one go
    except ImportError:  # pragma: no cover - not Linux
        MAP_POPULATE = 0
    try:
        return mmap(fd, size, flags=MAP_SHARED | MAP_POPULATE, prot=PROT_READ)
    except OSError as exc:
        if exc.errno == ENOMEM:             # RLIMIT_AS: as an inline payload we cannot allocate
            raise MemoryError("cannot map a JOB_FD payload of %d bytes: %s" % (size, exc))
        raise ProtocolError("cannot map JOB_FD's file descriptor: %s" % exc) from None


def settle_job(job, frame_type, body, memfd_at):
    """End ``job`` (a ``JOB_FD`` job of a ``memoryview`` handler) before its answer
    ``(frame_type, body)`` is sent.  Returns ``(body, fd, kept)``: ``fd`` >= 0 is a
    sealed file holding the bytes result (ours to close once sent as ``RESULT_BYTES_FD``: the
    job's own fd when the handler gave back its whole payload view, a new memfd from
    ``memfd_at`` bytes on), else ``body`` is sent inline, copied out of the mapping if it was a
    view; ``kept`` is True when something still exports from the mapping (send ``PAYLOAD_KEPT``
    first)."""
    fd = -1
    if frame_type == RESULT_BYTES and memfd_at is not None:
        if job.is_whole_payload(body):
            fd, job.fd = job.fd, -1         # given back as the answer: not closed with the job
        elif len(body) >= memfd_at:
            fd = _sealed_memfd(body, len(body))
    if fd >= 0:
        body = len(body)
    elif type(body) is memoryview:          # it may look into the mapping, which ends below
        body = body.tobytes()
    return body, fd, job.close()


def send_file(sock, job_id, fd, size, exit_now):
    """``RESULT_BYTES_FD`` of ``size`` bytes with ``fd``, which is then closed (``settle_job``
    made it)."""
    try:
        _send_fd_frame(sock, job_id, fd, size, exit_now)
    finally:
        _close(fd)


def send_result_fd(sock, job_id, body, exit_now):
    """Send ``body`` (a flat bytes-like result) as ``RESULT_BYTES_FD`` in a new sealed memfd.
    False, having sent nothing, when no memfd could be made (EMFILE, ENOSPC, ENOSYS...): the
    caller sends it inline.  When the supervisor is gone, ``exit_now(0)`` (the worker's
    ``_exit``), as its ``send`` does."""
    fd = _sealed_memfd(body, len(body))
    if fd < 0:
        return False
    send_file(sock, job_id, fd, len(body), exit_now)   # the daemon holds its own copy after
    return True


def _send_fd_frame(sock, job_id, fd, size, exit_now):
    data = encode_fd_frame(RESULT_BYTES_FD, job_id, size)
    try:
        # The fd rides with the header's first byte: the daemon has it by the time it has the
        # frame.  A stream socket may take part of the bytes; the rest goes without the fd.
        sent = sock.sendmsg([data], [(SOL_SOCKET, SCM_RIGHTS, _INT.pack(fd))], _NO_SIGPIPE)
        if sent < len(data):
            sock.sendall(data[sent:], _NO_SIGPIPE)
    except (BrokenPipeError, ConnectionResetError):
        exit_now(0)         # nobody will read a result: leave at once


def _sealed_memfd(body, size):
    """A new memfd holding ``body``, sealed against any change; -1 if that failed."""
    if F_ADD_SEALS is None:
        return -1
    try:
        fd = os.memfd_create("bulkhead-result", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    except (OSError, AttributeError):   # EMFILE, ENOSYS, no os.memfd_create: the result goes inline
        return -1
    try:
        with memoryview(body) as view, view.cast("B") as flat:
            done = 0
            while done < size:      # os.write may write less than asked
                with flat[done:] as rest:
                    done += os.write(fd, rest)
        fcntl(fd, F_ADD_SEALS, _SEALS)
    except OSError:                 # ENOSPC, a memory limit: the result goes inline
        _close(fd)
        return -1
    return fd


def _close(fd):
    try:
        os.close(fd)
    except OSError:
        pass
