"""``bulkhead._fresh_bytes``: new bytes objects filled in place (the worker's copy of a ``JOB_FD``
payload, the client's large answers), huge-page advice only on blocks that are glibc mappings of
their own, and the client's whole-body read that uses it."""

import os
import socket
import threading

import pytest

from bulkhead import _fresh_bytes
from bulkhead.client import _receive_whole

MIB = 1 << 20


def vm_flags_at(address):
    """The VmFlags of the mapping holding ``address`` in /proc/self/smaps, as a set."""
    with open("/proc/self/smaps") as smaps:
        inside = False
        for line in smaps:
            head = line.split(" ", 1)[0]
            if "-" in head and not head.endswith(":"):
                start, end = (int(x, 16) for x in head.split("-"))
                inside = start <= address < end
            elif inside and line.startswith("VmFlags:"):
                return set(line.split()[1:])
    raise AssertionError("no mapping holds %#x" % address)


def storage_address(data):
    import ctypes
    return ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value


@pytest.mark.parametrize("size", [1, 4095, 4096, MIB + 7, 40 * MIB + 3])
def test_a_filled_bytes_object_is_an_ordinary_bytes_of_what_was_written(size):
    source = os.urandom(min(size, MIB)) * (size // MIB) + os.urandom(size % MIB)
    data, view = _fresh_bytes.new_bytes(size)
    assert type(data) is bytes and len(data) == size and not view.readonly
    view[:] = source
    view.release()
    assert data == source and hash(data) == hash(source)
    assert data[:5] == source[:5] and data[-5:] == source[-5:]


def test_nothing_to_make_for_an_empty_body():
    assert _fresh_bytes.new_bytes(0) is None


def test_a_block_that_is_its_own_mapping_gets_huge_page_advice():
    # 40 MiB is above glibc's largest mmap threshold (32 MiB): a mapping of its own.
    data, view = _fresh_bytes.new_bytes(40 * MIB)
    view.release()
    inside = (storage_address(data) + 4 * MIB) & ~(2 * MIB - 1)   # within the advised middle
    flags = vm_flags_at(inside)
    if not os.path.exists("/sys/kernel/mm/transparent_hugepage/enabled"):
        pytest.skip("this kernel has no transparent huge pages: the advice is refused")
    assert "hg" in flags, flags


def test_small_and_heap_blocks_are_left_alone():
    # Under HUGE_FROM nothing is advised, whatever glibc did with the block.
    data, view = _fresh_bytes.new_bytes(_fresh_bytes.HUGE_FROM - 1)
    view.release()
    assert "hg" not in vm_flags_at(storage_address(data) + MIB)


def _serve(sock, payload, close_after=None):
    def run():
        try:
            sock.sendall(payload if close_after is None else payload[:close_after])
        finally:
            sock.close()
    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.mark.parametrize("size", [MIB, 33 * MIB])
def test_the_clients_whole_body_read_returns_exactly_the_bytes_sent(size):
    ours, theirs = socket.socketpair()
    payload = os.urandom(MIB) * (size // MIB)
    thread = _serve(theirs, payload)
    try:
        got = _receive_whole(ours, size)
    finally:
        thread.join()
        ours.close()
    assert type(got) is bytes and got == payload


def test_a_body_cut_short_by_the_server_comes_back_as_what_arrived():
    ours, theirs = socket.socketpair()
    payload = os.urandom(2 * MIB)
    thread = _serve(theirs, payload, close_after=MIB + 5)
    try:
        got = _receive_whole(ours, len(payload))
    finally:
        thread.join()
        ours.close()
    assert got == payload[:MIB + 5]
