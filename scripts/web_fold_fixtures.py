"""Fixtures for the web package's fold: event logs and the states projections/fold.py gives.

    python scripts/web_fold_fixtures.py            # (re)writes web/test/fixtures/fold.json
    python scripts/web_fold_fixtures.py --check    # exit 1 when the committed file differs

The TypeScript fold (web/src/fold.ts) is a port of projections/fold.py; its vitest suite folds
every log in this file and compares each prefix's state with the Python fold's. The pytest
module tests/web/test_web_package.py regenerates the file and compares it with the committed
one, so the fixtures cannot drift from the Python fold. Deterministic: a fixed seed, fixed
timestamps, sorted keys.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path
from typing import Any

import orjson

from projections.event_types import EventType
from projections.fold import FoldError, fold_all
from projections.state import DraftState

OUT = Path(__file__).resolve().parent.parent / "web" / "test" / "fixtures" / "fold.json"
SEED = 20261130
LOGS = 24
MAX_LENGTH = 30


class _Env:
    """The envelope fields fold reads (projections.fold.FoldableEvent) over a decoded dict."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.type: str = raw["type"]
        self.draft_id: str = raw["draft_id"]
        self.seq: int = raw["seq"]
        self.ts: str = raw["ts"]
        self.data: dict[str, Any] = raw["data"]


def _ts(seq: int) -> str:
    return f"2026-01-01T00:{seq // 60 % 60:02d}:{seq % 60:02d}.{seq * 7 % 1000:03d}Z"


def random_log(rng: random.Random, draft_id: str, length: int) -> list[dict[str, Any]]:
    """A valid log of every event type (and one unknown type), written as the server writes them."""
    events: list[dict[str, Any]] = []

    def emit(type_: str, user: str, data: dict[str, Any]) -> None:
        seq = len(events) + 1
        events.append(
            {"type": type_, "draft_id": draft_id, "seq": seq, "ts": _ts(seq), "user_id": user, "data": data}
        )

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

    while len(events) < length:
        op = rng.choice(["add", "remove", "role", "archive", "segment", "segment", "pass", "update", "x"])
        outsiders = [u for u in ("bob", "carol", "dave") if u not in members]
        if op == "add" and outsiders:
            who, role = rng.choice(outsiders), rng.choice(["contributor", "viewer"])
            members[who] = role
            emit(EventType.COLLABORATOR_ADDED, "alice",
                 {"collaborator_id": who, "role": role, "joined_at": _ts(len(events) + 1)})  # fmt: skip
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
                "position": position, "created_at": _ts(len(events) + 1)}})  # fmt: skip
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
            emit(
                "newer.unknown_type", "alice", {"anything": 1}
            )  # a type this fold does not know: only advances seq
    return events


def _invalid_logs(valid: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Logs the fold refuses (FoldError), with the index of the event it refuses."""
    first, second = valid[0], valid[1]
    cases = [
        ("gap", [first, {**second, "seq": 3}]),
        ("repeat", [first, {**second, "seq": 1}]),
        ("created twice", [first, {**first, "seq": 2}]),
        ("not created first", [second]),
        ("another draft", [first, {**second, "draft_id": "draft_other"}]),
    ]
    out = []
    for name, events in cases:
        refused = None
        state: DraftState | None = None
        for i, e in enumerate(events):
            try:
                state = fold_all(state, [_Env(e)])
            except FoldError:
                refused = i
                break
        assert refused is not None, name
        out.append({"name": name, "events": events, "refused_at": refused})
    return out


def build() -> bytes:
    """The fixture file's bytes: {"logs": [{"events", "states"}], "invalid": [...]}."""
    rng = random.Random(SEED)
    logs = []
    for n in range(LOGS):
        events = random_log(rng, f"draft_fx{n:02d}", rng.randrange(1, MAX_LENGTH + 1))
        states: list[dict[str, Any]] = []
        state: DraftState | None = None
        for e in events:
            state = fold_all(state, [_Env(e)])
            assert state is not None
            states.append(state.to_dict())
        logs.append({"events": events, "states": states})
    doc = {
        "generated_by": "scripts/web_fold_fixtures.py (do not edit: regenerate)",
        "logs": logs,
        "invalid": _invalid_logs(
            logs[0]["events"] if len(logs[0]["events"]) > 1 else random_log(rng, "draft_x", 3)
        ),
    }
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS) + b"\n"


def main(argv: list[str] | None = None) -> int:
    """Write (or with ``--check`` compare) the fixture file; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed file, write nothing")
    args = parser.parse_args(argv)
    fresh = build()
    if args.check:
        same = OUT.exists() and OUT.read_bytes() == fresh
        print("fixtures up to date" if same else f"{OUT} differs from the Python fold: regenerate it")
        return 0 if same else 1
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_bytes(fresh)
    print(f"wrote {OUT} ({len(fresh)} bytes, {LOGS} logs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
