"""``ringlog copy``: move a whole log between stores (SQLite ↔ PostgreSQL) and prove the result.

The record copy itself is :mod:`eventstore.copy` (store → store, nothing else). This command adds
what the operator needs around it: refusing before anything is written (same store, missing
source file, unreachable store, non-empty or diverging target, a target a running server owns),
rebuilding the target's projections (a copied log without them would make a server start from
an empty checkpoint and refold everything), verifying the target, messages and exit codes.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from typing import TextIO

from eventstore.copy import copy_records, resume_position
from eventstore.errors import CopyRefused, StoreError, StoreLocked
from eventstore.factory import open_store, same_store, sqlite_path
from eventstore.ownership import acquire_tool_lock
from eventstore.store import BulkImporter, Store
from eventstore.verify import verify_log
from projections.runner import rebuild

EXIT_OK = 0
EXIT_BAD_TARGET = 1
EXIT_REFUSED = 2


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
    missing source file, target owned by a running server, non-empty target without ``force``,
    target not a prefix of the source). ``progress(done, total)`` is called after every batch;
    messages go to ``out`` (stderr).
    """
    out = out if out is not None else sys.stderr
    if same_store(source_url, target_url):
        out.write("ringlog copy: source and target are the same store\n")
        return EXIT_REFUSED
    source_path = sqlite_path(source_url)
    if source_path is not None and not await asyncio.to_thread(os.path.exists, source_path):
        out.write(f"ringlog copy: no SQLite database at {source_path!r}\n")
        return EXIT_REFUSED
    try:
        lock = await acquire_tool_lock(target_url)
    except StoreLocked as e:
        out.write(f"ringlog copy: target {e}\n")
        return EXIT_REFUSED
    except StoreError as e:
        out.write(f"ringlog copy: cannot open {target_url}: {e}\n")
        return EXIT_REFUSED
    try:
        return await _copy(source_url, target_url, force, progress, out)
    finally:
        await lock.release()


async def _copy(
    source_url: str,
    target_url: str,
    force: bool,
    progress: Callable[[int, int], None] | None,
    out: TextIO,
) -> int:
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
            start = await resume_position(source, target, force=force)
        except CopyRefused as e:
            out.write(f"ringlog copy: target {target_url} {e}\n")
            return EXIT_REFUSED
        if not isinstance(target, BulkImporter):
            out.write(f"ringlog copy: {target_url} cannot take a bulk copy\n")
            return EXIT_REFUSED
        try:
            copied = await copy_records(source, target, after=start, progress=progress)
        except StoreError as e:
            out.write(f"ringlog copy: copying failed (the target keeps what was committed): {e}\n")
            return EXIT_BAD_TARGET
        await rebuild(target)
        report = await verify_log(target)
        if not report.ok:
            out.write(f"ringlog copy: the target does not verify: {report.problem}\n")
            return EXIT_BAD_TARGET
        out.write(
            f"ringlog copy: copied {copied} events (resumed after {start}), "
            f"target has {report.events} events in {report.streams} drafts; projections rebuilt; verify ok\n"
        )
        return EXIT_OK
    except StoreError as e:
        out.write(f"ringlog copy: {e}\n")
        return EXIT_BAD_TARGET
    finally:
        for store in reversed(opened):
            await store.close()
