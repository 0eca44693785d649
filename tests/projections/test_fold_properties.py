"""One fold: the shortcuts kept for speed are proven equal to it (hypothesis).

* ``LogFolder.add_envelope`` (rebuilds) inlines ``collab.segment_added``;
* ``fold_summary`` (the projector's list rows) keeps only title, seq, updated_at and members;
* ``ringlog.fold`` (the Python client) folds the client's ``Event`` views;
* ``projections.access.ViewAccess`` (a socket's revocation check) keeps only one user's access.

Each must give exactly what ``fold_all`` gives, on valid logs and on logs the fold refuses.
"""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ringlog
from eventstore.events import Event
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
    decide,
)
from projections.access import ViewAccess
from projections.decide import is_ring_return
from projections.event_types import EVENT_TYPE_PREFIX, EventType
from projections.fold import FoldError, LogFolder, fold, fold_all, fold_log, fold_summary
from projections.state import DraftState, DraftSummary
from tests.projections.drafting import clock

USERS = ["alice", "bob", "carol", "dave"]
DRAFTS = ["draft_a", "draft_b", "draft_c"]

steps = st.lists(
    st.tuples(
        st.sampled_from(DRAFTS),
        st.sampled_from(
            [
                *("segment", "segment", "segment", "pass", "invite", "invite", "update", "create"),
                *("remove", "role", "archive", "unarchive"),
            ]
        ),
        st.sampled_from(USERS),
        st.sampled_from(USERS),
        st.text(min_size=1, max_size=12),
        st.sampled_from(["contributor", "viewer"]),
    ),
    max_size=60,
)


def _command(action: str, draft_id: str, user: str, other: str, text: str, role: str) -> Command:
    if action == "create":
        return CreateDraft(user, draft_id, text)
    if action == "segment":
        return AppendSegment(user, text)
    if action == "pass":
        return PassRing(user, other)
    if action == "invite":
        return AddCollaborator(user, other, role)
    if action == "remove":
        return RemoveCollaborator(user, other)
    if action == "role":
        return ChangeRole(user, other, role)
    if action in ("archive", "unarchive"):
        return ArchiveDraft(user, action == "archive")
    return UpdateDraft(user, title=text)


def _log(plan: list[tuple[str, str, str, str, str, str]]) -> list[dict[str, Any]]:
    """The envelopes (in global position order) that the server would append for ``plan``."""
    return [e for append in _appends(plan) for e in append]


def _appends(plan: list[tuple[str, str, str, str, str, str]]) -> list[list[dict[str, Any]]]:
    """The same envelopes, grouped by the append (one decide() call) that wrote them."""
    appends: list[list[dict[str, Any]]] = []
    envelopes: list[dict[str, Any]] = []
    states: dict[str, DraftState] = {}
    now = clock()
    for draft_id, action, user, other, text, role in plan:
        state = states.get(draft_id)
        if action != "create" and state is None:
            action = "create"
        try:
            new = decide(state, _command(action, draft_id, user, other, text, role), next(now))
        except DomainError:
            continue
        if action == "create" and state is not None:
            continue  # the store refuses a second creation (expected seq 0)
        seq = state.seq if state is not None else 0
        for event in new:
            seq += 1
            envelopes.append(event.materialise(draft_id, seq, len(envelopes) + 1))
        # the canonical bytes, decoded, are what every reader of the log folds
        events = [Event.from_body(orjson.dumps(e)) for e in envelopes[len(envelopes) - len(new) :]]
        states[draft_id] = fold_all(state, events)  # type: ignore[assignment]
        appends.append(
            [
                orjson.loads(orjson.dumps(e, option=orjson.OPT_SORT_KEYS))
                for e in envelopes[len(envelopes) - len(new) :]
            ]
        )
    return appends


def _by_add_envelope(envelopes: list[dict[str, Any]]) -> dict[str, DraftState]:
    folder = LogFolder()
    for envelope in envelopes:
        folder.add_envelope(envelope)
    assert folder.count == len(envelopes)
    return folder.states()


