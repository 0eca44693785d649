"""What every backend can store: one rule for the text keys and integers of the log.

The same input must get the same answer on every store (SQLite, PostgreSQL, the in-memory fake),
and ``ringlog copy`` must be able to move any log between them. So the log accepts only what all
of them represent exactly:

* text columns (stream id, event type, idempotency user, key and fingerprint): valid Unicode
  scalar values without NUL. PostgreSQL's ``text`` refuses U+0000 (SQLite would take it), and a
  lone surrogate (U+D800–U+DFFF) has no UTF-8 encoding, so neither SQL backend can bind it.
* integers bound to a query (seqs, positions, limits): the signed 64-bit range of SQLite's
  ``INTEGER`` and PostgreSQL's ``BIGINT``. Read arguments outside it are clamped, which keeps the
  meaning of "``seq > after_seq``" and "at most ``limit``" (no stored value lies outside it).

A value outside these rules can never be stored, so a read keyed by it finds nothing (the same
"not found" on every store) and an append carrying it is refused with
:class:`~eventstore.errors.UnrepresentableValue` before it reaches the shared writer.
"""

from __future__ import annotations

from eventstore.errors import UnrepresentableValue

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be stored identically on every backend, or None if it can."""
    if "\x00" in text:
        return "contains NUL (U+0000)"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone surrogate (not encodable as UTF-8)"
    return None


def is_storable_text(text: str) -> bool:
    """True when ``text`` can be a stream id, type, user id or idempotency key of the log."""
    return text_problem(text) is None


def check_text(what: str, text: str) -> None:
    """Raise :class:`UnrepresentableValue` naming ``what`` unless ``text`` is storable."""
    problem = text_problem(text)
    if problem is not None:
        raise UnrepresentableValue(what, problem)


def clamp_int64(n: int) -> int:
    """``n`` limited to the signed 64-bit range (for read bounds such as ``after_seq``)."""
    return INT64_MIN if n < INT64_MIN else INT64_MAX if n > INT64_MAX else n


def read_limit(limit: int | None) -> int | None:
    """A read's ``limit`` as every backend takes it: None for no limit, negatives as 0."""
    if limit is None:
        return None
    return 0 if limit < 0 else min(limit, INT64_MAX)
