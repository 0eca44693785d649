"""Which ``Origin`` may use this server: one rule for CORS and for the WebSocket upgrade.

An origin is compared in its RFC 6454 §6.1 serialisation: ``scheme://host[:port]`` with the
scheme and host lower-cased and the scheme's default port (http 80, https 443) left out, so
``HTTPS://App.Example:443`` and ``https://app.example`` are the same origin. The opaque origin
``null`` (sandboxed frames, ``file:`` pages) is never an allowed origin unless ``*`` allows
every origin.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

ANY_ORIGIN = "*"

_ORIGIN = re.compile(
    r"(?P<scheme>https?)://(?P<host>\[[0-9a-f:.]+\]|[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?)"
    r"(?::(?P<port>[0-9]{1,5}))?",
    re.IGNORECASE | re.ASCII,
)
_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_origin(origin: str) -> str | None:
    """The serialised form of ``origin`` (as sent in an ``Origin`` header), or None when it is
    not an http(s) origin (``null``, a path, userinfo, a port over 65535, non-ASCII…)."""
    match = _ORIGIN.fullmatch(origin.strip(" \t"))
    if match is None:
        return None
    scheme = match["scheme"].lower()
    host = match["host"].lower()
    if match["port"] is None:
        return f"{scheme}://{host}"
    port = int(match["port"])
    if not 0 < port <= 65535:
        return None
    return f"{scheme}://{host}" if port == _DEFAULT_PORTS[scheme] else f"{scheme}://{host}:{port}"


def parse_allowed_origin(value: str) -> str:
    """One ``--allowed-origins`` entry, normalised: ``*`` or an http(s) origin; a single trailing
    ``/`` (as copied from a browser's address bar) is tolerated. Raises ValueError otherwise."""
    if value == ANY_ORIGIN:
        return value
    normal = normalize_origin(value.removesuffix("/"))
    if normal is None:
        raise ValueError(
            f"{value!r} is not an origin: write scheme://host[:port] (http or https, no path), or *"
        )
    return normal


def same_origin(origin: str | None, host: str | None) -> bool:
    """Whether ``origin`` is this server's own: its host and port are the request's ``Host``
    (RFC 6454 §4; either scheme, since a proxy in front may terminate TLS). A browser sends
    ``Origin`` with the page's origin and ``Host`` with the target's, so a page of another site
    never matches (RFC 6455 §10.2's cross-site check still holds)."""
    if origin is None or not host:
        return False
    normal = normalize_origin(origin)
    return normal is not None and normal in (
        normalize_origin(f"http://{host}"),
        normalize_origin(f"https://{host}"),
    )


def origin_allowed(allowed: Iterable[str], origin: str | None, host: str | None = None) -> bool:
    """Whether a request carrying ``Origin: origin`` comes from an allowed origin.

    ``allowed`` holds normalised entries (:func:`parse_allowed_origin`). The server's own origin
    (:func:`same_origin` with the request's ``Host``) is always allowed: the demo page it serves
    at ``/`` works whatever ``--allowed-origins`` lists. No ``Origin`` header
    is never "allowed" here: the channels decide what a request without one means (CORS adds
    no headers; the WebSocket lets non-browser clients in). With ``*`` every origin is allowed,
    ``null`` included, but a value that is no origin at all is not (it is never echoed back).
    """
    if origin is None:
        return False
    if same_origin(origin, host):
        return True
    normal = normalize_origin(origin)
    allowed = tuple(allowed)
    if ANY_ORIGIN in allowed:
        return normal is not None or origin == "null"  # any origin, but not any text
    return normal is not None and normal in allowed
