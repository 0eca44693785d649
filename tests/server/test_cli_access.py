"""The operator commands understand API.md v2's events: ``replay``, ``log``, ``verify``,
``rebuild`` and ``copy`` on a log with removals, role changes and archiving, and ``tail --pretty``
describes them; old logs fold exactly as before (``archived`` false)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson

from eventstore import open_store
from projections.decide import (
    AddCollaborator,
    AppendSegment,
    ArchiveDraft,
    ChangeRole,
    CreateDraft,
    PassRing,
    RemoveCollaborator,
)
from projections.fold import fold_all
from ringlog import Event
from ringlog.tail import describe
from tests.hardening.cliproc import ringlog
from tests.projections.drafting import clock, execute

DRAFT = "draft_" + "b" * 20


async def _fill(db: str) -> list[bytes]:
    store = open_store(db)
    await store.open()
    now = clock()
    try:
        for command in (
            CreateDraft("alice", DRAFT, "T"),
            AddCollaborator("alice", "bob", "contributor"),
            AddCollaborator("alice", "vera", "viewer"),
            PassRing("alice", "bob"),
            AppendSegment("bob", "hi"),
            ChangeRole("alice", "bob", "viewer"),  # + ring back: seqs 6, 7
            RemoveCollaborator("vera", "vera"),
            ArchiveDraft("alice", True),
            ArchiveDraft("alice", False),
            ArchiveDraft("alice", True),
        ):
            outcome = await execute(store, DRAFT, command, next(now))
            assert isinstance(outcome, tuple) and outcome, outcome
        return [r.body for r in await store.read(DRAFT)]
    finally:
        await store.close()


async def test_replay_log_verify_rebuild_copy_with_the_new_events(tmp_path: Path) -> None:
    db = str(tmp_path / "a.db")
    bodies = await _fill(db)
    assert len(bodies) == 11
    state = fold_all(None, [Event.model_validate(orjson.loads(b)) for b in bodies])
    assert state is not None and state.archived and [c.role for c in state.collaborators] == ["viewer"]
    out = await asyncio.to_thread(ringlog, "replay", "--db", db, "--draft", DRAFT, "--json")
    assert out.returncode == 0 and out.stdout.strip() == state.to_json()
    out = await asyncio.to_thread(
        ringlog, "replay", "--db", db, "--draft", DRAFT, "--until-seq", "7", "--json"
    )
    seven = orjson.loads(out.stdout)
    assert seven["ring_state"]["current_holder_id"] == "alice" and seven["archived"] is False
    out = await asyncio.to_thread(ringlog, "log", "--db", db, "--draft", DRAFT)
    assert out.stdout.splitlines() == bodies
    for command in (("verify", "--db", db), ("rebuild", "--db", db)):
        out = await asyncio.to_thread(ringlog, *command)
        assert out.returncode == 0, out.stderr
    copy = str(tmp_path / "b.db")
    out = await asyncio.to_thread(ringlog, "copy", "--from", db, "--to", copy)
    assert out.returncode == 0, out.stderr
    out = await asyncio.to_thread(ringlog, "log", "--db", copy, "--draft", DRAFT)
    assert out.stdout.splitlines() == bodies
    out = await asyncio.to_thread(ringlog, "verify", "--db", copy)
    assert out.returncode == 0, out.stderr


def test_tail_pretty_describes_every_new_event() -> None:
    def line(type_: str, data: dict[str, object]) -> str:
        return describe(Event(type=type_, draft_id=DRAFT, seq=3, ts="t", user_id="alice", data=data))

    assert line("collab.collaborator_removed", {"collaborator_id": "bob", "role": "viewer"}).endswith(
        "removed bob (viewer)"
    )
    assert line(
        "collab.role_changed", {"collaborator_id": "bob", "from_role": "contributor", "to_role": "viewer"}
    ).endswith("made bob viewer (was contributor)")
    assert line("collab.draft_archived", {}).endswith("archived the draft")
    assert line("collab.draft_unarchived", {}).endswith("unarchived the draft")
    # the ring's return after alice removed or demoted bob, and an ordinary pass by alice
    returned = {"from_user_id": "bob", "to_user_id": "alice", "current_holder_id": "alice"}
    assert line("collab.ring_passed", returned).endswith("alice returned the ring from bob to alice")
    passed = {"from_user_id": "alice", "to_user_id": "bob", "current_holder_id": "bob"}
    assert line("collab.ring_passed", passed).endswith("alice passed the ring to bob")


def test_an_old_log_folds_to_archived_false_and_old_snapshots_load() -> None:
    from projections.state import DraftState

    old = {
        "id": DRAFT, "title": "T", "description": "", "creator_id": "alice", "collaborators": [],
        "segments": [], "ring_state": {"current_holder_id": "alice", "holders_history": ["alice"]},
        "seq": 1, "created_at": "t", "updated_at": "t",
    }  # fmt: skip
    assert DraftState.from_json(orjson.dumps(old)).archived is False
    created = Event(
        type="collab.draft_created", draft_id=DRAFT, seq=1, ts="t", user_id="alice",
        data={"title": "T", "description": "", "creator_id": "alice"},
    )  # fmt: skip
    state = fold_all(None, [created])
    assert state is not None and state.to_dict() == {**old, "archived": False}
