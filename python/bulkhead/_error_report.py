"""How the worker reports a failure: the JSON body of ``HANDLER_ERROR`` and ``START_FAILED``
(type, message, traceback, cut to fit the 1 MiB control limit), exception type names and
``str()`` that never raise, and warnings on stderr.

Used by ``bulkhead.worker``, its heartbeat thread and ``bulkhead.zygote``; it only formats text
(and writes ``_warn``'s line to stderr): it sends nothing and holds no state.  Imports only
builtins, like the worker (it loads once per worker process).
"""

import sys

from ._protocol import MAX_CONTROL_BODY

try:  # the C string quoter behind json (no `re` import); json itself is loaded only when needed
    from _json import encode_basestring_ascii as _quote
except ImportError:  # pragma: no cover - every CPython has _json
    def _quote(text):
        import json
        return json.dumps(text)

# Error frames must fit the 1 MiB control limit.  Text is cut to these many characters (keeping
# the traceback's end); ASCII JSON escaping can still make 12 bytes of one character, so the body
# is checked and cut further if needed.
_MAX_ERROR_MESSAGE = 16 * 1024
_MAX_ERROR_TRACEBACK = 64 * 1024
_MAX_ERROR_BODY = MAX_CONTROL_BODY - 1024


def _clean_text(text, limit, keep_tail=False):
    """``text`` as valid UTF-8-encodable str of at most ``limit`` characters."""
    if not isinstance(text, str):
        text = str(text)
    if len(text) > limit:
        cut = len(text) - limit
        if keep_tail:
            text = "[... %d characters cut ...]\n" % cut + text[-limit:]
        else:
            text = text[:limit] + "\n[... %d characters cut ...]" % cut
    # Lone surrogates cannot be encoded; strict JSON parsers refuse their \u escapes too.
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _error_body(type_name, message, tb_text):
    """JSON ``{"type", "message", "traceback"}`` (HANDLER_ERROR, START_FAILED), < 1 MiB."""
    message_limit, tb_limit = _MAX_ERROR_MESSAGE, _MAX_ERROR_TRACEBACK
    while True:
        body = ('{"type":%s,"message":%s,"traceback":%s}' % (
            _quote(_clean_text(type_name, 256)),
            _quote(_clean_text(message, message_limit)),
            _quote(_clean_text(tb_text, tb_limit, keep_tail=True)))).encode("ascii")
        if len(body) <= _MAX_ERROR_BODY:
            return body
        message_limit //= 2
        tb_limit //= 2


def _type_name(exc_type):
    """``ValueError`` for builtins, ``package.module.Name`` otherwise."""
    module = getattr(exc_type, "__module__", None)
    name = getattr(exc_type, "__qualname__", None) or exc_type.__name__
    if module in (None, "builtins", "__main__"):
        return name
    return "%s.%s" % (module, name)


def _safe_str(exc):
    try:
        return str(exc)
    except BaseException:  # noqa: B036 - a broken __str__ must not take the worker down
        try:
            return "<unprintable %s object>" % type(exc).__name__
        except BaseException:  # noqa: B036
            return "<unprintable exception>"


def _describe(exc, skip_frames=0):
    """(type name, message, traceback text) of an exception, dropping our own top frames."""
    tb = exc.__traceback__
    for _ in range(skip_frames):
        if tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
    try:
        import traceback  # only on the error path: it costs ~9 ms to import
        tb_text = "".join(traceback.format_exception(type(exc), exc, tb))
    except BaseException as format_error:  # noqa: B036
        tb_text = "(traceback unavailable: %s)" % _safe_str(format_error)
    return _type_name(type(exc)), _safe_str(exc), tb_text


def _warn(message):
    try:
        sys.stderr.write("bulkhead.worker: %s\n" % message)
        sys.stderr.flush()
    except Exception:  # noqa: BLE001 - stderr may be closed; nothing else to do
        pass
