"""The store factory: which backend a URL names, built but not yet opened.

Kept apart from :mod:`eventstore.store` (the protocol) so that the protocol module imports no
backend and no backend imports the factory: each backend imports only the protocol's value
types, and only this module knows them all (as eventsourcing's persistence module picks a
recorder by topic).

URLs: ``memory:`` is the in-memory fake; ``postgresql://…`` (or ``postgres://``) is PostgreSQL;
anything else is an SQLite file path (``sqlite:///path`` also accepted).
"""

from __future__ import annotations

import os

from eventstore.store import Store


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
    does); PostgreSQL is always shared, ``memory:`` never.
    """
    if url == "memory:":
        from eventstore.memory import MemoryStore

        return MemoryStore()
    path = sqlite_path(url)
    if path is None:
        from eventstore.postgres import PostgresStore

        return PostgresStore(url, pool_size=pool_size)
    from eventstore.sqlite import SQLiteStore

    return SQLiteStore(path, synchronous=synchronous, shared=shared)
