"""``ringlog copy``: move a whole log between stores (SQLite ↔ PostgreSQL) unchanged.

Records are copied in position order, in batches, with their positions, seqs, bodies, hashes
and idempotency claims as they are (through the target's :class:`BulkImporter`, whose schema
re-checks positions and seqs). Then the target's projections are rebuilt from the copied log
and the target is verified.

A non-empty target is refused. With ``force``, a target that holds a *prefix* of the source
(an interrupted copy) is resumed after that prefix; a target holding anything else is still
refused, because the log is append-only and cannot be overwritten.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from typing import TextIO

from eventstore.errors import StoreError
from eventstore.store import BulkImporter, Store, open_store
from eventstore.verify import verify_log

BATCH = 2000
"""Records read from the source and written to the target per transaction."""

EXIT_OK = 0
EXIT_BAD_TARGET = 1
EXIT_REFUSED = 2


class _Refused(Exception):
    """The copy cannot start; the message says why."""


async def copy_log(
    source_url: str,
    target_url: str,
    *,
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
    out: TextIO | None = None,
) -> int:
    """Copy every record of ``source_url`` into ``target_url``; returns a process exit code.

    0: copied, projections rebuilt and the target verified. 1: the copy or the verification of
    the target failed. 2: refused before writing anything (unreachable store, same store,
    non-empty target without ``force``, target not a prefix of the source).
    ``progress(done, total)`` is called after every batch; messages go to ``out`` (stderr).
    """
    out = out if out is not None else sys.stderr
    if _same_store(source_url, target_url):
        out.write("ringlog copy: source and target are the same store\n")
        return EXIT_REFUSED
    source_path = _sqlite_path(source_url)
    if source_path is not None and not await asyncio.to_thread(os.path.exists, source_path):
        out.write(f"ringlog copy: no SQLite database at {source_path}\n")
        return EXIT_REFUSED
    source = open_store(source_url)
    target = open_store(target_url)
    opened: list[Store] = []
    try:
        for store, url in ((source, source_url), (target, target_url)):
            try:
                await store.open()
            except StoreError as e:
                out.write(f"ringlog copy: cannot open {url}: {e}\n")
                return EXIT_REFUSED
            opened.append(store)
        try:
            start = await _starting_position(source, target, force, target_url)
        except _Refused as e:
            out.write(f"ringlog copy: {e}\n")
            return EXIT_REFUSED
        if not isinstance(target, BulkImporter):
            out.write(f"ringlog copy: {target_url} cannot take a bulk copy\n")
            return EXIT_REFUSED
        try:
            copied = await _copy_records(source, target, start, progress)
        except StoreError as e:
            out.write(f"ringlog copy: copying failed (the target keeps what was committed): {e}\n")
            return EXIT_BAD_TARGET
        # The one place eventstore reaches up to projections: a copied log without its
        # projections would make a server start from an empty checkpoint and refold everything.
        from projections.runner import rebuild

        await rebuild(target)
        report = await verify_log(target)
        if not report.ok:
            out.write(f"ringlog copy: the target does not verify: {report.problem}\n")
            return EXIT_BAD_TARGET
        out.write(
            f"ringlog copy: copied {copied} events (resumed after {start}), "
            f"target has {report.events} events in {report.drafts} drafts; projections rebuilt; verify ok\n"
        )
        return EXIT_OK
    except StoreError as e:
        out.write(f"ringlog copy: {e}\n")
        return EXIT_BAD_TARGET
    finally:
        for store in reversed(opened):
            await store.close()


def _sqlite_path(url: str) -> str | None:
    """The file an SQLite URL names (as :func:`open_store` reads it), None for other stores."""
    if url == "memory:" or url.startswith(("postgresql://", "postgres://")):
        return None
    return url.removeprefix("sqlite:///").removeprefix("sqlite://")


def _same_store(a: str, b: str) -> bool:
    path_a, path_b = _sqlite_path(a), _sqlite_path(b)
    if path_a is not None and path_b is not None:
        return os.path.abspath(path_a) == os.path.abspath(path_b)
    return a.rstrip("/") == b.rstrip("/")


async def _starting_position(source: Store, target: Store, force: bool, target_url: str) -> int:
    """Where the copy starts: 0 for an empty target, or after the prefix a forced resume found."""
    existing = await target.last_position()
    if existing == 0:
        return 0
    if not force:
        raise _Refused(
            f"target {target_url} is not empty ({existing} events); refusing to copy into it "
            "(--force resumes an interrupted copy whose events are a prefix of the source)"
        )
    after = 0
    while after < existing:
        mine = await target.read_all(after, BATCH)
        theirs = await source.read_all(after, len(mine))
        for t, s in zip(mine, theirs, strict=False):
            if (t.position, t.draft_id, t.seq, t.body, t.hash) != (
                s.position,
                s.draft_id,
                s.seq,
                s.body,
                s.hash,
            ):
                raise _Refused(
                    f"target {target_url} differs from the source at position {t.position}; "
                    "it is not an interrupted copy of this source"
                )
        if len(theirs) < len(mine):
            raise _Refused(f"target {target_url} has more events than the source")
        after = mine[-1].position
    return existing


async def _copy_records(
    source: Store, target: BulkImporter, after: int, progress: Callable[[int, int], None] | None
) -> int:
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
