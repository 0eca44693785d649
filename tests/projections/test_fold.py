"""fold / fold_all / state_at / fold_log agree with each other and refuse impossible logs."""

from __future__ import annotations

import pytest

from eventstore import Event
from eventstore.memory import MemoryStore
from projections import fold, fold_all, state_at
from projections.fold import FoldError, fold_log, fold_summary
from projections.state import DraftSummary
from tests.projections.drafting import populate


@pytest.fixture
async def log() -> list[Event]:
    store = MemoryStore()
    await populate(store, drafts=3, steps=60)
    return [r.event() for r in await store.read_all(0, 10_000)]


def _of(events: list[Event], draft_id: str) -> list[Event]:
    return [e for e in events if e.draft_id == draft_id]


def test_fold_one_by_one_equals_fold_all_and_fold_log(log: list[Event]) -> None:
    by_log = fold_log(log)
    assert set(by_log) == {"draft_0", "draft_1", "draft_2"}
    for draft_id, expected in by_log.items():
        events = _of(log, draft_id)
        state = None
        for e in events:
            state = fold(state, e)
            assert state.seq == e.seq and state.updated_at == e.ts
        assert state == expected == fold_all(None, events) == state_at(events)
        assert state.to_json() == expected.to_json()


def test_state_at_is_the_fold_of_the_prefix(log: list[Event]) -> None:
    events = _of(log, "draft_1")
    for n in range(1, len(events) + 1):
        at_n = state_at(events, n)
        assert at_n is not None and at_n.seq == n
        assert at_n == fold_all(None, events[:n])
        # folding on from a past state gives the same as folding from scratch
        assert fold_all(at_n, events[n:]) == fold_all(None, events)
    assert state_at([], None) is None
    assert fold_all(None, []) is None
    state = fold_all(None, events)
    assert fold_all(state, []) is state


def test_segment_positions_and_ids(log: list[Event]) -> None:
    for draft_id, state in fold_log(log).items():
        added = [e for e in _of(log, draft_id) if e.type == "collab.segment_added"]
        assert [s.position for s in state.segments] == list(range(1, len(added) + 1))
        assert [s.id for s in state.segments] == [e.data["segment"]["id"] for e in added]


def _event(seq: int, type_: str = "collab.draft_updated", draft_id: str = "d", **data: object) -> Event:
    return Event(
        type=type_, draft_id=draft_id, seq=seq, ts="2025-01-01T00:00:00.000Z", user_id="u", data=data
    )


CREATED = _event(1, "collab.draft_created", title="t", description="", creator_id="u")


def test_impossible_logs_are_refused() -> None:
    with pytest.raises(FoldError, match="first event"):
        fold(None, _event(1, title="x"))
    state = fold(None, CREATED)
    with pytest.raises(FoldError, match="already created"):
        fold(state, _event(2, "collab.draft_created", title="t", description="", creator_id="u"))
    with pytest.raises(FoldError, match="seq 3"):
        fold(state, _event(3, title="x"))
    with pytest.raises(FoldError, match="seq 1"):
        fold(state, _event(1, title="x"))
    with pytest.raises(FoldError, match="draft"):
        fold(state, _event(2, draft_id="other", title="x"))
    with pytest.raises(FoldError):
        fold(None, _event(2, "collab.draft_created", title="t", description="", creator_id="u"))
    # the state folded into is never changed
    assert state == fold(None, CREATED)


def test_unknown_event_types_only_advance_seq() -> None:
    state = fold(None, CREATED)
    later = fold(state, _event(2, "collab.something_new", anything=1))
    assert later.seq == 2 and later.updated_at == "2025-01-01T00:00:00.000Z"
    assert (later.title, later.segments, later.collaborators) == (state.title, (), ())


def test_summaries_follow_titles_and_members(log: list[Event]) -> None:
    summaries: dict[str, DraftSummary] = {}
    for e in log:
        summaries[e.draft_id] = fold_summary(summaries.get(e.draft_id), e)
    for draft_id, state in fold_log(log).items():
        assert summaries[draft_id] == state.summary()
        assert summaries[draft_id].to_dict() == {
            "id": draft_id,
            "title": state.title,
            "seq": state.seq,
            "updated_at": state.updated_at,
        }
    with pytest.raises(FoldError):
        fold_summary(None, _event(1, title="x"))
