"""The blocking client's sockets (``bulkhead.client``): one keep-alive connection's socket and
HTTP/1.1 state, its kernel timeouts, the idle check before reuse, the one-``sendmsg`` write of a
large request, and the fork epoch that keeps a forked child off its parent's connections."""

import os
import socket
import struct
import sys
from select import POLLIN, poll

from ._h1 import ClientConnection

_RECV_BUFFER = 256 * 1024

# Kernel socket timeouts (struct timeval as two C longs) where that layout is certain: 64-bit
# Linux.  Elsewhere the socket keeps Python's timeouts (a poll() before each read and write).
_KERNEL_TIMEOUTS = (sys.platform.startswith("linux") and struct.calcsize("@l") == 8
                    and hasattr(socket, "SO_RCVTIMEO"))
_TIMED_OUT = (socket.timeout, BlockingIOError)   # BlockingIOError: EAGAIN of SO_RCVTIMEO/SNDTIMEO

fork_epoch = 0   # bumped in a forked child: connections opened before belong to the parent


def _forked():
    global fork_epoch
    fork_epoch += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forked)


class _Connection(object):
    """One keep-alive connection: the socket, its HTTP/1.1 state (``h1``, a
    ``bulkhead._h1.ClientConnection``) and what the transport needs around them.  ``generation``
    and ``epoch`` say when it was opened: before a ``close()`` or a fork, it is not used again."""

    __slots__ = ("sock", "h1", "timeout", "generation", "epoch", "buffer", "view", "poller")

    def __init__(self, sock, timeout, max_body, generation):
        self.sock = sock
        self.h1 = ClientConnection(max_body)
        self.timeout = timeout
        self.generation = generation
        self.epoch = fork_epoch
        self.buffer = bytearray(_RECV_BUFFER)   # calloc'd: pages only as answers fill it
        self.view = memoryview(self.buffer)
        self.poller = None

    def set_timeout(self, seconds):
        """Bounds each read and write by ``seconds`` (None: no bound)."""
        if _KERNEL_TIMEOUTS:
            if seconds is None:
                value = b"\0" * 16
            else:   # 0 would mean "no bound" to the kernel: at least 1 us
                usec = max(1, int(seconds * 1e6 + 0.5))
                value = struct.pack("@ll", usec // 1000000, usec % 1000000)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)
        else:
            self.sock.settimeout(seconds)
        self.timeout = seconds

    def dropped(self):
        """True if the server closed (or wrote to) this idle connection.  One poll(0): a
        syscall, but a job sent into a connection the server already closed could not be sent
        again (``job_may_have_run``)."""
        poller = self.poller
        if poller is None:
            poller = self.poller = poll()
            poller.register(self.sock, POLLIN)
        return bool(poller.poll(0))

    def close(self):
        self.sock.close()

    def __del__(self):      # dropped mid-request (KeyboardInterrupt): no ResourceWarning
        self.sock.close()


def _send_parts(sock, parts):
    """Writes a head and a large body with one ``sendmsg`` (the body is not copied), then what
    it did not take: ``sent`` < 0 is the tail of the head still to go."""
    head, body = parts
    sent = sock.sendmsg(parts) - len(head)
    if sent < 0:
        sock.sendall(head[sent:])
        sent = 0
    if sent < len(body):
        with memoryview(body) as view:
            sock.sendall(view[sent:])
