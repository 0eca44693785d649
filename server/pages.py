"""Framed catch-up pages kept for the next socket that replays the same part of a stream.

A socket catching up reads its stream's log a page at a time and frames every event
(:func:`server.frames.text_frames`): about 1 µs of server CPU per event, as much as a client
spends receiving it. Sockets that replay the same history (a team opening a long draft, clients
reconnecting with an old ``since``) repeat that work event for event. :class:`FramedPages` keeps
the framed bytes of *full, aligned* pages, bounded in bytes, so that the next such socket writes
them as they are (issue 16).

Why a kept page is exact: a page here is the frames of seqs ``first … first + size - 1`` with
``first - 1`` a multiple of ``size``, all of them read from the log and checked contiguous by the
seam (:meth:`server.seam.CatchUpSeam.on_page`). A stream's log is append-only and its seqs are
contiguous and never rewritten, so those events, and their frames, never change: serving the
page again gives the same bytes as reading it again.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

from projections.access import REMOVAL_MARKER


class KeptPage(NamedTuple):
    """A kept page: its last seq, its frames joined, and whether any of them may be a removal."""

    last_seq: int
    frames: bytes
    has_removal: bool
    """``REMOVAL_MARKER`` occurs in the frames (searched once, when the page is kept): a subscriber
    that folds removals reads such a page from the log instead (:mod:`server.subscriber`)."""


class FramedPages:
    """A byte-bounded LRU of full catch-up pages: ``(stream_id, first_seq)`` → :class:`KeptPage`.

    ``max_bytes``: the frames' bytes kept at most, over all streams (a page larger than it is not
    kept); ``size``: events per page (the catch-up's page size). Only pages that start right after
    a multiple of ``size`` and hold ``size`` events are kept (:meth:`put` ignores the others), so
    catch-ups from any ``since`` share them once aligned.
    """

    __slots__ = ("_pages", "bytes", "max_bytes", "size")

    def __init__(self, max_bytes: int, size: int) -> None:
        if size < 1:
            raise ValueError("size must be >= 1")
        self.max_bytes = max_bytes
        self.size = size
        self.bytes = 0
        """Bytes of frames kept now."""
        self._pages: OrderedDict[tuple[str, int], KeptPage] = OrderedDict()

    def __len__(self) -> int:
        return len(self._pages)

    def get(self, stream_id: str, after_seq: int) -> KeptPage | None:
        """The kept page of ``stream_id`` that starts at ``after_seq + 1``, or None."""
        if after_seq % self.size:
            return None
        key = (stream_id, after_seq + 1)
        page = self._pages.get(key)
        if page is not None:
            self._pages.move_to_end(key)
        return page

    def put(self, stream_id: str, first_seq: int, last_seq: int, frames: bytes) -> None:
        """Keep the frames of ``first_seq … last_seq`` if they are a full, aligned page (else nothing);
        the least recently used pages go to stay within ``max_bytes``."""
        if (
            (first_seq - 1) % self.size
            or last_seq - first_seq + 1 != self.size
            or len(frames) > self.max_bytes
        ):
            return
        key = (stream_id, first_seq)
        old = self._pages.pop(key, None)
        if old is not None:
            self.bytes -= len(old.frames)
        self._pages[key] = KeptPage(last_seq, frames, REMOVAL_MARKER in frames)
        self.bytes += len(frames)
        while self.bytes > self.max_bytes:
            _, dropped = self._pages.popitem(last=False)
            self.bytes -= len(dropped.frames)
