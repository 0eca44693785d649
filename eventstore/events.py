"""The event envelope, pending events, stored records and their canonical encoding.

A stored :class:`Record` keeps the event's canonical JSON bytes (``body``): they are what the
hash chain covers and what every channel sends, so an event is serialised once, at append.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict

GENESIS_HASH = bytes(32)
"""The ``prev_hash`` of every draft's first event."""


def utc_now_iso() -> str:
    """Return the current UTC time as ISO 8601 with milliseconds and ``Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


class Event(BaseModel):
    """The envelope every channel carries (API.md, "Events")."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: str
    draft_id: str
    seq: int
    ts: str
    user_id: str
    data: dict[str, Any]

    def canonical_bytes(self) -> bytes:
        """The bytes the hash chain covers: orjson with sorted keys."""
        return canonical_json(self.model_dump())

    @classmethod
    def from_body(cls, body: bytes) -> Event:
        """Decode canonical bytes without re-validating (they were validated at append)."""
        return cls.model_construct(**orjson.loads(body))


def canonical_json(value: Any) -> bytes:
    """Serialise ``value`` deterministically (sorted keys, no whitespace)."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def chain_hash(prev_hash: bytes, position: int, body: bytes) -> bytes:
    """One link of a draft's hash chain: ``sha256(prev_hash ‖ position as 8 bytes big-endian ‖ body)``.

    The global position is covered too, so moving events around the log (even between drafts,
    whose chains are separate) breaks a link.
    """
    return hashlib.sha256(prev_hash + position.to_bytes(8, "big") + body).digest()


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event decided but not yet appended: the store assigns ``seq`` and ``position``.

    ``position_path``, when set, names a key path inside ``data`` where the store writes the
    event's global position before hashing (segment ids are derived from it, so a rebuild
    reproduces them exactly without the store knowing what a segment is).
    """

    type: str
    user_id: str
    ts: str
    data: dict[str, Any]
    position_path: tuple[str, ...] | None = None

    def materialise(self, draft_id: str, seq: int, position: int) -> dict[str, Any]:
        """The envelope this event gets once it has its seq and position."""
        data = self.data
        if self.position_path:
            data = _with_value_at(data, self.position_path, position)
        return {
            "type": self.type,
            "draft_id": draft_id,
            "seq": seq,
            "ts": self.ts,
            "user_id": self.user_id,
            "data": data,
        }


def _with_value_at(data: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    head, *rest = path
    copy = dict(data)
    copy[head] = _with_value_at(copy.get(head) or {}, tuple(rest), value) if rest else value
    return copy


@dataclass(frozen=True, slots=True)
class IdempotencyClaim:
    """What an append states about the request that caused it."""

    user_id: str
    key: str
    fingerprint: str


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    """A claim found in the log: which append first used the key."""

    user_id: str
    key: str
    fingerprint: str
    draft_id: str
    seq: int
    """The seq of the first event that the original append wrote."""


@dataclass(frozen=True, slots=True)
class Record:
    """One event as stored: envelope bytes plus its place in the log and its chain hash."""

    position: int
    draft_id: str
    seq: int
    type: str
    body: bytes
    hash: bytes
    idempotency: IdempotencyClaim | None = field(default=None, compare=False)

    def event(self) -> Event:
        """Decode the envelope."""
        return Event.from_body(self.body)

    def envelope(self) -> dict[str, Any]:
        """Decode the envelope as a plain dict."""
        result: dict[str, Any] = orjson.loads(self.body)
        return result


def build_records(
    draft_id: str,
    events: list[NewEvent] | tuple[NewEvent, ...],
    head_seq: int,
    last_position: int,
    prev_hash: bytes,
    claim: IdempotencyClaim | None,
) -> list[Record]:
    """Give pending events their seqs, positions, bodies and chain hashes (shared by backends)."""
    records: list[Record] = []
    for offset, new in enumerate(events, start=1):
        seq = head_seq + offset
        position = last_position + offset
        body = canonical_json(new.materialise(draft_id, seq, position))
        prev_hash = chain_hash(prev_hash, position, body)
        records.append(
            Record(
                position=position,
                draft_id=draft_id,
                seq=seq,
                type=new.type,
                body=body,
                hash=prev_hash,
                idempotency=claim if offset == 1 else None,
            )
        )
    return records
