"""The feed's concern rule (projections/feed.py) against a model, over random draft histories."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from projections.decide import CreateDraft, decide
from projections.errors import DomainError
from projections.event_types import EventType
from projections.feed import Envelope, FeedFolder, concerned_users
from projections.fold import fold_all
from projections.state import DraftSummary
from tests.projections.drafting import clock
from tests.projections.feedlog import DRAFTS, USERS, command_for, expected_feed

steps = st.lists(
    st.tuples(st.sampled_from(DRAFTS), st.integers(0, 999), st.sampled_from(USERS), st.sampled_from(USERS)),
    max_size=80,
)


def _history(choices: list[tuple[str, int, str, str]]) -> list[tuple[int, dict[str, Any]]]:
    """The log a server would write for these attempts (refusals append nothing)."""
    now = clock()
    states: dict[str, Any] = {}
    log: list[tuple[int, dict[str, Any]]] = []
    for draft_id, choice, actor, other in choices:
        state = states.get(draft_id)
        command = command_for(choice, actor, other, draft_id)
        if state is not None and isinstance(command, CreateDraft):
            continue  # the store refuses it (expected seq 0), as on the server
        try:
            new = decide(state, command, next(now))
        except DomainError:
            continue
        envelopes = []
        for k, event in enumerate(new):
            seq = (state.seq if state is not None else 0) + k + 1
            envelopes.append((len(log) + 1, event.materialise(draft_id, seq, len(log) + 1)))
            log.append(envelopes[-1])
        states[draft_id] = fold_all(state, [Envelope.of(e) for _, e in envelopes])
    return log


def _folded_feed(log: list[tuple[int, dict[str, Any]]]) -> dict[str, list[int]]:
    folder = FeedFolder()
    feed: dict[str, list[int]] = {u: [] for u in USERS}
    for position, env in log:
        for user in folder.add(Envelope.of(env)):
            feed[user].append(position)
    return feed


@settings(max_examples=150, deadline=None)
@given(steps)
def test_the_feed_is_exactly_the_events_that_concern_each_user(
    choices: list[tuple[str, int, str, str]],
) -> None:
    log = _history(choices)
    assert _folded_feed(log) == expected_feed(log)


@settings(max_examples=100, deadline=None)
@given(steps)
def test_add_envelope_and_its_segment_shortcut_give_add_s_feed_and_summaries(
    choices: list[tuple[str, int, str, str]],
) -> None:
    log = _history(choices)
    by_add, by_envelope, by_skip = FeedFolder(), FeedFolder(), FeedFolder()
    for _, env in log:
        users = by_add.add(Envelope.of(env))
        assert by_envelope.add_envelope(env) == users
        skipped = by_skip.skip(env["draft_id"], env["seq"], env["type"])
        assert (frozenset() if skipped else by_skip.add(Envelope.of(env))) == users
    # skip leaves updated_at behind (nobody's feed reads it); members and seq agree
    assert {d: (s.seq, s.members, s.archived, s.title) for d, s in by_skip.summaries.items()} == {
        d: (s.seq, s.members, s.archived, s.title) for d, s in by_add.summaries.items()
    }
    assert by_envelope.summaries == by_add.summaries
    states: dict[str, Any] = {}
    for _, env in log:
        states[env["draft_id"]] = fold_all(states.get(env["draft_id"]), [Envelope.of(env)])
    assert by_add.summaries == {draft_id: state.summary() for draft_id, state in states.items()}


@settings(max_examples=60, deadline=None)
@given(steps)
def test_every_feed_event_is_of_a_kind_the_rules_name(choices: list[tuple[str, int, str, str]]) -> None:
    log = dict(_history(choices))
    for user, positions in _folded_feed(list(log.items())).items():
        for p in positions:
            env = log[p]
            assert env["type"] != EventType.SEGMENT_ADDED
            data = env["data"]
            assert user in (
                data.get("creator_id"),
                data.get("collaborator_id"),
                data.get("to_user_id"),
            ) or env["type"] in (
                EventType.DRAFT_ARCHIVED,
                EventType.DRAFT_UNARCHIVED,
                EventType.DRAFT_UPDATED,
            )


def test_viewer_events_concern_the_members_before_the_event_only() -> None:
    before = DraftSummary("d", "T", 3, "ts", frozenset({"alice", "bob"}))
    updated = Envelope(EventType.DRAFT_UPDATED, "d", 4, "ts", {"title": "x"})
    archived = Envelope(EventType.DRAFT_ARCHIVED, "d", 4, "ts", {})
    assert concerned_users(before, updated) == {"alice", "bob"}
    assert concerned_users(before, archived) == {"alice", "bob"}
    removed = Envelope(
        EventType.COLLABORATOR_REMOVED, "d", 4, "ts", {"collaborator_id": "bob", "role": "viewer"}
    )
    assert concerned_users(before, removed) == {"bob"}  # the removed user learns of it


def test_segments_and_unknown_types_concern_nobody() -> None:
    before = DraftSummary("d", "T", 3, "ts", frozenset({"alice"}))
    segment = Envelope(EventType.SEGMENT_ADDED, "d", 4, "ts", {"segment": {}})
    future = Envelope("collab.something_new", "d", 4, "ts", {})
    assert concerned_users(before, segment) == frozenset()
    assert concerned_users(before, future) == frozenset()


def test_being_added_and_passed_the_ring_concern_the_named_user() -> None:
    log = _history(
        [("draft_a", 0, "alice", "bob"), ("draft_a", 7, "alice", "bob"), ("draft_a", 4, "alice", "bob")]
    )
    feed = _folded_feed(log)
    assert feed["bob"] == [2, 3]  # added, then passed the ring to
    assert feed["alice"] == [1]
