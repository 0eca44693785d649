"""The writer's position fill gives the bytes a full encoding gives (the hash chain covers them)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from eventstore.events import (
    GENESIS_HASH,
    POSITION_PLACEHOLDER,
    NewEvent,
    build_records,
    canonical_json,
    encode_bodies,
    fill_position,
)

PLACEHOLDER_TEXT = str(POSITION_PLACEHOLDER)

# JSON values that may hold the placeholder's own text (in strings, keys, as a number) or pieces of it.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from([POSITION_PLACEHOLDER, POSITION_PLACEHOLDER + 1, -(2**63), 0]),
    st.text(max_size=30),
    st.sampled_from(
        [PLACEHOLDER_TEXT, "x" + PLACEHOLDER_TEXT + "y", PLACEHOLDER_TEXT[:-1], PLACEHOLDER_TEXT * 2]
    ),
)
keys = st.one_of(st.text(max_size=8), st.just(PLACEHOLDER_TEXT), st.just("id"))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=12,
)
paths = st.lists(st.sampled_from(["segment", "id", "a", PLACEHOLDER_TEXT]), min_size=1, max_size=3).map(tuple)


@given(
    data=st.dictionaries(keys, values, max_size=5),
    path=paths,
    seq=st.integers(min_value=1, max_value=2**63 - 1),
    position=st.integers(min_value=1, max_value=2**63 - 1),
)
def test_filled_body_is_the_canonical_encoding_at_that_position(
    data: dict[str, Any], path: tuple[str, ...], seq: int, position: int
) -> None:
    new = NewEvent("collab.segment_added", "alice", "2025-12-23T20:30:45.123Z", data, path)
    try:
        expected = canonical_json(new.materialise("draft_1", seq, position))
    except (TypeError, ValueError):  # a path through a non-object: refused before queueing
        return
    (body,) = encode_bodies("draft_1", [new], seq - 1)
    assert fill_position(new, "draft_1", seq, position, body) == expected


def test_records_built_from_queued_bodies_equal_records_built_from_scratch() -> None:
    events = [
        NewEvent("t", "alice", "ts", {"n": 1}),
        NewEvent("t", "alice", "ts", {"segment": {"id": 0, "content": PLACEHOLDER_TEXT}}, ("segment", "id")),
        NewEvent("t", "alice", "ts", {"segment": {"id": 0, "content": "plain"}}, ("segment", "id")),
    ]
    bodies = encode_bodies("draft_1", events, 4)
    from_bodies = build_records("draft_1", events, 4, 99, GENESIS_HASH, None, bodies)
    from_scratch = build_records("draft_1", events, 4, 99, GENESIS_HASH, None)
    assert from_bodies == from_scratch
    assert [r.body.count(b'"id":') for r in from_bodies[1:]] == [1, 1]
    assert b'"id":101' in from_bodies[1].body and b'"id":102' in from_bodies[2].body
