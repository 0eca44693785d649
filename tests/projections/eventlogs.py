"""Random valid event logs of one draft, as the server writes them (API.md "Events").

One builder for every place that folds random logs outside the server: the web package's fold
fixtures (scripts/web_fold_fixtures.py) and ringlog.js's fold against the server's
(tests/e2e/test_browser_access.py). Deterministic for a given ``random.Random``.
"""

from __future__ import annotations

import random
from typing import Any

from projections.event_types import EventType

UNKNOWN_TYPE = "newer.unknown_type"
"""A type no fold knows (a newer server's): folding it only advances ``seq``."""


def event_ts(seq: int) -> str:
    """A fixed, valid RFC 3339 timestamp for the event at ``seq`` (distinct within an hour)."""
    return f"2026-01-01T00:{seq // 60 % 60:02d}:{seq % 60:02d}.{seq * 7 % 1000:03d}Z"


def random_log(
    rng: random.Random, draft_id: str, length: int, *, unknown_types: bool = True
) -> list[dict[str, Any]]:
    """A valid log of ``length`` events or a few more (a removal can add the ring's return) of
    every event type — removals, role changes, archives, ring passes — as JSON-ready dicts
    ``{"type", "draft_id", "seq", "ts", "user_id", "data"}``; with ``unknown_types`` some events
    are of :data:`UNKNOWN_TYPE`."""
    events: list[dict[str, Any]] = []

    def emit(type_: str, user: str, data: dict[str, Any]) -> None:
        seq = len(events) + 1
        events.append(
            {"type": str(type_), "draft_id": draft_id, "seq": seq, "ts": event_ts(seq), "user_id": user,
             "data": data}
        )  # fmt: skip

    created: dict[str, Any] = {"title": "t", "creator_id": "alice"}
    if rng.random() < 0.5:
        created["description"] = "d"  # absent in some logs: the fold defaults it to ""
    emit(EventType.DRAFT_CREATED, "alice", created)
    members: dict[str, str] = {}
    holder, history, archived, segment_id = "alice", ["alice"], False, rng.randrange(1, 1000)

    def give_back(user: str) -> None:
        nonlocal holder, history
        if holder == user:
            holder, history = "alice", [*history, "alice"]
            emit(
                EventType.RING_PASSED,
                "alice",
                {"from_user_id": user, "to_user_id": "alice", "current_holder_id": "alice",
                 "holders_history": list(history)},
            )  # fmt: skip

    ops = ["add", "remove", "role", "archive", "segment", "segment", "pass", "update"]
    if unknown_types:
        ops.append("x")
    while len(events) < length:
        op = rng.choice(ops)
        outsiders = [u for u in ("bob", "carol", "dave") if u not in members]
        if op == "add" and outsiders:
            who, role = rng.choice(outsiders), rng.choice(["contributor", "viewer"])
            members[who] = role
            emit(EventType.COLLABORATOR_ADDED, "alice",
                 {"collaborator_id": who, "role": role, "joined_at": event_ts(len(events) + 1)})  # fmt: skip
        elif op == "remove" and members:
            who = rng.choice(sorted(members))
            emit(EventType.COLLABORATOR_REMOVED, "alice", {"collaborator_id": who, "role": members.pop(who)})
            give_back(who)
        elif op == "role" and members:
            who = rng.choice(sorted(members))
            to = "viewer" if members[who] == "contributor" else "contributor"
            emit(
                EventType.ROLE_CHANGED,
                "alice",
                {"collaborator_id": who, "from_role": members[who], "to_role": to},
            )
            members[who] = to
            if to == "viewer":
                give_back(who)
        elif op == "archive":
            archived = not archived
            emit(EventType.DRAFT_ARCHIVED if archived else EventType.DRAFT_UNARCHIVED, "alice", {})
        elif op == "segment":
            segment_id += rng.randrange(1, 5)  # unique across the store, so not contiguous per draft
            position = sum(e["type"] == EventType.SEGMENT_ADDED for e in events) + 1
            emit(EventType.SEGMENT_ADDED, holder, {"segment": {
                "id": segment_id, "author_user_id": holder, "content": f"c{segment_id} ✓",
                "position": position, "created_at": event_ts(len(events) + 1)}})  # fmt: skip
        elif op == "pass":
            targets = [u for u, r in members.items() if r == "contributor" and u != holder]
            targets += ["alice"] if holder != "alice" else []
            if targets:
                to_user = rng.choice(targets)
                history = [*history, to_user]
                emit(EventType.RING_PASSED, holder,
                     {"from_user_id": holder, "to_user_id": to_user, "current_holder_id": to_user,
                      "holders_history": list(history)})  # fmt: skip
                holder = to_user
        elif op == "update":
            changed = rng.choice([{"title": f"title {len(events)}"}, {"description": f"d{len(events)}"},
                                  {"title": "both", "description": "both"}])  # fmt: skip
            emit(EventType.DRAFT_UPDATED, "alice", changed)
        elif op == "x":
            emit(UNKNOWN_TYPE, "alice", {"anything": 1})
    return events
