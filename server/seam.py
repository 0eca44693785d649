"""The catch-up→live seam of one subscription, as a pure object: no I/O, no clock, no tasks.

A socket that asks for the events after ``since`` is registered with the hub (so live batches
reach it) *before* its catch-up reads the log. Until it is live, live batches are buffered here;
when the log has nothing more, :meth:`CatchUpSeam.go_live` merges the buffer with what the log
gave, skipping seqs already delivered, and either switches to live or finds a gap (the buffer
overflowed, or a notification was lost or is late) and asks for the log to be read again from
the position reached. The same check runs on every live batch: one that does not follow the
position switches back to catch-up. The design follows the subscription recovery of
centrifugal/centrifuge (``internal/recovery``: merge history with the publications buffered
meanwhile, drop what was already sent, detect a gap).

The guarantee (API.md "WebSocket" item 3, "no gap and no repeat"): the bytes handed out by
:meth:`on_page` (or for :meth:`on_run`), :meth:`go_live` and :meth:`on_live`, in call order, are the frames of seqs
``since + 1 … N`` exactly once each, in order. ``tests/server/test_seam.py`` checks it for
arbitrary interleavings of live batches and catch-up pages.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Sequence
from typing import Final, Literal

from server.frames import Batch


class Resync(enum.Enum):
    """A gap was found: read the log again from :attr:`CatchUpSeam.position`."""

    NEEDED = "resync"


RESYNC: Final = Resync.NEEDED


class LogGap(Exception):
    """A catch-up page does not continue the position (the log is not contiguous: a store bug)."""


class CatchUpSeam:
    """Where one subscription stands: catching up (buffering live batches) or live.

    ``position`` is the seq of the last event handed out for delivery (``since`` at first).
    ``max_buffered_bytes`` bounds the live batches kept while catching up; when they would exceed
    it the oldest are dropped, and :meth:`go_live` then reads the log again instead of guessing.
    """

    __slots__ = ("_buffer", "_buffered_bytes", "_dropped_through", "live", "max_buffered_bytes", "position")

    def __init__(self, since: int, max_buffered_bytes: int) -> None:
        if since < 0:
            raise ValueError("since must be >= 0")
        self.position = since
        self.live = False
        self.max_buffered_bytes = max_buffered_bytes
        # made by the first batch buffered, dropped when the seam goes live: a live socket holds
        # no deque (760 bytes each, issue 16)
        self._buffer: deque[Batch] | None = None
        self._buffered_bytes = 0
        self._dropped_through = 0  # highest seq of a buffered batch dropped for space

    @property
    def buffered_bytes(self) -> int:
        """Bytes of live batches buffered while catching up."""
        return self._buffered_bytes

    @property
    def buffered(self) -> tuple[Batch, ...]:
        """The live batches kept while catching up (what :meth:`go_live` will merge), oldest first."""
        return () if self._buffer is None else tuple(self._buffer)

    def on_live(self, batch: Batch) -> bytes | Literal[Resync.NEEDED]:
        """A batch just committed: the bytes to write now (``b""`` for none) or :data:`RESYNC`.

        While catching up the batch is buffered and ``b""`` returned. Live, a batch at or below
        the position gives ``b""``, one that continues it gives its new frames (the position
        moves to its last seq), and one that starts beyond ``position + 1`` switches back to
        catch-up (the batch is kept in the buffer) and gives :data:`RESYNC`.
        """
        if not self.live:
            self._keep(batch)
            return b""
        position = self.position
        if batch.last_seq <= position:
            return b""
        if batch.first_seq > position + 1:
            self.live = False
            self._keep(batch)
            return RESYNC
        self.position = batch.last_seq
        return batch.data if batch.first_seq == position + 1 else batch.after(position)

    def on_page(self, page: Sequence[tuple[int, bytes]]) -> Sequence[tuple[int, bytes]]:
        """A page read from the log after :attr:`position`: the ``(seq, body)`` pairs to send.

        Pairs at or below the position are dropped; the rest must continue it one by one, else
        :class:`LogGap`. The position moves to the last pair's seq.
        """
        if not page:
            return page
        start = 0
        position = self.position
        while start < len(page) and page[start][0] <= position:
            start += 1
        fresh = page[start:] if start else page
        if fresh:
            first = fresh[0][0]
            last = fresh[-1][0]
            if first != position + 1 or last - first + 1 != len(fresh):
                raise LogGap(f"log page {first}..{last} ({len(fresh)} events) does not follow seq {position}")
            self.position = last
        return fresh

    def on_run(self, first_seq: int, last_seq: int) -> None:
        """Events ``first_seq … last_seq``, whose frames the caller already has (a kept page,
        :class:`server.pages.FramedPages`), are handed out: the position moves to ``last_seq``.

        They must continue the position, else :class:`LogGap` (nothing moves).
        """
        if first_seq != self.position + 1 or last_seq < first_seq:
            raise LogGap(f"kept page {first_seq}..{last_seq} does not follow seq {self.position}")
        self.position = last_seq

    def go_live(self) -> bytes | Literal[Resync.NEEDED]:
        """The log has no more after :attr:`position`: merge the buffer and switch to live.

        Returns the frames of the buffered events after the position (``b""`` for none) and is
        then live; or :data:`RESYNC` (the buffer is cleared, the seam stays in catch-up) when
        buffered events were dropped for space beyond the position or the buffer does not
        continue it — the caller reads the log again from :attr:`position`.
        """
        position = self.position
        if self._dropped_through > position:
            self._clear()
            return RESYNC
        parts: list[bytes] = []
        for batch in self._buffer or ():
            if batch.last_seq <= position:
                continue
            if batch.first_seq > position + 1:
                self._clear()
                return RESYNC
            parts.append(batch.after(position))
            position = batch.last_seq
        self._clear()
        self.position = position
        self.live = True
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _keep(self, batch: Batch) -> None:
        buffer = self._buffer
        if buffer is None:
            buffer = self._buffer = deque()
        buffer.append(batch)
        self._buffered_bytes += batch.size
        while self._buffered_bytes > self.max_buffered_bytes:
            dropped = buffer.popleft()
            self._buffered_bytes -= dropped.size
            self._dropped_through = max(self._dropped_through, dropped.last_seq)

    def _clear(self) -> None:
        self._buffer = None
        self._buffered_bytes = 0
        self._dropped_through = 0
