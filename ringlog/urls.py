"""The server's base URL, checked once for every client (``RinglogClient``, ``DraftStream``, ``tail``)."""

from __future__ import annotations

from yarl import URL

EXAMPLE = "http://127.0.0.1:8000"


def base_url(url: object) -> str:
    """``url`` as a base URL (``http`` or ``https``, a host, an optional port and path prefix).

    Returns it without a trailing slash, so paths such as ``/v1/…`` can be appended. Raises
    ``ValueError`` with a one-line message for anything else: no scheme (``127.0.0.1:8000``),
    another scheme (``ws://``), no host, a bad port, whitespace or control characters, a query
    or a fragment, or userinfo (``http://user:pw@host``: credentials go in ``token`` /
    ``user_id``, never in the URL, whose password would be printed and sent as Basic auth).
    (RFC 3986 §3 names the parts.)
    """
    if isinstance(url, str) and "@" in url.split("?")[0].split("#")[0].partition("://")[2].split("/")[0]:
        # userinfo (RFC 3986 §3.2.1): aiohttp would send it as Basic auth, overriding the
        # token or user id, and echoing the URL would print the password
        raise ValueError(
            "the server URL must not hold a user name or password (user:password@); "
            "give credentials with --token or --user-id (token= / user_id= in Python)"
        )
    if not isinstance(url, str):
        raise ValueError(f"the server URL must be a string such as {EXAMPLE}, not {type(url).__name__}")
    if not url or any(ch.isspace() or not ch.isprintable() for ch in url):
        raise ValueError(
            f"the server URL must be like {EXAMPLE} (no spaces or control characters), not {url!r}"
        )
    try:
        parsed = URL(url)
        scheme, host, _port = parsed.scheme.lower(), parsed.host, parsed.port
    except (ValueError, TypeError) as e:
        raise ValueError(f"the server URL {url!r} cannot be parsed ({e}); give one like {EXAMPLE}") from None
    if scheme not in ("http", "https"):
        raise ValueError(f"the server URL must start with http:// or https:// (like {EXAMPLE}), not {url!r}")
    if parsed.user is not None or parsed.password is not None:
        raise ValueError("the server URL must not hold a user name or password; give --token or --user-id")
    if not host:
        raise ValueError(f"the server URL {url!r} names no host; give one like {EXAMPLE}")
    if parsed.query_string or parsed.fragment or "?" in url or "#" in url:
        raise ValueError(f"the server URL {url!r} must not have a query or fragment; give one like {EXAMPLE}")
    return scheme + url[len(scheme) :].rstrip("/")


def websocket_url(http_url: str) -> str:
    """The ``ws://`` / ``wss://`` URL for an ``http://`` / ``https://`` one (RFC 6455 §3)."""
    if http_url.startswith("https://"):
        return "wss://" + http_url.removeprefix("https://")
    if http_url.startswith("http://"):
        return "ws://" + http_url.removeprefix("http://")
    raise ValueError(f"not an http(s) URL: {http_url!r}")
