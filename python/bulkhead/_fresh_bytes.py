"""Large ``bytes`` objects written in place, on transparent huge pages where the kernel allows.

It owns one thing: making a new ``bytes`` object of a given size and letting a reader
(``recv_into``, ``os.preadv``) fill its storage directly, before anyone else sees it.  The worker
SDK uses it for a ``bytes`` handler's copy of a ``JOB_FD`` payload, and the client for the body
of a large answer.

Why: a payload-sized ``bytes`` is fresh memory.  glibc serves blocks over its mmap threshold
(at most 32 MiB) with a new mapping each time and unmaps them on free, so every 64 MiB answer
costs ~16,000 page faults: on a 2-core VM about 30 ms, twice the copy itself.  Where the block
is such a mapping, ``madvise(MADV_HUGEPAGE)`` on its 2 MiB-aligned inside makes those faults
32 (measured: 64 MiB filled in 14.5 ms instead of 30 ms).  Nothing else changes: the mapping is
the block's own and is unmapped with it, so no memory stays behind, and heap blocks (under the
threshold: their pages are already reused) are left alone.  With THP off
(``/sys/kernel/mm/transparent_hugepage/enabled`` = ``never``) the advice is a no-op.

This is how C code builds a ``bytes`` (``PyBytes_FromStringAndSize(NULL, n)``, then fill): the
object is not hashed, shared or returned until it is whole.  ctypes is imported at the first
large body, and without it (or off glibc) callers get ``None`` and keep their plain path.
"""

__all__ = ["HUGE_FROM", "new_bytes", "read_new_bytes"]

HUGE_FROM = 4 << 20          # smaller blocks are never glibc mappings worth advising
_HUGE_PAGE = 2 << 20
_MADV_HUGEPAGE = 14
_IS_MMAPPED = 2              # glibc's chunk header bit: the block is a mapping of its own

_api = None                  # (PyBytes_FromStringAndSize, madvise, ctypes) once loaded; False: none


def _load():
    global _api
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.gnu_get_libc_version   # noqa: B018 - glibc only: the chunk header is read below
        madvise = libc.madvise
        madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        madvise.restype = ctypes.c_int
        new = ctypes.pythonapi.PyBytes_FromStringAndSize
        new.argtypes = [ctypes.c_void_p, ctypes.c_ssize_t]
        new.restype = ctypes.py_object
        _api = (new, madvise, ctypes)
    except (ImportError, OSError, AttributeError):
        _api = False
    return _api


def new_bytes(size):
    """``(data, view)``: a new ``bytes`` of ``size`` bytes whose content is not yet written, and
    a writable memoryview of its storage for a reader to fill completely.  The caller must
    release ``view`` and drop ``data`` if it cannot fill it all, and must not hand ``data`` to
    anyone before it is filled.  None when this is not available here (the caller reads into a
    buffer of its own)."""
    api = _api if _api is not None else _load()
    if not api or size <= 0:
        return None
    new, madvise, ctypes = api
    data = new(None, size)
    address = ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value
    if size >= HUGE_FROM and id(data) % 16 == 0:
        # The object starts where malloc's block does (CPython hands large objects straight to
        # malloc); the word before it is glibc's chunk size, whose bit 1 marks a mapping.
        if ctypes.c_size_t.from_address(id(data) - 8).value & _IS_MMAPPED:
            start = (address + _HUGE_PAGE - 1) & ~(_HUGE_PAGE - 1)
            end = (address + size) & ~(_HUGE_PAGE - 1)
            if end > start:
                madvise(start, end - start, _MADV_HUGEPAGE)   # advice only: errors change nothing
    view = memoryview((ctypes.c_char * size).from_address(address)).cast("B")
    return data, view


def read_new_bytes(size, read_into):
    """A new ``bytes`` filled by ``read_into(view, offset)`` (it reads into ``view`` the bytes
    from ``offset`` on and returns how many, 0 at the end): all ``size`` bytes, or the ones that
    came when a read returned 0 first (a copy, once).  None when ``new_bytes`` is not available
    here."""
    made = new_bytes(size)
    if made is None:
        return None
    data, view = made
    done = 0
    try:
        while done < size:
            with view[done:] as rest:
                count = read_into(rest, done)
            if not count:
                break
            done += count
    finally:
        view.release()
    return data if done == size else data[:done]
