"""The errors of the clients' HTTP/1.1 (``bulkhead._h1``), apart so that the request encoder
(``bulkhead._h1_request``) and the answer reader share them without importing each other."""


class ProtocolError(Exception):
    """Base of this module's errors."""


class BadResponse(ProtocolError):
    """The peer's answer is not HTTP/1.x as this client reads it, or it ended early."""


class TooLarge(ProtocolError):
    """The answer's body is over the client's ``max_response_body``."""


class LocalProtocolError(ProtocolError, ValueError):
    """Our own misuse: a request that cannot be written, or one sent at the wrong time."""
