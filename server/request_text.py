"""Request text that is ambiguous or not valid UTF-8, refused once, before any handler or the
upgrade.

Ambiguous: a header or query parameter the server reads, given more than once (``?limit=1&
limit=5000``, two ``X-User-Id`` lines); which copy counts would be an accident of the library.

What aiohttp hands us: header values are decoded as UTF-8 with ``surrogateescape``, so every
byte that is not part of valid UTF-8 arrives as a lone surrogate U+DC80–U+DCFF (0xFF →
``"\\udcff"``); such a string raises ``UnicodeEncodeError`` wherever it is encoded again (pyjwt,
``base64``, the log writer). Query values are percent-decoded by yarl, which replaces invalid
UTF-8 with U+FFFD, so the original bytes are visible only in the raw query string. Raw non-ASCII
bytes in the request line never get this far: aiohttp's parser answers 400 itself.

:func:`refusal` (asked first by the app's one middleware, :mod:`server.front`) checks every
header and query parameter the server reads and answers — in the contract's JSON error body, before authentication, before a
WebSocket upgrade — 401 ``unauthorized`` when the bad bytes are in a credential (Authorization,
X-User-Id, ``access_token``, ``user_id``), else 400 ``invalid_parameter``. Headers and
parameters the server never reads are left alone (RFC 9110 §5.5: a recipient treats obs-text
as opaque data).
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from aiohttp import web
from multidict import CIMultiDictProxy

from server.errors import error_response

CREDENTIAL_HEADERS = ("Authorization", "X-User-Id")
READ_HEADERS = (
    *CREDENTIAL_HEADERS,
    "If-Match",
    "If-None-Match",
    "Idempotency-Key",
    "Origin",
    "Content-Type",
    "Access-Control-Request-Method",
    "Host",
)
"""Every header the server (or aiohttp on its behalf) interprets as text."""

ASCII_HEADERS = (
    "Upgrade",
    "Connection",
    "Sec-WebSocket-Key",
    "Sec-WebSocket-Version",
    "Sec-WebSocket-Protocol",
    "Sec-WebSocket-Extensions",
)
"""WebSocket handshake headers (RFC 6455 §4.2.1): tokens and base64, ASCII by grammar; aiohttp's
handshake raises on a non-ASCII ``Sec-WebSocket-Key`` instead of answering 400."""

CREDENTIAL_PARAMS = ("access_token", "user_id")
READ_PARAMS = (*CREDENTIAL_PARAMS, "since", "limit", "wait", "archived", "at_seq", "after")
"""Every query parameter the server reads."""


def undecodable(value: str) -> bool:
    """True when ``value`` holds a byte that was not valid UTF-8 (a surrogateescape'd byte)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def bad_header(headers: CIMultiDictProxy[str]) -> tuple[str, bool, str] | None:
    """The first read header whose bytes are unusable: (name, is a credential, what is wrong);
    or None."""
    for name in READ_HEADERS:
        for value in headers.getall(name, ()):
            if undecodable(value):
                return name, name in CREDENTIAL_HEADERS, "is not valid UTF-8 text"
    for name in ASCII_HEADERS:
        for value in headers.getall(name, ()):
            if not value.isascii():
                return name, False, "must be ASCII (RFC 6455)"
    return None


def bad_query_param(raw_query: str) -> tuple[str, bool, str] | None:
    """The first read parameter in a raw (percent-encoded) query string whose value is not
    valid UTF-8 once decoded, and whether it is a credential; or None.

    ``+`` is a space and pairs are split on ``&``, as in ``application/x-www-form-urlencoded``
    and yarl.
    """
    for pair in raw_query.split("&"):
        raw_name, _, raw_value = pair.partition("=")
        name = unquote_to_bytes(raw_name.replace("+", " ")).decode("utf-8", "replace")
        if name not in READ_PARAMS:
            continue
        try:
            unquote_to_bytes(raw_value.replace("+", " ")).decode("utf-8")
        except UnicodeDecodeError:
            return name, name in CREDENTIAL_PARAMS, "is not valid UTF-8 text"
    return None


def repeated_header(headers: CIMultiDictProxy[str]) -> str | None:
    """The first read header (:data:`READ_HEADERS`) given more than once, or None.

    Which one a handler would see is an accident of the library (aiohttp's ``get`` takes the
    first; a proxy in front may keep the last), so two ``X-User-Id`` lines could mean two
    users: the request is ambiguous and refused (RFC 9110 §5.3 lets only list-valued fields
    repeat, and the server reads none of its headers as a list). The WebSocket handshake's own
    headers (:data:`ASCII_HEADERS`) are left to aiohttp: ``Connection`` and
    ``Sec-WebSocket-Protocol`` may legitimately repeat (RFC 6455 §4.1).
    """
    for name in READ_HEADERS:
        if len(headers.getall(name, ())) > 1:
            return name
    return None


def repeated_query_param(raw_query: str) -> str | None:
    """The first read parameter (:data:`READ_PARAMS`) named more than once in a raw query string
    (names compared after percent-decoding, ``+`` as space, as yarl does), or None."""
    seen: set[str] = set()
    for pair in raw_query.split("&"):
        raw_name = pair.partition("=")[0]
        name = unquote_to_bytes(raw_name.replace("+", " ")).decode("utf-8", "replace")
        if name in READ_PARAMS:
            if name in seen:
                return name
            seen.add(name)
    return None


def _refuse(name: str, kind: str, problem: str, credential: bool) -> web.Response:
    message = f"the {name} {kind} {problem}"
    if credential:
        return error_response(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})
    return error_response(400, "invalid_parameter", message)


_READ_LOWER = frozenset(name.lower() for name in READ_HEADERS)
_ASCII_LOWER = frozenset(name.lower() for name in ASCII_HEADERS)


def _headers_plainly_fine(headers: CIMultiDictProxy[str]) -> bool:
    """True when no read header is given twice and every read or handshake header is ASCII: one
    pass over the headers the request has (about six), instead of a look-up of each of the
    fifteen names the checks below ask for. False means "ask the exact checks", not "refuse"."""
    seen: set[str] = set()
    for name, value in headers.items():
        key = name.lower()
        if key in _READ_LOWER:
            if key in seen or not value.isascii():
                return False
            seen.add(key)
        elif key in _ASCII_LOWER and not value.isascii():
            return False
    return True


def refusal(request: web.Request) -> web.Response | None:
    """The 401/400 answer for a request that is ambiguous (a read header or parameter given
    twice) or has unusable bytes in what the server reads; or None.

    Credentials (:data:`CREDENTIAL_HEADERS`, :data:`CREDENTIAL_PARAMS`) are 401
    ``unauthorized``, everything else 400 ``invalid_parameter`` (API.md "Errors"). Runs on every
    request: a request with plain ASCII headers and no query (every append) is let through after
    one pass over its headers; any other is checked name by name, in the order below.
    """
    raw_query = request.rel_url.raw_query_string
    if not raw_query and _headers_plainly_fine(request.headers):
        return None  # an ASCII string has no undecodable byte; nothing is given twice
    repeated = repeated_header(request.headers)
    if repeated is not None:
        return _refuse(repeated, "header", "is given more than once", repeated in CREDENTIAL_HEADERS)
    repeated = repeated_query_param(raw_query)
    if repeated is not None:
        return _refuse(repeated, "query parameter", "is given more than once", repeated in CREDENTIAL_PARAMS)
    found = bad_header(request.headers)
    if found is None:
        found = bad_query_param(raw_query)
        kind = "query parameter"
    else:
        kind = "header"
    if found is None:
        return None
    name, credential, problem = found
    return _refuse(name, kind, problem, credential)