def _by_fold(envelopes: list[dict[str, Any]]) -> dict[str, DraftState]:
    return fold_log([Event.model_validate(e) for e in envelopes])


def _outcome(fn: Any, envelopes: list[dict[str, Any]]) -> Any:
    try:
        return fn(envelopes)
    except FoldError:
        return FoldError


@settings(max_examples=150, deadline=None)
@given(steps)
def test_the_rebuild_fast_path_is_the_fold(plan: list[tuple[str, str, str, str, str, str]]) -> None:
    envelopes = _log(plan)
    expected = _by_fold(envelopes)
    assert _by_add_envelope(envelopes) == expected
    for draft_id, state in expected.items():
        own = [Event.model_validate(e) for e in envelopes if e["draft_id"] == draft_id]
        assert fold_all(None, own) == state
        assert _by_add_envelope(envelopes)[draft_id].to_json() == state.to_json()


@settings(max_examples=150, deadline=None)
@given(steps, st.data())
def test_the_fast_path_refuses_what_the_fold_refuses(
    plan: list[tuple[str, str, str, str, str, str]], data: st.DataObject
) -> None:
    envelopes = _log(plan)
    if not envelopes:
        return
    # break the log in one place: another seq, another draft, or an unknown or first-event type
    i = data.draw(st.integers(0, len(envelopes) - 1))
    broken = dict(envelopes[i])
    change = data.draw(st.sampled_from(["seq", "draft_id", "type"]))
    if change == "seq":
        broken["seq"] = data.draw(st.integers(0, broken["seq"] + 3))
    elif change == "draft_id":
        broken["draft_id"] = data.draw(st.sampled_from([*DRAFTS, "draft_new"]))
    else:
        broken["type"] = data.draw(st.sampled_from([*EventType, EVENT_TYPE_PREFIX + "from_the_future"]))
    mutated = [*envelopes[:i], broken, *envelopes[i + 1 :]]
    if broken["type"] == EventType.SEGMENT_ADDED and "segment" not in broken["data"]:
        return  # not a log any writer produces: the shapes of data are the store's promise
    typed = (  # every type whose data has required fields (API.md "Events", v1 and v2)
        EventType.RING_PASSED,
        EventType.COLLABORATOR_ADDED,
        EventType.DRAFT_CREATED,
        EventType.COLLABORATOR_REMOVED,
        EventType.ROLE_CHANGED,
    )
    if broken["type"] in typed and broken["type"] != envelopes[i]["type"]:
        return  # likewise: data of another type
    assert _outcome(_by_add_envelope, mutated) == _outcome(_by_fold, mutated)


@settings(max_examples=150, deadline=None)
@given(steps)
def test_folding_one_event_at_a_time_is_the_bulk_fold(
    plan: list[tuple[str, str, str, str, str, str]],
) -> None:
    """``fold`` of one ``collab.segment_added`` takes a shortcut (no builder): the same states."""
    envelopes = _log(plan)
    expected = _by_fold(envelopes)
    states: dict[str, DraftState] = {}
    for envelope in envelopes:
        event = Event.model_validate(envelope)
        states[event.draft_id] = fold(states.get(event.draft_id), event)
    assert states == expected
    for draft_id, state in expected.items():
        assert states[draft_id].to_json() == state.to_json()


@settings(max_examples=150, deadline=None)
@given(steps)
def test_summaries_are_the_fold_s_summary(plan: list[tuple[str, str, str, str, str, str]]) -> None:
    envelopes = _log(plan)
    summaries: dict[str, DraftSummary] = {}
    for envelope in envelopes:
        event = Event.model_validate(envelope)
        summaries[event.draft_id] = fold_summary(summaries.get(event.draft_id), event)
    assert summaries == {draft_id: s.summary() for draft_id, s in _by_fold(envelopes).items()}


