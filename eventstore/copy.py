"""Copy a whole log from one store to another, record for record (store → store).

Records are copied in position order, in batches, with their positions, seqs, bodies, hashes
and idempotency claims as they are, through the target's :class:`BulkImporter` (which checks
that every batch continues the log). This module knows nothing of projections, messages or exit
codes: ``ringlog copy`` (:mod:`server.copy_command`) opens the stores, rebuilds the target's
projections, verifies it and reports.

A non-empty target is refused. With ``force``, a target that holds a *prefix* of the source
(an interrupted copy) is resumed after that prefix; a target holding anything else is still
refused, because the log is append-only and cannot be overwritten.
"""

from __future__ import annotations

from collections.abc import Callable

from eventstore.errors import TargetDiverges, TargetNotEmpty
from eventstore.store import BulkImporter, Store

BATCH = 2000
"""Records read from the source and written to the target per transaction."""

Progress = Callable[[int, int], None]
"""``progress(position_done, total_positions)``, called after every batch."""


async def resume_position(source: Store, target: Store, *, force: bool = False) -> int:
    """Where a copy into ``target`` starts: 0 for an empty target, else after the prefix it holds.

    Raises :class:`TargetNotEmpty` for a non-empty target without ``force``, and
    :class:`TargetDiverges` when the target's records are not a prefix of the source's
    (compared by position, stream, seq, body and hash).
    """
    existing = await target.last_position()
    if existing == 0:
        return 0
    if not force:
        raise TargetNotEmpty(existing)
    after = 0
    while after < existing:
        mine = await target.read_all(after, BATCH)
        theirs = await source.read_all(after, len(mine))
        for t, s in zip(mine, theirs, strict=False):
            if (t.position, t.stream_id, t.seq, t.body, t.hash) != (
                s.position,
                s.stream_id,
                s.seq,
                s.body,
                s.hash,
            ):
                raise TargetDiverges(t.position)
        if len(theirs) < len(mine):
            raise TargetDiverges(None)
        after = mine[-1].position
    return existing


async def copy_records(
    source: Store, target: BulkImporter, *, after: int = 0, progress: Progress | None = None
) -> int:
    """Copy every record of ``source`` with ``position > after`` into ``target``; returns how many.

    Each batch is one transaction on the target, so an interrupted copy leaves a prefix that
    :func:`resume_position` can resume. Raises the stores' :class:`StoreError` (a batch that does
    not continue the target's log: :class:`LogCorrupted`).
    """
    total = await source.last_position()
    copied = 0
    while True:
        page = await source.read_all(after, BATCH)
        if not page:
            return copied
        await target.import_records(page)
        copied += len(page)
        after = page[-1].position
        if progress is not None:
            progress(after, max(total, after))
