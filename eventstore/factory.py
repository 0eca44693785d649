"""The store factory: which backend a URL names, built but not yet opened.

Kept apart from :mod:`eventstore.store` (the protocol) so that the protocol module imports no
backend and no backend imports the factory: each backend imports only the protocol's value
types, and only this module knows them all (as eventsourcing's persistence module picks a
recorder by topic).

URLs (:func:`check_store_url`, the one rule for ``--db``, ``--from``, ``--to`` and
``RINGLOG_DB``): ``memory:`` is the in-memory fake; ``postgresql://…`` (or ``postgres://``) is
PostgreSQL; ``sqlite:///path`` or a bare path is an SQLite file. Any other ``scheme://`` is
refused, never taken for a file name.
"""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit

from eventstore.store import Store

STORE_URL_RULE = "takes an SQLite file path or a postgresql:// URL"

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


class StoreUrlError(ValueError):
    """A store URL that names no store we can open; ``str()`` is one line that says why and
    does not repeat a password. The command line answers it as a usage error (exit 2)."""


def check_store_url(url: str) -> str:
    """``url`` if it names a store :func:`open_store` can build, else :class:`StoreUrlError`.

    * ``memory:``;
    * ``postgresql://`` / ``postgres://`` URLs (lower case, as libpq and asyncpg require) (libpq's form, RFC 3986 §3) whose authority
      parses: a bracketed IPv6 host is closed, a port is 1–65535 digits;
    * ``sqlite:///path`` or a path (any text without ``scheme://``) whose directory exists
      (SQLite creates the file, never its directory); not ``:memory:``, which SQLite gives each
      connection afresh (the store's writer and readers are separate connections).

    Anything else — ``mysql://x``, ``http://…`` — is refused rather than taken for a file name.
    """
    if not isinstance(url, str) or not url or "\x00" in url:
        raise StoreUrlError(f"{STORE_URL_RULE}, not {url!r}")
    if url == "memory:":
        return url
    scheme = _SCHEME.match(url)
    if scheme is not None and scheme.group(1) in ("postgresql", "postgres"):
        try:
            port = urlsplit(url).port
        except ValueError as e:
            raise StoreUrlError(f"is not a valid postgresql:// URL ({e})") from None
        if port == 0:
            raise StoreUrlError("is not a valid postgresql:// URL (port 0)")
        return url
    if scheme is not None and scheme.group(1) != "sqlite":
        raise StoreUrlError(f"{STORE_URL_RULE}, not a {scheme.group(1)}:// URL")
    path = url.removeprefix("sqlite:///").removeprefix("sqlite://")
    if not path:
        raise StoreUrlError(f"{STORE_URL_RULE}; {url!r} names no file")
    if path == ":memory:":  # SQLite's private in-memory database: one per connection, so the
        # writer, the readers and other processes would each see a different, empty log
        raise StoreUrlError(
            "names SQLite's in-memory database, which no two connections share; give a file path (or memory: for a throw-away in-process store)"
        )
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise StoreUrlError(f"names the SQLite file {path!r}, whose directory {directory!r} does not exist")
    return url


def sqlite_path(url: str) -> str | None:
    """The file an SQLite URL names, or None when ``url`` names another kind of store."""
    if url == "memory:" or url.startswith(("postgresql://", "postgres://")):
        return None
    return url.removeprefix("sqlite:///").removeprefix("sqlite://")


def same_store(a: str, b: str) -> bool:
    """True when two URLs name the same store (SQLite paths compared as absolute paths)."""
    path_a, path_b = sqlite_path(a), sqlite_path(b)
    if path_a is not None and path_b is not None:
        return os.path.abspath(path_a) == os.path.abspath(path_b)
    return a.rstrip("/") == b.rstrip("/")


def open_store(url: str, *, synchronous: str = "FULL", pool_size: int = 10, shared: bool = False) -> Store:
    """Build (not yet open) the backend that ``url`` names (see the module docstring).

    ``synchronous`` applies to SQLite (FULL, NORMAL or EXTRA; ValueError otherwise),
    ``pool_size`` to PostgreSQL (connections per process, at least 1). ``shared=True`` opens an
    SQLite file for serving beside other processes (commit discovery; what ``ringlog serve``
    does); PostgreSQL is always shared between servers, and ``shared=True`` makes it hold the
    servers' shared owner lock (:mod:`eventstore.ownership`), ``memory:`` is never shared. Raises :class:`StoreUrlError` for a
    URL :func:`check_store_url` refuses.
    """
    check_store_url(url)
    if url == "memory:":
        from eventstore.memory import MemoryStore

        return MemoryStore()
    path = sqlite_path(url)
    if path is None:
        from eventstore.postgres import PostgresStore

        return PostgresStore(url, pool_size=pool_size, serving=shared)
    from eventstore.sqlite import SQLiteStore

    return SQLiteStore(path, synchronous=synchronous, shared=shared)
