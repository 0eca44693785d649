"""WebSocket frame encoding for the fan-out: each event is framed once, the bytes sent to every socket.

Server-to-client frames are never masked (RFC 6455 §5.1) and compression is never negotiated
(``compress=False`` on every socket), so one event's frame is the same bytes on every socket: the
hub encodes it once per commit (:class:`Batch`) and every subscriber writes those bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from projections.access import REMOVAL_MARKER

OPCODE_TEXT_FINAL = 0x81
"""FIN bit set, opcode 0x1 (text): RFC 6455 §5.2."""

_HEADER_7 = struct.Struct("!BB").pack
_HEADER_16 = struct.Struct("!BBH").pack
_HEADER_64 = struct.Struct("!BBQ").pack


def text_frame(payload: bytes) -> bytes:
    """An unmasked, final WebSocket text frame carrying ``payload`` (RFC 6455 §5.2).

    The payload length is encoded in 7 bits (< 126 bytes), 16 bits (< 64 KiB, marker 126) or
    64 bits (marker 127), network byte order; ``payload`` must already be UTF-8 (event bodies are
    orjson output, which always is).
    """
    n = len(payload)
    if n < 126:
        return _HEADER_7(OPCODE_TEXT_FINAL, n) + payload
    if n < 65536:
        return _HEADER_16(OPCODE_TEXT_FINAL, 126, n) + payload
    return _HEADER_64(OPCODE_TEXT_FINAL, 127, n) + payload


def text_frames(bodies: Sequence[tuple[int, bytes]]) -> bytes:
    """The bodies of ``(seq, body)`` pairs (a catch-up page) as consecutive text frames, one buffer.

    Same bytes as joining :func:`text_frame` of each body, with one copy of each body instead of
    two (the common 126–65,535-byte case appends header and body separately).
    """
    parts: list[bytes] = []
    append = parts.append
    for _, body in bodies:
        n = len(body)
        if 126 <= n < 65536:
            append(_HEADER_16(OPCODE_TEXT_FINAL, 126, n))
            append(body)
        else:
            append(text_frame(body))
    return b"".join(parts)


@dataclass(frozen=True, slots=True)
class Batch:
    """Consecutive committed events of one stream, framed once for every socket.

    ``frames[i]`` is the text frame of the event with seq ``first_seq + i`` (``last_seq`` is
    ``first_seq + len(frames) - 1``); ``data`` is all of
    them joined (what a socket that is up to date writes); ``stamp`` is ``time.monotonic()`` at
    commit notification (for the fan-out lag metric). Seqs are contiguous by construction
    (:func:`batches_of`), which is what lets a subscriber check a whole batch against its position
    with two comparisons. ``removals`` holds the ``(seq, body)`` of the events that may take a
    user's view access away (``collab.collaborator_removed``), found once per commit, so that
    each socket folds only those (:class:`projections.access.ViewAccess`).
    """

    first_seq: int
    last_seq: int
    frames: tuple[bytes, ...]
    data: bytes
    stamp: float
    removals: tuple[tuple[int, bytes], ...] = ()

    @property
    def size(self) -> int:
        """Bytes of all frames (``len(data)``)."""
        return len(self.data)

    def after(self, seq: int) -> bytes:
        """The frames of the events with a seq above ``seq`` (all of them if ``seq < first_seq``)."""
        start = seq + 1 - self.first_seq
        if start <= 0:
            return self.data
        return b"".join(self.frames[start:])

    def between(self, after_seq: int, through_seq: int) -> bytes:
        """The frames of the events with ``after_seq < seq <= through_seq``."""
        start = max(0, after_seq + 1 - self.first_seq)
        stop = max(0, through_seq + 1 - self.first_seq)
        return b"".join(self.frames[start:stop])


class Committed(Protocol):
    """What framing needs of a committed event (:class:`eventstore.events.Record` has it)."""

    @property
    def seq(self) -> int: ...

    @property
    def body(self) -> bytes: ...


def batches_of(records: Sequence[Committed], stamp: float) -> list[Batch]:
    """Frame committed events of one stream (ascending seq) into batches of consecutive seqs.

    One batch in practice (a commit's events of one stream are consecutive); a hole in the seqs
    (only possible if a notification was lost) starts a new batch, so the subscriber sees the gap.
    """
    batches: list[Batch] = []
    frames: list[bytes] = []
    removals: list[tuple[int, bytes]] = []
    first = prev = 0
    for record in records:
        seq = record.seq
        if frames and seq != prev + 1:
            batches.append(_batch(first, frames, stamp, removals))
            frames, removals = [], []
        if not frames:
            first = seq
        body = record.body
        frames.append(text_frame(body))
        if REMOVAL_MARKER in body:
            removals.append((seq, body))
        prev = seq
    if frames:
        batches.append(_batch(first, frames, stamp, removals))
    return batches


def _batch(first: int, frames: list[bytes], stamp: float, removals: list[tuple[int, bytes]]) -> Batch:
    data = frames[0] if len(frames) == 1 else b"".join(frames)
    return Batch(first, first + len(frames) - 1, tuple(frames), data, stamp, tuple(removals))
