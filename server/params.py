"""One parser for every number a client or operator hands the server as text.

Query parameters (``since``, ``limit``, ``wait``), the ``If-Match: "<seq>"`` header, the
WebSocket's ``since``, every integer flag of the ``ringlog`` command line and every
``RINGLOG_*`` variable go through :func:`parse_int` or :func:`parse_number`, so a value means
the same thing, and is refused for the same reason, on every channel (API.md "Errors": bad
values are refused, never clamped).

The rules, deliberately narrower than Python's ``int()``/``float()``:

* ASCII digits only: no sign, no ``_`` separator, no surrounding whitespace, no Unicode digits
  (``int("٣") == 3`` and ``int("1_0") == 10``, but neither is a number a client means), no
  superscripts (``"²".isdigit()`` is true, yet ``int("²")`` raises).
* At most :data:`MAX_DIGITS` characters, checked *before* conversion, so a megabyte of digits
  costs nothing.
* A range: integers default to ``0 ..`` :data:`MAX_SEQ`, which both stores hold (SQLite's
  INTEGER and PostgreSQL's ``bigint`` go to ``2**63 - 1``); it is the bound ``/openapi.json``
  documents for ``since``.

Errors are :class:`ParameterError` (a ``ValueError``); each channel turns it into its own
answer: 400 ``invalid_parameter`` (REST), ``invalid_since`` + close 4400 (WebSocket), a usage
error with exit status 2 (command line).
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable

MAX_SEQ = 2**62
"""Largest seq/position a client may name (``/openapi.json`` documents it for ``since``)."""

MAX_DIGITS = len(str(2**63 - 1))
"""19: the longest decimal a signed 64-bit column (SQLite INTEGER, PostgreSQL bigint) can hold."""

MAX_NUMBER_CHARS = 32
"""Longest accepted text of a non-integer number (``float`` reprs are at most 24 characters)."""

_DIGITS = re.compile(r"[0-9]+")
DECIMAL_PATTERN = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,3})?"
"""A non-negative number's text: ASCII digits with at most one decimal point (``5``, ``0.5``,
``.5``, ``5.``) and an optional exponent (``1e-05``: how many languages print a small float,
so an OpenAPI client serialising ``wait``'s ``type: number`` may send it); never a sign before
the digits, ``_``, whitespace, ``inf`` or ``nan``."""
_DECIMAL = re.compile(DECIMAL_PATTERN)


class ParameterError(ValueError):
    """A value that is not an acceptable number; ``str()`` is a one-line message naming it."""

    def __init__(self, name: str, message: str) -> None:
        self.name = name
        self.message = f"{name} {message}" if name else message
        super().__init__(self.message)


def parse_int(raw: str, name: str = "value", low: int = 0, high: int = MAX_SEQ) -> int:
    """The integer ``raw`` names, if it is 1–19 ASCII digits with a value in ``low..high``.

    Raises :class:`ParameterError` otherwise (message: "``name`` must be 1–19 ASCII digits,
    from ``low`` to ``high``": the form and the range, so ``0000…0001`` (31 digits) is told
    why). ``low`` must be >= 0: no value of ours is negative, so a sign is
    never accepted.
    """
    if (
        not isinstance(raw, str)
        or not 1 <= len(raw) <= MAX_DIGITS
        or _DIGITS.fullmatch(raw) is None
        or not low <= int(raw) <= high
    ):
        raise ParameterError(name, int_rule(low, high))
    return int(raw)


def int_rule(low: int, high: int) -> str:
    """:func:`parse_int`'s rule in words, after the name of the value."""
    return f"must be 1–{MAX_DIGITS} ASCII digits, from {low} to {high}"


def parse_number(
    raw: str, name: str = "value", low: float = 0.0, high: float = 3600.0, unit: str = " of seconds"
) -> float:
    """A non-negative number written as :data:`DECIMAL_PATTERN` says.

    ``"25"``, ``"0.5"``, ``".5"``, ``"5."``, ``"25.000"`` and ``"1e-05"`` are accepted; signs,
    ``_``, whitespace, Unicode digits, ``inf``/``nan`` and anything over
    :data:`MAX_NUMBER_CHARS` characters are not. Raises :class:`ParameterError` unless the
    value is within ``low..high`` (the message states the range and the form).
    """
    problem = (
        f"must be a number{unit} from {plain_number(low)} to {plain_number(high)}, "
        "written as ASCII digits with an optional decimal point and exponent (5, 0.5, .5, 1e-05)"
    )
    if not isinstance(raw, str) or not 1 <= len(raw) <= MAX_NUMBER_CHARS or _DECIMAL.fullmatch(raw) is None:
        raise ParameterError(name, problem)
    value = float(raw)
    if not math.isfinite(value) or not low <= value <= high:
        raise ParameterError(name, problem)
    return value


def plain_number(x: float) -> str:
    """``30.0`` → ``30``, ``1000000.0`` → ``1000000``, ``0.5`` → ``0.5``."""
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def int_flag(low: int = 0, high: int = MAX_SEQ) -> Callable[[str], int]:
    """An argparse ``type=`` for an integer flag: :func:`parse_int` with ``low..high``.

    A refused value becomes ``argparse.ArgumentTypeError``, so argparse reports a usage error
    naming the flag ("argument --since: must be 1–19 ASCII digits, from 0 to …") and exits 2.
    """

    def convert(raw: str) -> int:
        try:
            return parse_int(raw, "", low, high)
        except ParameterError as e:
            raise argparse.ArgumentTypeError(e.message) from None

    convert.__name__ = "integer"  # argparse's fallback message names the type
    return convert


def parse_entity_tag_seq(raw: str, name: str = "If-Match") -> int:
    """The seq in an ``If-Match: "<seq>"`` header (RFC 9110 §8.8.3 entity tag; bare digits too).

    Our entity tags are the draft's seq in quotes (API.md "HTTP API"). Optional whitespace
    around the value is HTTP's (RFC 9110 §5.5); inside, the digits follow :func:`parse_int`.
    """
    value = raw.strip(" \t")
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    try:
        return parse_int(value, name, 0, MAX_SEQ)
    except ParameterError:
        raise ParameterError(
            name, f'must be "<seq>" (1–{MAX_DIGITS} ASCII digits, from 0 to {MAX_SEQ})'
        ) from None


def digits_at_most(high: int) -> str:
    """A regular expression (no anchors) matching exactly the strings :func:`parse_int` accepts
    for ``low=0`` and this ``high``: 1–19 ASCII digits (leading zeros allowed) worth ``<= high``.

    Used where ``/openapi.json`` describes a number carried in a string (``If-Match``).
    ``high`` must have 19 digits (as :data:`MAX_SEQ` has), so "at most 19 characters" and
    "at most ``high``" can be written without look-ahead. Raises ValueError otherwise.
    """
    top = str(high)
    if len(top) != MAX_DIGITS:
        raise ValueError(f"high must have {MAX_DIGITS} digits")
    alternatives = [f"[0-9]{{1,{MAX_DIGITS - 1}}}"]
    for i, digit in enumerate(top):
        if digit != "0":
            smaller = "0" if digit == "1" else f"[0-{int(digit) - 1}]"
            rest = MAX_DIGITS - i - 1
            alternatives.append(top[:i] + smaller + (f"[0-9]{{{rest}}}" if rest else ""))
    alternatives.append(top)
    return "(?:" + "|".join(alternatives) + ")"
