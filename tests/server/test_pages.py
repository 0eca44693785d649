"""Framed catch-up pages kept for the next socket (server.pages): only full aligned pages, bounded in bytes."""

from __future__ import annotations

from projections.access import REMOVAL_MARKER
from server.pages import FramedPages


def test_only_full_pages_that_start_after_a_multiple_of_the_size_are_kept() -> None:
    pages = FramedPages(max_bytes=1000, size=10)
    pages.put("s", 1, 10, b"a" * 50)  # seqs 1..10: kept
    pages.put("s", 11, 19, b"b" * 50)  # 9 events: the stream's tail, not full
    pages.put("s", 5, 14, b"c" * 50)  # full but not aligned
    pages.put("s", 21, 31, b"d" * 50)  # 11 events
    assert len(pages) == 1 and pages.bytes == 50
    kept = pages.get("s", 0)
    assert kept is not None and kept.last_seq == 10 and kept.frames == b"a" * 50
    assert pages.get("s", 10) is None and pages.get("s", 4) is None and pages.get("other", 0) is None


def test_least_recently_used_pages_go_first_to_stay_within_the_bytes() -> None:
    pages = FramedPages(max_bytes=100, size=1)
    for seq in (1, 2, 3):
        pages.put("s", seq, seq, bytes([seq]) * 40)
    assert pages.get("s", 0) is None  # 120 bytes > 100: seq 1 went
    assert pages.bytes == 80
    assert pages.get("s", 1) is not None  # seq 2 used: seq 3 is now the oldest
    pages.put("s", 4, 4, b"x" * 40)
    assert pages.get("s", 2) is None and pages.get("s", 1) is not None and pages.get("s", 3) is not None
    pages.put("s", 9, 9, b"y" * 101)  # larger than the bound: not kept, nothing dropped for it
    assert pages.get("s", 8) is None and pages.bytes == 80
    pages.put("s", 2, 2, b"z" * 10)  # kept again: its old bytes no longer count
    assert pages.bytes == 50


def test_a_kept_page_says_whether_it_may_hold_a_removal() -> None:
    pages = FramedPages(max_bytes=1000, size=2)
    pages.put("s", 1, 2, b"{}" + REMOVAL_MARKER)
    pages.put("s", 3, 4, b"{}{}")
    first, second = pages.get("s", 0), pages.get("s", 2)
    assert first is not None and first.has_removal
    assert second is not None and not second.has_removal
