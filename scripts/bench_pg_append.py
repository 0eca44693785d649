"""PostgreSQL's own CPU per appended event: schema version 3 against version 4, side by side.

    python scripts/bench_pg_append.py [--calls 200] [--admin postgresql://postgres@127.0.0.1:5432/postgres]

For each group size (1, 14 and 64 one-event appends on distinct drafts, each with an idempotency
key, ~130-byte segments), one throw-away database per schema: version 3 (the script kept in
``tests/eventstore/pg_schema_v3.sql``, calling ``ringlog_append_after``, per-row trigger) and this
version (``eventstore.pg_schema``, calling ``ringlog_append_group``, per-statement checks). One
connection calls the function in a loop, as a node's writer does, each call its own committed
transaction; the figure is the backend process's CPU (``/proc/PID/stat``, 10 ms ticks, so use
enough calls) per event and per call, and the wall time per call, with version 4 ÷ version 3
from the same run. It needs the backend's PID to be readable, i.e. PostgreSQL on this machine.
Not a test: it prints, and docs/BENCHMARKS.md ("Fifth round") quotes it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from eventstore.pg_schema import SCHEMA  # noqa: E402
from projections.event_types import EventType  # noqa: E402

V3_SCHEMA = (ROOT / "tests" / "eventstore" / "pg_schema_v3.sql").read_text()
BODY = b'{"type":"' + EventType.SEGMENT_ADDED.value.encode() + b'","data":{"content":"' + b"x" * 130 + b'"}}'
CALL = "SELECT * FROM {}($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"


def _backend_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _run(admin: str, schema: str, function: str, group: int, calls: int) -> tuple[float, float, float]:
    """(backend CPU µs per event, per call, wall µs per call) on a fresh database."""
    name = "ringlog_bench_append_" + uuid.uuid4().hex[:8]
    conn = await asyncpg.connect(admin)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    try:
        db = await asyncpg.connect(admin.rsplit("/", 1)[0] + "/" + name)
        try:
            await db.execute(schema)
            pid = await db.fetchval("SELECT pg_backend_pid()")
            drafts = [f"d{i}" for i in range(64)]
            heads = dict.fromkeys(drafts, 0)
            position = 0
            cpu0, t0 = _backend_cpu(pid), time.perf_counter()
            for n in range(calls):
                batch = [drafts[(n * group + i) % 64] for i in range(group)]
                args = [
                    batch, [heads[d] for d in batch], [f"u-{d}" for d in batch],
                    [uuid.uuid4().hex for _ in batch], ["fp"] * group, [1] * group,
                    [EventType.SEGMENT_ADDED.value] * group, [BODY] * group, [None] * group,
                ]  # fmt: skip
                rows = await db.fetch(CALL.format(function), position, 0, *args)
                if [r[0] for r in rows] != ["ok"] * group:
                    raise SystemExit(f"{function}: unexpected outcomes {[r[0] for r in rows]}")
                for d in batch:
                    heads[d] += 1
                position += group
            cpu, wall = _backend_cpu(pid) - cpu0, time.perf_counter() - t0
        finally:
            await db.close()
    finally:
        conn = await asyncpg.connect(admin)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()
    return 1e6 * cpu / (calls * group), 1e6 * cpu / calls, 1e6 * wall / calls


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200, help="calls per group size (×3 for groups of 1)")
    parser.add_argument("--admin", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    print(
        "| events per call | v3 CPU µs per event | v4 CPU µs per event | v4 ÷ v3 | v3 / v4 wall µs per call |"
    )
    print("|---:|---:|---:|---:|---|")
    for group in (1, 14, 64):
        calls = args.calls * (3 if group == 1 else 1)
        v3 = await _run(args.admin, V3_SCHEMA, "ringlog_append_after", group, calls)
        v4 = await _run(args.admin, SCHEMA, "ringlog_append_group", group, calls)
        print(f"| {group} | {v3[0]:.0f} | {v4[0]:.0f} | {v4[0] / v3[0]:.2f}× | {v3[2]:,.0f} / {v4[2]:,.0f} |")


if __name__ == "__main__":
    asyncio.run(main())
