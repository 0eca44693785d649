"""The catch-up→live seam, pure: arbitrary interleavings of commits, log pages and live batches.

A model log grows by commits; each commit's batch is either offered live at once, delivered late
(after later ones), or lost (a notification that never arrives). A model catch-up reads pages
of the log after the seam's position whenever the seam asks for it. Whatever the interleaving,
the bytes handed out are the frames of seqs ``since + 1 … N`` once each, in order — or the seam
has asked for a re-read, which the driver does.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.frames import Batch, batches_of, text_frame, text_frames
from server.seam import RESYNC, CatchUpSeam, LogGap


class Rec:
    def __init__(self, seq: int, body: bytes) -> None:
        self.seq = seq
        self.body = body


def body(seq: int) -> bytes:
    return b'{"seq":%d,"pad":"%s"}' % (seq, b"x" * (seq * 37 % 300))


def batch(first: int, last: int) -> Batch:
    [b] = batches_of([Rec(s, body(s)) for s in range(first, last + 1)], 0.0)
    return b


def seqs_of(data: bytes) -> list[int]:
    """Parse server text frames (RFC 6455 §5.2) back into the seqs their bodies carry."""
    out: list[int] = []
    i = 0
    while i < len(data):
        assert data[i] == 0x81
        n = data[i + 1]
        i += 2
        if n == 126:
            (n,) = struct.unpack_from("!H", data, i)
            i += 2
        elif n == 127:
            (n,) = struct.unpack_from("!Q", data, i)
            i += 8
        payload = data[i : i + n]
        i += n
        out.append(int(payload.split(b",", 1)[0].split(b":")[1]))
    return out


class Driver:
    """A catch-up task and a notifier around one seam, stepped by the test.

    The catch-up task is modelled in its three phases, each a step, because commits happen
    between them in the server: the log read (a snapshot of the log), the page handed to the
    seam and written, and the switch to live.
    """

    def __init__(self, since: int, buffer_bytes: int, page_size: int) -> None:
        self.seam = CatchUpSeam(since, buffer_bytes)
        self.page_size = page_size
        self.head = 0  # the model log holds seqs 1..head
        self.out = bytearray()
        self.catching_up = True  # the catch-up task is running
        self.phase = "read"  # of the catch-up task: "read", "hand over", "go live"
        self.page: list[tuple[int, bytes]] | None = None  # read, not yet handed to the seam
        self.late: list[Batch] = []
        self.lost_unseen = (
            False  # a lost notification that no later read covers: only the next commit reveals it
        )

    def commit(self, n: int, fate: str) -> None:
        b = batch(self.head + 1, self.head + n)
        self.head += n
        if fate == "live":
            self.offer(b)
        elif fate == "late":
            self.late.append(b)
        else:
            self.lost_unseen = True

    def offer(self, b: Batch) -> None:
        out = self.seam.on_live(b)
        if out is RESYNC:
            assert not self.catching_up
            self.catching_up = True
        else:
            self.out += out

    def deliver_late(self) -> None:
        if self.late:
            self.offer(self.late.pop(0))

    def catch_up_step(self) -> None:
        """One phase of the catch-up task, if it runs: read, hand over and write, or go live."""
        if not self.catching_up:
            return
        if self.phase == "read":
            after = self.seam.position
            last = min(self.head, after + self.page_size)
            self.page = [(s, body(s)) for s in range(after + 1, last + 1)]
            if last == self.head:
                self.lost_unseen = False  # the log read covers every commit so far
            self.phase = "hand over"
        elif self.phase == "hand over":
            assert self.page is not None
            page, self.page = self.page, None
            self.out += text_frames(self.seam.on_page(page))
            self.phase = "read" if len(page) == self.page_size else "go live"
        else:
            out = self.seam.go_live()
            self.phase = "read"
            if out is not RESYNC:
                self.out += out
                self.catching_up = False

    def settle(self) -> None:
        """Deliver what is late, then let catch-up finish."""
        while self.late:
            self.deliver_late()
        for _ in range(10_000):
            if not self.catching_up:
                break
            self.catch_up_step()
        assert not self.catching_up


steps = st.lists(
    st.one_of(
        st.tuples(
            st.just("commit"), st.integers(1, 5), st.sampled_from(["live", "live", "live", "late", "lost"])
        ),
        st.tuples(st.just("page"), st.just(0), st.just("")),
        st.tuples(st.just("late"), st.just(0), st.just("")),
    ),
    max_size=60,
)


@settings(max_examples=400, deadline=None)
@given(
    prefix=st.integers(0, 30),
    since_back=st.integers(0, 30),
    buffer_bytes=st.sampled_from([0, 200, 1000, 10**6]),
    page_size=st.integers(1, 7),
    script=steps,
)
def test_every_seq_once_in_order_whatever_the_interleaving(
    prefix: int, since_back: int, buffer_bytes: int, page_size: int, script: list[tuple[str, int, str]]
) -> None:
    since = max(0, prefix - since_back)
    d = Driver(since, buffer_bytes, page_size)
    d.head = prefix  # committed before the socket subscribed
    for kind, n, fate in script:
        if kind == "commit":
            d.commit(n, fate)
        elif kind == "page":
            d.catch_up_step()
        else:
            d.deliver_late()
        # at every moment, what was handed out is a gapless prefix of since+1..
        got = seqs_of(bytes(d.out))
        assert got == list(range(since + 1, since + 1 + len(got)))
        assert d.seam.position == since + len(got)
    d.settle()
    if not d.lost_unseen:  # nothing is waiting for a later commit to be noticed
        assert seqs_of(bytes(d.out)) == list(range(since + 1, d.head + 1))
    # a lost notification is noticed with the next commit
    d.commit(1, "live")
    d.settle()
    assert seqs_of(bytes(d.out)) == list(range(since + 1, d.head + 1))
    assert d.seam.live and d.seam.buffered_bytes == 0


def test_a_live_batch_that_skips_ahead_asks_for_a_re_read() -> None:
    seam = CatchUpSeam(0, 10**6)
    assert seam.go_live() == b""
    assert seam.on_live(batch(1, 2)) == text_frame(body(1)) + text_frame(body(2))
    assert seam.on_live(batch(2, 2)) == b""  # already delivered
    assert seam.on_live(batch(5, 6)) is RESYNC  # 3 and 4 never came
    assert not seam.live and seam.position == 2
    assert seam.on_live(batch(7, 7)) == b""  # buffered while catching up
    fresh = seam.on_page([(3, body(3)), (4, body(4)), (5, body(5))])
    assert [s for s, _ in fresh] == [3, 4, 5]
    assert seqs_of(seam.go_live()) == [6, 7]
    assert seam.live and seam.position == 7


def test_buffer_overflow_while_catching_up_means_a_re_read_not_a_gap() -> None:
    seam = CatchUpSeam(0, max_buffered_bytes=batch(2, 2).size)
    seam.on_live(batch(1, 1))
    seam.on_live(batch(2, 2))  # drops batch 1 for space
    assert seam.buffered_bytes == batch(2, 2).size
    assert seam.go_live() is RESYNC  # 1 was dropped and is beyond the position (0)
    assert seam.buffered_bytes == 0 and not seam.live
    assert [s for s, _ in seam.on_page([(1, body(1)), (2, body(2))])] == [1, 2]
    assert seam.go_live() == b""
    assert seam.live


def test_dropped_batches_already_read_from_the_log_need_no_re_read() -> None:
    seam = CatchUpSeam(0, max_buffered_bytes=batch(3, 3).size)
    seam.on_live(batch(1, 2))  # larger than the buffer: dropped at once
    seam.on_live(batch(3, 3))
    seam.on_page([(1, body(1)), (2, body(2))])
    assert seqs_of(seam.go_live()) == [3]


def test_a_page_that_does_not_continue_the_position_is_a_log_gap() -> None:
    seam = CatchUpSeam(2, 10**6)
    with pytest.raises(LogGap):
        seam.on_page([(4, body(4))])
    with pytest.raises(LogGap):
        seam.on_page([(3, body(3)), (5, body(5))])
    assert [s for s, _ in seam.on_page([(1, body(1)), (2, body(2)), (3, body(3))])] == [3]
    assert seam.position == 3


def test_negative_since_is_refused() -> None:
    with pytest.raises(ValueError):
        CatchUpSeam(-1, 100)


@given(st.lists(st.integers(1, 70_000), min_size=1, max_size=4))
def test_frames_match_rfc6455_lengths(sizes: list[int]) -> None:
    pairs = [(i + 1, b"a" * n) for i, n in enumerate(sizes)]
    joined = text_frames(pairs)
    assert joined == b"".join(text_frame(b) for _, b in pairs)
    i = 0
    for _, payload in pairs:
        assert joined[i] == 0x81 and joined[i + 1] & 0x80 == 0  # FIN + text, unmasked
        n = joined[i + 1]
        header = 2 + (2 if n == 126 else 8 if n == 127 else 0)
        assert (n < 126) == (len(payload) < 126)
        assert joined[i + header : i + header + len(payload)] == payload
        i += header + len(payload)
    assert i == len(joined)


def test_batches_split_at_holes_in_the_seqs() -> None:
    bs = batches_of([Rec(s, body(s)) for s in (1, 2, 4, 5, 7)], 1.5)
    assert [(b.first_seq, b.last_seq) for b in bs] == [(1, 2), (4, 5), (7, 7)]
    assert all(b.data == b"".join(b.frames) and b.stamp == 1.5 for b in bs)
    assert bs[0].after(0) == bs[0].data and bs[0].after(1) == bs[0].frames[1] and bs[0].after(2) == b""


def test_a_late_batch_already_read_from_the_log_changes_nothing() -> None:
    seam = CatchUpSeam(0, 10**6)
    seam.on_page([(1, body(1)), (2, body(2)), (3, body(3))])
    assert seam.go_live() == b""
    assert seam.on_live(batch(1, 2)) == b""  # its notification arrives after the log read
    assert seam.position == 3
    assert seqs_of(seam.on_live(batch(3, 4))) == [4]  # overlapping: only what is new
    assert seqs_of(seam.on_live(batch(5, 5))) == [5]


def test_a_kept_run_moves_the_position_only_if_it_follows() -> None:
    seam = CatchUpSeam(10, 1 << 20)
    seam.on_run(11, 20)
    assert seam.position == 20
    for first, last in ((20, 30), (22, 30), (21, 20)):
        with pytest.raises(LogGap):
            seam.on_run(first, last)
        assert seam.position == 20
