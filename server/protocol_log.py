"""Requests that are not HTTP at all, logged as one line instead of an error with a traceback.

aiohttp's parser refuses a malformed request itself (a NUL or DEL byte in a header value, a raw
0xFF in the path, a bad request line): it answers a plain-text ``400 Bad Request`` and logs
"Error handling request" at ERROR *with a traceback* on the ``aiohttp.server`` logger, so any
client could fill the log with tracebacks. :class:`ProtocolRefusalFilter` turns exactly those
records — the ones whose exception is aiohttp's ``HttpProcessingError`` family
(``BadHttpMessage``, ``BadStatusLine``, ``InvalidHeader``, ``LineTooLong``, …) — into one INFO
line naming the client and the parser's reason. Every other record on that logger, such as a
real bug in a handler, keeps its level and traceback.

Such refusals keep aiohttp's plain-text 400 body (not the contract's JSON error body): the
request never reached the application, so no middleware of ours runs (docs/API.md additions).
"""

from __future__ import annotations

import logging

from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

PROTOCOL_LOGGER = "aiohttp.server"


class ProtocolRefusalFilter(logging.Filter):
    """Rewrites an ``aiohttp.server`` record about a malformed request into one INFO line.

    A record whose ``exc_info`` holds an ``HttpProcessingError`` becomes
    ``refused a malformed HTTP request from <peer>: <reason>`` at INFO, without traceback;
    any other record passes unchanged.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, RequestPayloadError):  # a body that did not decode, left unread
            cause = exc.__cause__
            exc = (
                cause
                if isinstance(cause, HttpProcessingError)
                else HttpProcessingError(
                    code=400, message=str(exc.args[0] if exc.args else "bad request body")
                )
            )
        if not isinstance(exc, HttpProcessingError):
            return True
        peer = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
        reason = " ".join(str(exc.message or type(exc).__name__).split())
        record.msg = "refused a malformed HTTP request from %s: %s (HTTP %s)"
        record.args = (peer, ascii(reason)[1:-1], exc.code)
        record.levelno = logging.INFO
        record.levelname = logging.getLevelName(logging.INFO)
        record.exc_info = None
        record.exc_text = None
        return True


def install_protocol_refusal_filter() -> None:
    """Add :class:`ProtocolRefusalFilter` to the ``aiohttp.server`` logger, once per process."""
    logger = logging.getLogger(PROTOCOL_LOGGER)
    if not any(isinstance(f, ProtocolRefusalFilter) for f in logger.filters):
        logger.addFilter(ProtocolRefusalFilter())
