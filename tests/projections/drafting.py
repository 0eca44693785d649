"""Drive drafts the way the server does: state from the log, decide(), append (for tests and fixtures)."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator

from eventstore import Record, Store
from projections import (
    AddCollaborator,
    AppendSegment,
    Command,
    CreateDraft,
    DomainError,
    DraftState,
    PassRing,
    UpdateDraft,
    decide,
)
from projections.fold import fold_all
from projections.runner import DraftProjector


def clock(start_ms: int = 1_766_521_845_000) -> Iterator[str]:
    """Deterministic, increasing ISO 8601 timestamps with milliseconds and ``Z``."""
    from datetime import UTC, datetime

    for ms in itertools.count(start_ms, 37):
        t = datetime.fromtimestamp(ms / 1000, UTC)
        yield t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


async def folded(store: Store, draft_id: str, until_seq: int | None = None) -> DraftState | None:
    """The draft's state from its log alone."""
    records = await store.read(draft_id, 0, until_seq)
    return fold_all(None, [r.event() for r in records])


async def execute(
    store: Store,
    draft_id: str,
    command: Command,
    now: str,
    projector: DraftProjector | None = None,
) -> tuple[Record, ...] | DomainError:
    """Decide ``command`` against the draft's current state and append what it produced."""
    state = await projector.get(draft_id) if projector is not None else await folded(store, draft_id)
    try:
        events = decide(state, command, now)
    except DomainError as e:
        return e
    if not events:
        return ()
    # a new draft is created after seq 0, so creating an existing one is a conflict, as on the server
    expected = 0 if isinstance(command, CreateDraft) or state is None else state.seq
    result = await store.append(draft_id, events, expected)
    return result.records


async def populate(store: Store, drafts: int = 4, steps: int = 120, seed: int = 7) -> list[str]:
    """A realistic log: several drafts, each with collaborators, segments, passes and updates."""
    rng = random.Random(seed)
    now = clock()
    ids = [f"draft_{i}" for i in range(drafts)]
    users = ["alice", "bob", "carol", "dave", "erin"]
    for i, draft_id in enumerate(ids):
        creator = users[i % len(users)]
        await execute(store, draft_id, CreateDraft(creator, draft_id, f"Draft {i}", "about it"), next(now))
        for other, role in zip(
            users, ["contributor", "contributor", "viewer", "contributor", "viewer"], strict=True
        ):
            if other != creator:
                await execute(store, draft_id, AddCollaborator(creator, other, role), next(now))
    for _ in range(steps):
        draft_id = rng.choice(ids)
        state = await folded(store, draft_id)
        assert state is not None
        holder = state.ring_state.current_holder_id
        kind = rng.random()
        command: Command
        if kind < 0.6:
            command = AppendSegment(holder, f"segment {rng.random():.6f} ✍")
        elif kind < 0.85:
            targets = [u for u in state.members() if u != holder and state.role_of(u) != "viewer"]
            command = PassRing(holder, rng.choice(sorted(targets)))
        else:
            command = UpdateDraft(holder, title=f"Title {rng.randrange(1000)}")
        outcome = await execute(store, draft_id, command, next(now))
        assert not isinstance(outcome, DomainError), outcome
    return ids
