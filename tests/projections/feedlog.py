"""Random draft histories for feed tests, and the feed they must give, computed the slow way.

:func:`command_for` turns a few random choices into a command (any kind, including removals,
role changes and archiving); ``decide`` refuses what is not allowed, as on the server.
:func:`expected_feed` is the model: it folds every draft's *whole state* before each event and
applies API.md v2's rules with ``DraftState.can_view`` — independent of the summaries and member
sets that :mod:`projections.feed` uses.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

from eventstore import Store
from projections.decide import (
    AddCollaborator,
    AppendSegment,
    ArchiveDraft,
    ChangeRole,
    Command,
    CreateDraft,
    PassRing,
    RemoveCollaborator,
    UpdateDraft,
)
from projections.event_types import EventType
from projections.feed import Envelope
from projections.fold import fold
from projections.state import DraftState
from tests.projections.drafting import clock, execute, folded

USERS = ("alice", "bob", "carol", "dave")
DRAFTS = ("draft_a", "draft_b", "draft_c")


def command_for(choice: int, actor: str, other: str, draft_id: str) -> Command:
    """A command by ``actor`` naming ``other``, its kind chosen by ``choice % 20`` (archiving is
    rare, so that archived drafts do not refuse most of a history)."""
    kind = choice % 20
    if kind == 0:
        return CreateDraft(actor, draft_id, f"T {draft_id}")
    if kind <= 3:
        return AppendSegment(actor, "words")
    if kind <= 6:
        return PassRing(actor, other)
    if kind <= 10:
        return AddCollaborator(actor, other, "contributor" if choice % 3 else "viewer")
    if kind <= 12:
        return UpdateDraft(actor, title=f"title {choice}")
    if kind <= 14:
        return RemoveCollaborator(actor, other)
    if kind <= 17:
        return ChangeRole(actor, other, "viewer" if choice % 2 else "contributor")
    return ArchiveDraft(actor, archived=kind == 18)


def expected_feed(envelopes: Iterable[tuple[int, dict[str, Any]]]) -> dict[str, list[int]]:
    """user -> the positions of the events that concern them (the model of API.md v2's rules)."""
    states: dict[str, DraftState | None] = {}
    feed: dict[str, list[int]] = {u: [] for u in USERS}
    for position, env in envelopes:
        before = states.get(env["draft_id"])
        t, data = env["type"], env["data"]
        for user in USERS:
            if t == EventType.DRAFT_CREATED:
                hit = data["creator_id"] == user
            elif t in (EventType.COLLABORATOR_ADDED, EventType.COLLABORATOR_REMOVED, EventType.ROLE_CHANGED):
                hit = data["collaborator_id"] == user
            elif t == EventType.RING_PASSED:
                hit = data["to_user_id"] == user
            elif t in (EventType.DRAFT_ARCHIVED, EventType.DRAFT_UNARCHIVED, EventType.DRAFT_UPDATED):
                hit = before is not None and before.can_view(user)
            else:
                hit = False
            if hit:
                feed[user].append(position)
        states[env["draft_id"]] = fold(before, Envelope.of(env))
    return feed


async def random_history(store: Store, steps: int, seed: int) -> int:
    """Append a random history of ``steps`` commands (refused ones skipped); returns the appends made."""
    rng = random.Random(seed)
    now = clock()
    made = 0
    for _ in range(steps):
        draft_id = rng.choice(DRAFTS)
        state = await folded(store, draft_id)
        actor = rng.choice(USERS)
        if state is not None and rng.random() < 0.7:  # mostly someone who may act, so most commands pass
            actor = state.ring_state.current_holder_id if rng.random() < 0.6 else state.creator_id
        command = command_for(rng.randrange(1000), actor, rng.choice(USERS), draft_id)
        if isinstance(command, CreateDraft) and await store.head(draft_id) > 0:
            continue  # the server answers a conflict: nothing is appended
        outcome = await execute(store, draft_id, command, next(now))
        if isinstance(outcome, tuple) and outcome:
            made += 1
    return made


async def brute_force_feed(store: Store) -> dict[str, list[int]]:
    """The feed computed by scanning the whole log (what the index must equal)."""
    records = await store.read_all(0, 1_000_000)
    return expected_feed((r.position, r.envelope()) for r in records)