@settings(max_examples=100, deadline=None)
@given(steps)
def test_the_client_folds_its_event_views_with_the_same_fold(
    plan: list[tuple[str, str, str, str, str, str]],
) -> None:
    envelopes = _log(plan)
    expected = _by_fold(envelopes)
    states: dict[str, ringlog.DraftState] = {}
    for envelope in envelopes:
        event = ringlog.Event.model_validate(envelope)
        states[event.draft_id] = ringlog.fold(states.get(event.draft_id), event)
    assert states == expected


def test_the_client_s_state_is_the_server_s() -> None:
    import client

    assert ringlog.fold is client.fold
    assert ringlog.DraftState is DraftState is client.DraftState
    assert ringlog.EventType is EventType is client.EventType
    with pytest.raises(FoldError):  # the client's fold refuses like the server's
        ringlog.fold(None, ringlog.Event(type="collab.segment_added", draft_id="d", seq=1, ts="t",
                                         user_id="u", data={}))  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(steps, st.sampled_from(USERS), st.data())
def test_a_socket_s_view_access_is_the_fold_s(
    plan: list[tuple[str, str, str, str, str, str]], user: str, data: st.DataObject
) -> None:
    """Admitted at any seq, ViewAccess says 'revoked' exactly at the first later event after
    which the fold says the user can no longer view the draft (and never otherwise)."""
    envelopes = [e for e in _log(plan) if e["draft_id"] == "draft_a"]
    if not envelopes:
        return
    events = [Event.model_validate(e) for e in envelopes]
    states = [fold_all(None, events[: n + 1]) for n in range(len(events))]
    viewable = [n for n, s in enumerate(states) if s is not None and s.can_view(user)]
    if not viewable:
        return
    start = data.draw(st.sampled_from(viewable))
    admitted = states[start]
    assert admitted is not None
    access = ViewAccess(admitted, user)
    by_body = ViewAccess(admitted, user)
    expected_revoked_at = next(
        (n for n in range(start + 1, len(states)) if not states[n].can_view(user)),  # type: ignore[union-attr]
        None,
    )
    for n, envelope in enumerate(envelopes):  # every event, including those already admitted
        revoked = access.observe(envelope["seq"], envelope["type"], envelope["data"])
        assert by_body.observe_body(envelope["seq"], orjson.dumps(envelope)) is revoked
        assert revoked is (n == expected_revoked_at)
        if revoked:
            break


@settings(max_examples=150, deadline=None)
@given(steps)
def test_is_ring_return_finds_exactly_the_second_event_of_an_append(
    plan: list[tuple[str, str, str, str, str, str]],
) -> None:
    """What the service uses to replay an Idempotency-Key over a whole two-event append."""
    appends = _appends(plan)
    joined: dict[str, list[tuple[Event, bool]]] = {}  # per draft: (event, same append as previous)
    for append in appends:
        for i, envelope in enumerate(append):
            joined.setdefault(envelope["draft_id"], []).append((Event.model_validate(envelope), i > 0))
    for events in joined.values():
        for (previous, _), (event, same_append) in itertools.pairwise(events):
            assert is_ring_return(previous, event) is same_append


def test_no_module_spells_an_event_type_but_the_list() -> None:
    """Type strings live in projections/event_types.py alone (the demo page's JS must match it)."""
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[2]
    spelled = re.compile(r"""["']collab\.[a-z_]+["']""")
    offenders = []
    for path in itertools.chain(*(root.glob(f"{d}/**/*.py") for d in ("eventstore", "projections",
                                                                       "server", "ringlog", "client",
                                                                       "scripts"))):  # fmt: skip
        if path.name != "event_types.py" and spelled.search(path.read_text()):
            offenders.append(str(path.relative_to(root)))
    assert offenders == []
    js = (root / "server" / "static" / "ringlog.js").read_text()
    assert {m.strip("\"'") for m in spelled.findall(js)} <= set(EventType)
