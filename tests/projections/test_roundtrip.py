"""decode(encode(x)) == x for every event type and for draft state (hypothesis)."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from eventstore.events import GENESIS_HASH, Event, NewEvent, build_records, canonical_json
from projections.state import Collaborator, DraftState, RingState, Segment

user_ids = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp")), min_size=1, max_size=20
)
texts = st.text(max_size=60)
timestamps = st.datetimes(timezones=st.none()).map(
    lambda t: t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"
)
seqs = st.integers(min_value=1, max_value=2**53)
ids = st.integers(min_value=1, max_value=2**53)

segments = st.builds(
    Segment,
    id=ids,
    author_user_id=user_ids,
    content=st.text(min_size=1, max_size=80),
    position=st.integers(min_value=1, max_value=10_000),
    created_at=timestamps,
)


def _segment_data(s: Segment) -> dict[str, Any]:
    return {"segment": orjson.loads(orjson.dumps(s))}


EVENT_DATA: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "collab.draft_created": st.fixed_dictionaries(
        {"title": texts, "description": texts, "creator_id": user_ids}
    ),
    "collab.segment_added": segments.map(_segment_data),
    "collab.ring_passed": st.tuples(user_ids, user_ids, st.lists(user_ids, max_size=6)).map(
        lambda t: {
            "from_user_id": t[0],
            "to_user_id": t[1],
            "current_holder_id": t[1],
            "holders_history": [*t[2], t[1]],
        }
    ),
    "collab.collaborator_added": st.fixed_dictionaries(
        {
            "collaborator_id": user_ids,
            "role": st.sampled_from(["contributor", "viewer"]),
            "joined_at": timestamps,
        }
    ),
    "collab.draft_updated": st.fixed_dictionaries({}, optional={"title": texts, "description": texts}),
}


@st.composite
def events(draw: st.DrawFn) -> Event:
    event_type = draw(st.sampled_from(sorted(EVENT_DATA)))
    return Event(
        type=event_type,
        draft_id=draw(st.text(min_size=1, max_size=30)),
        seq=draw(seqs),
        ts=draw(timestamps),
        user_id=draw(user_ids),
        data=draw(EVENT_DATA[event_type]),
    )


@settings(max_examples=300)
@given(events())
def test_every_event_type_round_trips_through_canonical_bytes(event: Event) -> None:
    body = event.canonical_bytes()
    decoded = Event.from_body(body)
    assert decoded == event
    assert decoded.model_dump() == event.model_dump()
    assert decoded.canonical_bytes() == body
    # the envelope is exactly API.md's, with sorted keys and no whitespace
    envelope = orjson.loads(body)
    assert list(envelope) == ["data", "draft_id", "seq", "ts", "type", "user_id"]
    assert body == canonical_json(envelope)
    assert Event.model_validate_json(body) == event


@settings(max_examples=100)
@given(st.lists(events(), min_size=1, max_size=5), st.text(min_size=1, max_size=10), st.integers(0, 1000))
def test_stored_records_decode_to_the_events_appended(batch: list[Event], draft_id: str, head: int) -> None:
    pending = [NewEvent(e.type, e.user_id, e.ts, e.data) for e in batch]
    records = build_records(draft_id, pending, head, 5000, GENESIS_HASH, None)
    for offset, (record, original) in enumerate(zip(records, batch, strict=True), start=1):
        event = record.event()
        assert (event.type, event.user_id, event.ts, event.data) == (
            original.type,
            original.user_id,
            original.ts,
            original.data,
        )
        assert (event.draft_id, event.seq, record.position) == (draft_id, head + offset, 5000 + offset)
        assert Event.from_body(event.canonical_bytes()) == event


collaborators = st.builds(
    Collaborator, user_id=user_ids, role=st.sampled_from(["contributor", "viewer"]), joined_at=timestamps
)
states = st.builds(
    DraftState,
    id=st.text(min_size=1, max_size=30),
    title=texts,
    description=texts,
    creator_id=user_ids,
    collaborators=st.lists(collaborators, max_size=5).map(tuple),
    segments=st.lists(segments, max_size=5).map(tuple),
    ring_state=st.builds(
        RingState, current_holder_id=user_ids, holders_history=st.lists(user_ids).map(tuple)
    ),
    seq=seqs,
    created_at=timestamps,
    updated_at=timestamps,
    archived=st.booleans(),
)


@settings(max_examples=200)
@given(states)
def test_draft_state_round_trips_through_json(state: DraftState) -> None:
    raw = state.to_json()
    assert raw == canonical_json(orjson.loads(raw))  # sorted keys at every level
    assert raw == canonical_json(dataclasses.asdict(state))  # every field, nothing else
    assert DraftState.from_json(raw) == state
    assert DraftState.from_json(raw.decode()) == state
    assert DraftState.from_json(raw).to_json() == raw
    assert state.to_dict() == orjson.loads(raw)
    # API.md's shape (v2 adds "archived"), nothing more
    assert set(state.to_dict()) == {
        "archived",
        "id",
        "title",
        "description",
        "creator_id",
        "collaborators",
        "segments",
        "ring_state",
        "seq",
        "created_at",
        "updated_at",
    }


long_states = st.builds(dataclasses.replace, states, segments=st.lists(segments, max_size=12).map(tuple))


@settings(max_examples=200)
@given(long_states, st.integers(min_value=1, max_value=14))
def test_draft_state_json_in_pieces_joins_to_the_same_bytes(state: DraftState, per_piece: int) -> None:
    pieces = list(state.json_pieces(per_piece))
    assert b"".join(pieces) == state.to_json() == canonical_json(dataclasses.asdict(state))
    # head, the segments (a comma between two pieces of them), tail
    assert len(pieces) == 2 + max(0, 2 * -(-len(state.segments) // per_piece) - 1)
