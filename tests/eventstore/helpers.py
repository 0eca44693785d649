"""Small builders shared by the event-store tests (no logic under test lives here)."""

from __future__ import annotations

import asyncio
from typing import Any

from eventstore import ConcurrencyConflict, NewEvent, Store
from eventstore.events import IdempotencyClaim, encode_bodies
from eventstore.groupcommit import PendingAppend

TS = "2025-12-23T20:30:45.123Z"


def created(user_id: str = "alice", title: str = "Draft") -> NewEvent:
    """A ``collab.draft_created`` event as decide() would produce it."""
    return NewEvent(
        "collab.draft_created", user_id, TS, {"title": title, "description": "", "creator_id": user_id}
    )


def segment(user_id: str = "alice", content: str = "text", position: int = 1) -> NewEvent:
    """A ``collab.segment_added`` event whose segment id the store fills with the position."""
    data: dict[str, Any] = {
        "segment": {
            "id": 0,
            "author_user_id": user_id,
            "content": content,
            "position": position,
            "created_at": TS,
        }
    }
    return NewEvent("collab.segment_added", user_id, TS, data, ("segment", "id"))


def updated(user_id: str = "alice", title: str = "New title") -> NewEvent:
    """A ``collab.draft_updated`` event."""
    return NewEvent("collab.draft_updated", user_id, TS, {"title": title})


async def append_retrying(store: Store, draft_id: str, event: NewEvent, max_attempts: int = 10_000) -> int:
    """Append one event after whatever the head is, retrying on conflicts; returns its seq."""
    for _ in range(max_attempts):
        head = await store.head(draft_id)
        try:
            result = await store.append(draft_id, [event], head)
        except ConcurrencyConflict:
            continue
        return result.records[0].seq
    raise AssertionError(f"gave up after {max_attempts} conflicts on {draft_id}")


def pending(
    stream_id: str, events: list[NewEvent], expected: int, claim: IdempotencyClaim | None = None
) -> PendingAppend:
    """A PendingAppend as the group committer hands it over (its future is never used here)."""
    bodies = encode_bodies(stream_id, events, expected)
    return PendingAppend(
        stream_id, events, expected, claim, bodies, asyncio.get_running_loop().create_future()
    )
