"""decide(): every rule and error code of API.md's role table."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from eventstore.events import Event, NewEvent
from projections import (
    AddCollaborator,
    AlreadyCollaborator,
    AppendSegment,
    Command,
    CreateDraft,
    DomainError,
    DraftState,
    Forbidden,
    InvalidRingTarget,
    NotFound,
    NotRingHolder,
    PassRing,
    UpdateDraft,
    ValidationFailed,
    decide,
    fold,
)
from projections.decide import DEFAULT_LIMITS, Limits

NOW = "2025-12-23T20:30:45.123Z"


def apply(state: DraftState | None, new_events: list[NewEvent], draft_id: str = "draft_1") -> DraftState:
    """Fold decided events as the store would give them back (seq, segment id = a position)."""
    for new in new_events:
        seq = state.seq + 1 if state is not None else 1
        envelope = new.materialise(draft_id, seq, position=1000 + seq)
        state = fold(state, Event.model_validate(envelope))
    assert state is not None
    return state


def run(state: DraftState | None, command: Command, limits: Limits = DEFAULT_LIMITS) -> DraftState:
    return apply(state, decide(state, command, NOW, limits))


@pytest.fixture
def draft() -> DraftState:
    """alice created it and holds the ring; carol contributes, vic views; sam is a stranger."""
    state = run(None, CreateDraft("alice", "draft_1", "Title", "Desc"))
    state = run(state, AddCollaborator("alice", "carol", "contributor"))
    return run(state, AddCollaborator("carol", "vic", "viewer"))


def held_by(state: DraftState, holder: str) -> DraftState:
    return state if state.ring_state.current_holder_id == holder else run(state, PassRing("alice", holder))


def test_create_gives_the_creator_the_ring() -> None:
    events = decide(None, CreateDraft("alice", "draft_1", "Title"), NOW)
    assert [(e.type, e.user_id, e.ts, e.data) for e in events] == [
        ("collab.draft_created", "alice", NOW, {"title": "Title", "description": "", "creator_id": "alice"})
    ]
    state = apply(None, events)
    assert state.ring_state.current_holder_id == "alice"
    assert state.ring_state.holders_history == ("alice",)
    assert (state.creator_id, state.seq, state.created_at, state.updated_at) == ("alice", 1, NOW, NOW)
    assert state.collaborators == () and state.segments == ()


# -- who may do what ----------------------------------------------------------------------------

MUTATIONS: dict[str, Callable[[str], Command]] = {
    "append": lambda user: AppendSegment(user, "hello"),
    "pass": lambda user: PassRing(user, "alice" if user != "alice" else "carol"),
    "add": lambda user: AddCollaborator(user, "newbie", "viewer"),
    "update": lambda user: UpdateDraft(user, title="Renamed"),
}


@pytest.mark.parametrize("action", sorted(MUTATIONS))
@pytest.mark.parametrize("user", ["alice", "carol"])
def test_creator_and_contributor_may_do_everything_when_holding(
    draft: DraftState, user: str, action: str
) -> None:
    state = held_by(draft, user)
    after = run(state, MUTATIONS[action](user))
    assert after.seq == state.seq + 1


@pytest.mark.parametrize("action", ["add", "update"])
@pytest.mark.parametrize("user", ["alice", "carol"])
def test_members_may_add_and_update_without_the_ring(draft: DraftState, user: str, action: str) -> None:
    holder = "carol" if user == "alice" else "alice"
    state = held_by(draft, holder)
    assert run(state, MUTATIONS[action](user)).seq == state.seq + 1


@pytest.mark.parametrize("action", ["append", "pass"])
@pytest.mark.parametrize("user", ["alice", "carol"])
def test_append_and_pass_need_the_ring(draft: DraftState, user: str, action: str) -> None:
    holder = "carol" if user == "alice" else "alice"
    state = held_by(draft, holder)
    with pytest.raises(NotRingHolder) as info:
        decide(state, MUTATIONS[action](user), NOW)
    assert info.value.code == "not_ring_holder"


@pytest.mark.parametrize("action", sorted(MUTATIONS))
@pytest.mark.parametrize("user", ["vic", "sam"])
def test_viewers_and_strangers_are_forbidden(draft: DraftState, user: str, action: str) -> None:
    with pytest.raises(Forbidden) as info:
        decide(draft, MUTATIONS[action](user), NOW)
    assert info.value.code == "forbidden"


def test_viewing_rights(draft: DraftState) -> None:
    assert [draft.can_view(u) for u in ("alice", "carol", "vic", "sam")] == [True, True, True, False]
    assert [draft.role_of(u) for u in ("alice", "carol", "vic", "sam")] == [
        "creator",
        "contributor",
        "viewer",
        None,
    ]
    assert draft.members() == {"alice", "carol", "vic"}


@pytest.mark.parametrize("action", sorted(MUTATIONS))
def test_commands_on_a_missing_draft_are_not_found(action: str) -> None:
    with pytest.raises(NotFound) as info:
        decide(None, MUTATIONS[action]("alice"), NOW)
    assert info.value.code == "not_found"


# -- the ring -----------------------------------------------------------------------------------


def test_passing_records_the_history(draft: DraftState) -> None:
    events = decide(draft, PassRing("alice", "carol"), NOW)
    assert [(e.type, e.data) for e in events] == [
        (
            "collab.ring_passed",
            {
                "from_user_id": "alice",
                "to_user_id": "carol",
                "current_holder_id": "carol",
                "holders_history": ["alice", "carol"],
            },
        )
    ]
    state = run(apply(draft, events), PassRing("carol", "alice"))  # back to the creator
    assert state.ring_state.current_holder_id == "alice"
    assert state.ring_state.holders_history == ("alice", "carol", "alice")


@pytest.mark.parametrize(("holder", "target"), [("alice", "alice"), ("carol", "carol")])
def test_ring_cannot_go_to_oneself(draft: DraftState, holder: str, target: str) -> None:
    with pytest.raises(InvalidRingTarget) as info:
        decide(held_by(draft, holder), PassRing(holder, target), NOW)
    assert info.value.code == "invalid_ring_target"


@pytest.mark.parametrize("target", ["vic", "sam"])
@pytest.mark.parametrize("holder", ["alice", "carol"])
def test_ring_cannot_go_to_a_viewer_or_stranger(draft: DraftState, holder: str, target: str) -> None:
    with pytest.raises(InvalidRingTarget):
        decide(held_by(draft, holder), PassRing(holder, target), NOW)


def test_not_holding_beats_a_bad_target(draft: DraftState) -> None:
    with pytest.raises(NotRingHolder):
        decide(draft, PassRing("carol", "vic"), NOW)


# -- segments -----------------------------------------------------------------------------------


def test_segments_get_positions_and_a_store_assigned_id(draft: DraftState) -> None:
    events = decide(draft, AppendSegment("alice", "first"), NOW)
    assert len(events) == 1 and events[0].type == "collab.segment_added"
    assert events[0].position_path == ("segment", "id")
    assert events[0].data["segment"] | {"id": None} == {
        "id": None,
        "author_user_id": "alice",
        "content": "first",
        "position": 1,
        "created_at": NOW,
    }
    state = apply(draft, events)
    state = run(held_by(state, "carol"), AppendSegment("carol", "second"))
    assert [(s.position, s.author_user_id, s.content) for s in state.segments] == [
        (1, "alice", "first"),
        (2, "carol", "second"),
    ]
    assert [s.id for s in state.segments] == [1004, 1006]  # the positions apply() gave their events


# -- collaborators ------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["alice", "carol", "vic"])
def test_adding_an_existing_member_is_already_collaborator(draft: DraftState, who: str) -> None:
    for role in ("contributor", "viewer"):
        with pytest.raises(AlreadyCollaborator) as info:
            decide(draft, AddCollaborator("carol", who, role), NOW)
        assert info.value.code == "already_collaborator"


def test_added_collaborators_join_with_their_role(draft: DraftState) -> None:
    events = decide(draft, AddCollaborator("alice", "dave", "contributor"), NOW)
    assert [(e.type, e.data) for e in events] == [
        ("collab.collaborator_added", {"collaborator_id": "dave", "role": "contributor", "joined_at": NOW})
    ]
    state = apply(draft, events)
    assert [(c.user_id, c.role) for c in state.collaborators] == [
        ("carol", "contributor"),
        ("vic", "viewer"),
        ("dave", "contributor"),
    ]
    assert run(state, PassRing("alice", "dave")).ring_state.current_holder_id == "dave"


# -- updates ------------------------------------------------------------------------------------


def test_update_records_only_the_fields_that_changed(draft: DraftState) -> None:
    assert decide(draft, UpdateDraft("alice", title="Title", description="Desc"), NOW) == []
    events = decide(draft, UpdateDraft("carol", title="Title", description="New"), NOW)
    assert [(e.type, e.data) for e in events] == [("collab.draft_updated", {"description": "New"})]
    state = run(draft, UpdateDraft("alice", title="T2"))
    assert (state.title, state.description) == ("T2", "Desc")


# -- validation limits --------------------------------------------------------------------------

LONG = "x" * 10_001


@pytest.mark.parametrize(
    ("command", "field"),
    [
        (CreateDraft("alice", "d", ""), "title"),
        (CreateDraft("alice", "d", "   "), "title"),
        (CreateDraft("alice", "d", "t" * 201), "title"),
        (CreateDraft("alice", "d", "ok", "d" * 2001), "description"),
        (AppendSegment("alice", ""), "content"),
        (AppendSegment("alice", LONG), "content"),
        (PassRing("alice", ""), "to_user_id"),
        (PassRing("alice", "has space"), "to_user_id"),
        (AddCollaborator("alice", "", "viewer"), "user_id"),
        (AddCollaborator("alice", "u" * 129, "viewer"), "user_id"),
        (AddCollaborator("alice", "tab\tbed", "viewer"), "user_id"),
        (AddCollaborator("alice", "bell\x07", "viewer"), "user_id"),
        (AddCollaborator("alice", "newbie", "creator"), "role"),
        (AddCollaborator("alice", "newbie", "owner"), "role"),
        (UpdateDraft("alice"), "title"),
        (UpdateDraft("alice", title=""), "title"),
        (UpdateDraft("alice", title="t" * 201), "title"),
        (UpdateDraft("alice", description="d" * 2001), "description"),
    ],
)
def test_out_of_limit_fields_are_validation_errors(draft: DraftState, command: Command, field: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        decide(None if isinstance(command, CreateDraft) else draft, command, NOW)
    assert info.value.code == "validation_error"
    assert field in info.value.details


@pytest.mark.parametrize(
    "command",
    [
        CreateDraft("alice", "d", "t" * 200, "d" * 2000),
        CreateDraft("alice", "d", "é"),
        AppendSegment("alice", "c" * 10_000),
        AppendSegment("alice", "c"),
        AddCollaborator("alice", "u" * 128, "viewer"),
        AddCollaborator("alice", "ünïcode-user_1", "contributor"),
        UpdateDraft("alice", description=""),
        UpdateDraft("alice", title="t" * 200),
    ],
)
def test_values_at_the_limits_are_accepted(draft: DraftState, command: Command) -> None:
    events = decide(None if isinstance(command, CreateDraft) else draft, command, NOW)
    assert len(events) == 1


def test_limits_are_configurable(draft: DraftState) -> None:
    small = Limits(title_max=5, description_max=3, content_max=4, user_id_max=3)
    with pytest.raises(ValidationFailed):
        decide(draft, UpdateDraft("alice", title="sixsix"), NOW, small)
    with pytest.raises(ValidationFailed):
        decide(draft, AppendSegment("alice", "fives"), NOW, small)
    with pytest.raises(ValidationFailed):
        decide(draft, AddCollaborator("alice", "dave", "viewer"), NOW, small)
    assert decide(draft, AppendSegment("alice", "four"), NOW, small)


def test_role_is_checked_before_fields(draft: DraftState) -> None:
    with pytest.raises(Forbidden):
        decide(draft, AppendSegment("vic", ""), NOW)
    with pytest.raises(Forbidden):
        decide(draft, UpdateDraft("sam", title=""), NOW)


def test_every_domain_error_carries_its_contract_code() -> None:
    codes = {
        cls.code
        for cls in (
            ValidationFailed,
            NotFound,
            Forbidden,
            NotRingHolder,
            InvalidRingTarget,
            AlreadyCollaborator,
        )
    }
    assert codes == {
        "validation_error",
        "not_found",
        "forbidden",
        "not_ring_holder",
        "invalid_ring_target",
        "already_collaborator",
    }
    assert all(issubclass(c, DomainError) for c in (Forbidden, NotRingHolder))
