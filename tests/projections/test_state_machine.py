"""Random commands from several users, through decide() and both backends, checked after every step.

After each step: the projector's state equals the fold of the log, seqs and positions are
contiguous, segment positions are 1..n and segment ids are the positions of their events,
verify passes, and the in-memory and SQLite backends hold byte-identical logs.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, precondition, rule

from eventstore import Record, Store
from eventstore.memory import MemoryStore
from eventstore.sqlite import SQLiteStore
from eventstore.verify import verify_log
from projections import (
    AddCollaborator,
    AppendSegment,
    ArchiveDraft,
    ChangeRole,
    Command,
    CreateDraft,
    DomainError,
    PassRing,
    RemoveCollaborator,
    UpdateDraft,
)
from projections.fold import fold_all
from projections.runner import DraftProjector, rebuild
from tests.projections.drafting import clock, execute

T = TypeVar("T")

USERS = ["alice", "bob", "carol", "dave"]
users = st.sampled_from(USERS)
titles = st.sampled_from(["A", "Draft", "Notes ✍", "A", "Draft", "x" * 200, "", " ", "t" * 201])
contents = st.sampled_from(["hello", "ring ✓", "hello", "c" * 10_000, "", "c" * 10_001])
picks = st.integers(min_value=0, max_value=3)
actors = st.one_of(st.none(), st.none(), users)


class DraftsMachine(RuleBasedStateMachine):
    drafts = Bundle("drafts")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.tmp = Path(tempfile.mkdtemp(prefix="ringlog-sm-"))
        self.stores: list[Store] = self.make_stores()
        self.projectors: list[DraftProjector] = []
        self.now = clock()
        self.created = 0
        for store in self.stores:
            self.run(store.open())
            projector = DraftProjector(store, flush_interval=0)
            self.run(projector.start())
            self.projectors.append(projector)

    def make_stores(self) -> list[Store]:
        """The backends compared (unopened); subclasses swap in others (test_state_machine_pg.py)."""
        return [MemoryStore(), SQLiteStore(self.tmp / "log.db", synchronous="NORMAL")]

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        try:
            for projector, store in zip(self.projectors, self.stores, strict=True):
                self.run(projector.stop())
                self.run(store.close())
        finally:
            self.loop.close()
            shutil.rmtree(self.tmp, ignore_errors=True)

    def command(self, draft_id: str, command: Command) -> None:
        """Run one command on every backend; they must agree on the outcome, byte for byte."""
        now = next(self.now)
        outcomes = [
            self.run(execute(store, draft_id, command, now, projector))
            for store, projector in zip(self.stores, self.projectors, strict=True)
        ]
        first = outcomes[0]
        for other in outcomes[1:]:
            if isinstance(first, DomainError):
                assert isinstance(other, DomainError) and other.code == first.code, (first, other)
            else:
                assert isinstance(other, tuple), other
                assert [(r.position, r.body, r.hash) for r in other] == [
                    (r.position, r.body, r.hash) for r in first
                ]

    # -- rules --------------------------------------------------------------------------------

    @initialize(target=drafts, creator=users)
    def first_draft(self, creator: str) -> str:
        return self.create(creator, "First")

    @precondition(lambda self: self.created < 4)
    @rule(target=drafts, creator=users, title=titles)
    def create_draft(self, creator: str, title: str) -> str:
        return self.create(creator, title)

    def create(self, creator: str, title: str) -> str:
        self.created += 1
        draft_id = f"draft_{self.created}"
        self.command(draft_id, CreateDraft(creator, draft_id, title))
        return draft_id

    # ``actor`` is None for "whoever the draft's rules would accept" (so that most commands
    # succeed and the drafts grow), or a user picked at random (exercising every refusal)

    @rule(draft=drafts, actor=actors, content=contents)
    def append_segment(self, draft: str, actor: str | None, content: str) -> None:
        self.command(draft, AppendSegment(actor or self.holder(draft), content))

    @rule(draft=drafts, actor=actors, to_user=st.none() | users | st.just("stranger"), pick=picks)
    def pass_ring(self, draft: str, actor: str | None, to_user: str | None, pick: int) -> None:
        holder = self.holder(draft)
        if to_user is None:
            others = [w for w in self.writers(draft) if w != holder] or [holder]
            to_user = others[pick % len(others)]
        self.command(draft, PassRing(actor or holder, to_user))

    @rule(
        draft=drafts,
        actor=actors,
        who=users | st.just("bad id"),
        role=st.sampled_from(["contributor", "contributor", "contributor", "viewer", "owner"]),
        pick=picks,
    )
    def add_collaborator(self, draft: str, actor: str | None, who: str, role: str, pick: int) -> None:
        self.command(draft, AddCollaborator(actor or self.writer(draft, pick), who, role))

    @rule(
        draft=drafts,
        actor=actors,
        title=titles | st.none(),
        description=st.none() | st.sampled_from(["", "d"]),
        pick=picks,
    )
    def update_draft(
        self, draft: str, actor: str | None, title: str | None, description: str | None, pick: int
    ) -> None:
        self.command(draft, UpdateDraft(actor or self.writer(draft, pick), title, description))

    # API.md v2 "Access that changes live"; ``actor`` None: the creator (allowed everything)

    @rule(draft=drafts, actor=actors, who=users | st.just("bad id"), pick=picks)
    def remove_collaborator(self, draft: str, actor: str | None, who: str, pick: int) -> None:
        members = self.members(draft)
        target = who if actor is not None else members[pick % len(members)]
        self.command(draft, RemoveCollaborator(actor or self.creator(draft), target))

    @rule(
        draft=drafts,
        actor=actors,
        who=users | st.just("bad id"),
        role=st.sampled_from(["contributor", "viewer", "viewer", "owner"]),
        pick=picks,
    )
    def change_role(self, draft: str, actor: str | None, who: str, role: str, pick: int) -> None:
        members = self.members(draft)
        target = who if actor is not None else members[pick % len(members)]
        self.command(draft, ChangeRole(actor or self.creator(draft), target, role))

    @rule(draft=drafts, actor=actors, archived=st.booleans())
    def archive(self, draft: str, actor: str | None, archived: bool) -> None:
        self.command(draft, ArchiveDraft(actor or self.creator(draft), archived))

    def creator(self, draft_id: str) -> str:
        state = self.run(self.projectors[0].get(draft_id))
        return state.creator_id if state is not None else "alice"

    def members(self, draft_id: str) -> list[str]:
        """The collaborators (not the creator), or a stranger when there are none."""
        state = self.run(self.projectors[0].get(draft_id))
        found = [c.user_id for c in state.collaborators] if state is not None else []
        return found or ["stranger"]

    @rule()
    def flush_snapshots(self) -> None:
        for projector in self.projectors:
            self.run(projector.flush())

    @rule()
    def restart_projectors(self) -> None:
        """A new projector starts from the saved snapshots and catches up from the checkpoint."""
        for i, store in enumerate(self.stores):
            self.run(self.projectors[i].stop())
            projector = DraftProjector(store, flush_interval=0)
            self.run(projector.start())
            self.projectors[i] = projector

    @precondition(lambda self: self.created <= 4)
    @rule()
    def rebuild_from_log(self) -> None:
        for i, store in enumerate(self.stores):
            self.run(self.projectors[i].stop())
            self.run(rebuild(store))
            projector = DraftProjector(store, flush_interval=0)
            self.run(projector.start())
            self.projectors[i] = projector
            for snap in self.run(store.list_snapshots()):
                records = self.run(store.read(snap.stream_id))
                state = fold_all(None, [r.event() for r in records])
                assert state is not None and snap.state == state.to_json()

    def holder(self, draft_id: str) -> str:
        state = self.run(self.projectors[0].get(draft_id))
        return state.ring_state.current_holder_id if state is not None else "alice"

    def writers(self, draft_id: str) -> list[str]:
        """The creator and contributors: who may append (with the ring), add and update."""
        state = self.run(self.projectors[0].get(draft_id))
        if state is None:
            return ["alice"]
        return [state.creator_id, *(c.user_id for c in state.collaborators if c.role == "contributor")]

    def writer(self, draft_id: str, pick: int) -> str:
        writers = self.writers(draft_id)
        return writers[pick % len(writers)]

    # -- invariants ---------------------------------------------------------------------------

    @invariant()
    def projections_equal_the_fold_of_the_log(self) -> None:
        for store, projector in zip(self.stores, self.projectors, strict=True):
            self.run(self.check(store, projector))
        logs = [self.run(s.read_all(0, 100_000)) for s in self.stores]
        assert [(r.position, r.body, r.hash) for r in logs[0]] == [
            (r.position, r.body, r.hash) for r in logs[1]
        ]

    async def check(self, store: Store, projector: DraftProjector) -> None:
        log = await store.read_all(0, 100_000)
        assert [r.position for r in log] == list(range(1, len(log) + 1))
        assert await store.last_position() == len(log)
        by_draft: dict[str, list[Record]] = {}
        for r in log:
            by_draft.setdefault(r.stream_id, []).append(r)
        for draft_id, records in by_draft.items():
            assert [r.seq for r in records] == list(range(1, len(records) + 1))
            assert await store.head(draft_id) == len(records)
            assert await store.read(draft_id) == records
            folded = fold_all(None, [r.event() for r in records])
            assert folded is not None
            projected = await projector.get(draft_id)
            assert projected == folded
            assert projected.to_json() == folded.to_json()
            assert projector.known_head(draft_id) == folded.seq
            assert [s.position for s in folded.segments] == list(range(1, len(folded.segments) + 1))
            added = [r.position for r in records if r.type == "collab.segment_added"]
            assert [s.id for s in folded.segments] == added
            middle = max(1, len(records) // 2)
            assert await projector.state_at(draft_id, middle) == fold_all(
                None, [r.event() for r in records[:middle]]
            )
            for user in USERS:
                active = {s.id for s in await projector.drafts_for(user)}
                archived = {s.id for s in await projector.drafts_for(user, archived=True)}
                listed = active | archived
                assert (draft_id in listed) == folded.can_view(user)
                assert (draft_id in archived) == (folded.can_view(user) and folded.archived)
        report = await verify_log(store)
        assert report.ok, report.problem
        assert report.events == len(log)


DraftsMachine.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestDraftsMachine = DraftsMachine.TestCase
