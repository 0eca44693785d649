"""SeqOrderer and Backoff: pure, so the delivery guarantees are tested directly."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringlog.backoff import Backoff, parse_retry_after
from ringlog.ordering import SeqOrderer


@dataclass(frozen=True)
class Ev:
    seq: int
    channel: str = "ws"


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[int, int, list[Ev]]:
    """A log 1..n, a starting point, and a messy interleaving of two channels over it."""
    n = draw(st.integers(0, 40))
    start = draw(st.integers(0, n))
    seqs = list(range(1, n + 1))
    # each channel delivers some subset (gaps), some twice (duplicates), shuffled (reordering)
    ws = draw(st.lists(st.sampled_from(seqs), max_size=3 * n)) if seqs else []
    poll = draw(st.lists(st.sampled_from(seqs), max_size=3 * n)) if seqs else []
    mixed = draw(st.permutations([Ev(s, "ws") for s in ws] + [Ev(s, "poll") for s in poll]))
    return n, start, list(mixed)


@settings(max_examples=300, deadline=None)
@given(deliveries())
def test_any_interleaving_is_released_once_in_order(case: tuple[int, int, list[Ev]]) -> None:
    n, start, mixed = case
    orderer: SeqOrderer[Ev] = SeqOrderer(start)
    released: list[int] = []
    for ev in mixed:
        released += [e.seq for e in orderer.offer(ev)]
    # what came out is exactly the contiguous run after `start` that the channels covered
    expected_end = start
    delivered = {e.seq for e in mixed}
    while expected_end + 1 in delivered:
        expected_end += 1
    assert released == list(range(start + 1, expected_end + 1))
    assert orderer.last_seq == expected_end
    assert orderer.has_gap == any(s > expected_end + 1 for s in delivered)
    # the gap is filled the way the stream does it: everything from last_seq, again
    released += [e.seq for e in orderer.offer_all([Ev(s, "fetch") for s in range(1, n + 1)])]
    assert released == list(range(start + 1, n + 1))
    assert not orderer.has_gap


def test_pending_overflow_forgets_early_events_but_never_releases_out_of_order() -> None:
    orderer: SeqOrderer[Ev] = SeqOrderer(0, max_pending=3)
    for s in (3, 4, 5, 6):  # the fourth overflows and clears
        assert orderer.offer(Ev(s)) == []
    assert orderer.pending == 1
    assert [e.seq for e in orderer.offer_all([Ev(1), Ev(2)])] == [1, 2]
    assert orderer.has_gap  # 6 still waits for 3..5
    assert [e.seq for e in orderer.offer_all([Ev(3), Ev(4), Ev(5)])] == [3, 4, 5, 6]


def test_negative_start_is_refused() -> None:
    with pytest.raises(ValueError):
        SeqOrderer(-1)


@given(st.lists(st.floats(0, 1, exclude_max=True), min_size=1, max_size=40))
def test_backoff_is_full_jitter_under_a_growing_capped_ceiling(rolls: list[float]) -> None:
    it = iter(rolls)
    backoff = Backoff(base=0.5, cap=30.0, rand=lambda: next(it))
    for attempt, roll in enumerate(rolls):
        ceiling = min(30.0, 0.5 * 2**attempt)
        assert backoff.next_delay() == pytest.approx(roll * ceiling)


def test_backoff_honours_retry_after_and_resets() -> None:
    backoff = Backoff(base=0.5, cap=30.0, rand=lambda: 0.0)
    assert backoff.next_delay(retry_after=7) == 7
    assert backoff.next_delay(retry_after=3600) == 30.0  # never beyond the cap
    backoff.reset()
    assert backoff.attempt == 0
    assert parse_retry_after("5") == 5.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") is None
    assert parse_retry_after(None) is None
