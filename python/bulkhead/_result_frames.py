"""How a handler's return value becomes a result frame: its type and its body
(docs/protocol.md, "Frame types"; docs/handlers.md, "Results").  Pure: no socket, no state;
``bulkhead.worker`` sends what this returns."""

import sys

from ._error_report import _describe, _error_body, _type_name
from ._protocol import HANDLER_ERROR, RESULT_BYTES, RESULT_JSON, RESULT_TEXT

__all__ = ["encode_result"]


def encode_result(result):
    """(frame type, body) for a handler's return value."""
    try:
        if isinstance(result, bytes):
            return RESULT_BYTES, result
        if isinstance(result, str):
            return RESULT_TEXT, result.encode("utf-8")
        if isinstance(result, (dict, list)):
            json = sys.modules.get("json")
            if json is None:
                import json
            return RESULT_JSON, json.dumps(result, ensure_ascii=False, allow_nan=False,
                                           separators=(",", ":")).encode("utf-8")
        if isinstance(result, bytearray):
            return RESULT_BYTES, result
        if isinstance(result, memoryview):
            if not result.c_contiguous:
                return RESULT_BYTES, result.tobytes()
            if result.format != "B" or result.ndim != 1:
                try:
                    result = result.cast("B")
                except TypeError:      # formats cast() does not know (e.g. structs)
                    return RESULT_BYTES, result.tobytes()
            return RESULT_BYTES, result
    except BaseException as exc:  # noqa: B036
        return HANDLER_ERROR, _error_body(*_describe(exc))
    return HANDLER_ERROR, _error_body(
        "TypeError",
        "the handler returned %s; it must return bytes, bytearray or memoryview "
        "(sent as application/octet-stream), str (text/plain) or dict/list (application/json)"
        % _type_name(type(result)), "")
