"""Client messages of ``GET /v1/ws``, parsed and checked without I/O (API.md v2 "One socket, many
drafts").

A message is one JSON object in a text frame with a string ``type``. Each kind of bad message
has one answer, whatever draft it names (docs/API.md "``/v1/ws``: bad messages, by kind"):

* not JSON (including a number that overflows a double, ``1e999``, and a lone surrogate escape
  in any string, which the parser refuses), not an object, no
  string ``type``, a ``type`` the socket does not know, ``draft_id`` missing or not a string →
  ``bad_message`` (no ``draft_id``: the message named none we can trust);
* ``since`` present but not a JSON integer from 0 to :data:`server.params.MAX_SEQ` (a string, a
  float, a boolean, a negative or too large number) → ``invalid_since`` with the ``draft_id``.
  ``"since": null`` is the same as leaving it out. Above the draft's head is decided later, with
  the store (also ``invalid_since``).

Fields the socket does not read are ignored, so clients can send newer fields to older servers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from server.params import MAX_SEQ


class BadMessage(ValueError):
    """A client message refused: ``code`` (``bad_message`` | ``invalid_since``), a one-line
    ``message``, and the ``draft_id`` it named when that is known."""

    def __init__(self, code: str, message: str, draft_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.draft_id = draft_id

    def to_message(self) -> dict[str, Any]:
        """The ``error`` message that answers it."""
        out: dict[str, Any] = {"type": "error", "code": self.code, "message": self.message}
        if self.draft_id is not None:
            out["draft_id"] = self.draft_id
        return out


def parse_message(text: str) -> dict[str, Any]:
    """The JSON object of a text frame, with a string ``type``; raises :class:`BadMessage`."""
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise BadMessage("bad_message", "a message is one JSON object") from None
    if not isinstance(parsed, dict):
        raise BadMessage("bad_message", "a message is one JSON object")
    if not isinstance(parsed.get("type"), str):
        raise BadMessage("bad_message", 'a message needs a string "type"')
    return parsed


def draft_id_of(message: dict[str, Any]) -> str:
    """The message's ``draft_id``: a string (its form is checked by the draft's admission, which
    answers ``not_found`` for an id the server never makes); raises :class:`BadMessage`."""
    draft_id = message.get("draft_id")
    if not isinstance(draft_id, str):
        raise BadMessage("bad_message", f'"{message["type"]}" needs a string "draft_id"')
    return draft_id


@dataclass(frozen=True, slots=True)
class SubscribeRequest:
    """``{"type": "subscribe", "draft_id", "since"?}``: ``since`` None = from the head."""

    draft_id: str
    since: int | None


def parse_subscribe(message: dict[str, Any]) -> SubscribeRequest:
    """Check a ``subscribe`` message; raises :class:`BadMessage` (``bad_message``/``invalid_since``).

    ``since`` follows :func:`server.params.parse_int`'s range (0 … ``MAX_SEQ``), as a JSON
    integer: ``true``, ``5.0`` and ``"5"`` are refused, like ``-1`` and ``2**62 + 1``.
    """
    draft_id = draft_id_of(message)
    since = message.get("since")
    if since is None:
        return SubscribeRequest(draft_id, None)
    if isinstance(since, bool) or not isinstance(since, int) or not 0 <= since <= MAX_SEQ:
        raise BadMessage("invalid_since", f"since must be a JSON integer from 0 to {MAX_SEQ}", draft_id)
    return SubscribeRequest(draft_id, since)
