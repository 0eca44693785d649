"""Checks a whole log: contiguous seqs per stream, gap-free positions, every hash-chain link."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import orjson

from eventstore.events import GENESIS_HASH, chain_hash
from eventstore.store import Store

PAGE = 5000


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """What :func:`verify_log` found: ``problem`` is None when the log is sound."""

    events: int
    streams: int
    problem: str | None = None
    bad_position: int | None = None

    @property
    def ok(self) -> bool:
        """True when every check passed."""
        return self.problem is None


async def verify_log(store: Store, progress: Callable[[int, int], None] | None = None) -> VerifyReport:
    """Read the log in position order, up to the last position it held when the check began,
    and stop at the first broken invariant.

    Servers may go on appending meanwhile: what they append after the start is not part of the
    check (the report counts the positions 1..N that existed then). ``progress(done, total)`` is
    called after every page. Reads only; never raises for a bad log (the report names the first
    bad event), only :class:`StoreError` if the store fails.
    """
    total = await store.last_position()
    heads: dict[str, tuple[int, bytes]] = {}
    expected_position = 1
    count = 0
    after = 0
    while after < total:
        page = await store.read_all(after, min(PAGE, total - after))
        if not page:
            break
        for record in page:
            where = f"event at position {record.position} (stream {record.stream_id!r}, seq {record.seq})"
            if record.position != expected_position:
                return VerifyReport(
                    count,
                    len(heads),
                    f"position gap: expected position {expected_position}, found {where}",
                    record.position,
                )
            seq, prev_hash = heads.get(record.stream_id, (0, GENESIS_HASH))
            if record.seq != seq + 1:
                return VerifyReport(
                    count,
                    len(heads),
                    f"seq out of order: expected seq {seq + 1}, found {where}",
                    record.position,
                )
            try:
                envelope = orjson.loads(record.body)
            except orjson.JSONDecodeError:
                return VerifyReport(count, len(heads), f"undecodable body: {where}", record.position)
            if (
                not isinstance(envelope, dict)
                or envelope.get("draft_id") != record.stream_id
                or envelope.get("seq") != record.seq
                or envelope.get("type") != record.type
            ):
                return VerifyReport(
                    count, len(heads), f"body disagrees with its columns: {where}", record.position
                )
            digest = chain_hash(prev_hash, record.position, record.body)
            if digest != record.hash:
                return VerifyReport(count, len(heads), f"hash chain broken: {where}", record.position)
            heads[record.stream_id] = (record.seq, digest)
            expected_position += 1
            count += 1
        after = page[-1].position
        if progress is not None:
            progress(count, total)
    if count != total:
        return VerifyReport(count, len(heads), f"log claims {total} positions but {count} were read", None)
    return VerifyReport(count, len(heads))
