"""Crash loop: SIGKILL ``ringlog serve`` at random moments under load and prove nothing was lost.

    python scripts/chaos_kill.py [--cycles 20] [--db PATH|postgresql://…] [--nodes 1|2]
                                 [--workers N] [--seed S]

Every cycle: (re)start the server(s); retry every append whose outcome the crash left in doubt
(same Idempotency-Key and body); check the log; then run concurrent writers (HTTP appends with an
Idempotency-Key, every 201 recorded) and WebSocket readers, and SIGKILL a node at a random moment.
With two nodes (two ``ringlog serve`` processes on one PostgreSQL database or one SQLite file)
one random node is killed while the other keeps serving. With ``--workers N`` (N >= 2) each node
is a supervisor of N workers and the victim is one random *worker* (found by the pid in
``/healthz``): the other workers keep serving, and the cycle waits until the supervisor has
replaced the dead worker.

Checked after every restart, for every draft:
* every acknowledged append is in the log at the seq it was acknowledged with, unchanged
  (the event in ``/events`` and the segment in ``GET`` state equal the 201 response);
* seqs are 1..head without a gap; the state's seq is the head; no append is in the log twice and
  none is there that was never sent;
* ``ringlog verify`` passes (seqs, positions, hash chain);
* a reader resuming with its last seq gets exactly the events after it (equal to ``/events``),
  then keeps streaming live without a gap or repeat.

Prints one line per cycle and a final JSON summary; exits 1 on the first cycle that breaks one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from projections.event_types import EventType  # noqa: E402
from tests.serverproc import ServerProcess  # noqa: E402

OWNER = "chaos-writer"
READER = "chaos-reader"
TIMEOUT = aiohttp.ClientTimeout(total=15)
SERVER_ARGS = ("--dev-auth", "--rate-limit", "0", "--max-sockets-per-user", "0", "--drain-timeout", "2")


class Violation(AssertionError):
    """A promise was broken."""


@dataclass
class Ack:
    draft_id: str
    seq: int
    segment: dict[str, Any]


@dataclass
class Reader:
    draft_id: str
    node: int
    last_seq: int
    received: int = 0


@dataclass
class Chaos:
    db: str
    nodes: int
    rng: random.Random
    workdir: Path
    writers_per_draft: int = 2
    drafts: list[str] = field(default_factory=list)
    acked: dict[str, Ack] = field(default_factory=dict)  # Idempotency-Key -> ack
    in_doubt: dict[str, tuple[str, str]] = field(default_factory=dict)  # key -> (draft, content)
    attempted: set[str] = field(default_factory=set)
    readers: list[Reader] = field(default_factory=list)
    servers: list[ServerProcess] = field(default_factory=list)
    counter: int = 0
    workers: int = 1
    killed_pid: int = 0
    committed_before_crash: int = 0
    lost_in_crash: int = 0

    def url(self, node: int) -> str:
        return self.servers[node].url

    async def request(
        self,
        http: aiohttp.ClientSession,
        method: str,
        path: str,
        user: str = OWNER,
        json: Any = None,
        key: str | None = None,
        node: int = 0,
    ) -> tuple[int, Any, Any]:
        headers = {"X-User-Id": user}
        if key is not None:
            headers["Idempotency-Key"] = key
        async with http.request(method, self.url(node) + path, json=json, headers=headers) as r:
            body = await r.json(content_type=None)
            return r.status, body, r.headers

    # -- the phases of a cycle --------------------------------------------------------------

    async def setup(self, http: aiohttp.ClientSession, drafts: int) -> None:
        for i in range(drafts):
            status, body, _ = await self.request(
                http, "POST", "/v1/collab/drafts", json={"title": f"chaos {i}"}, key=f"create-{i}"
            )
            if status != 201:
                raise Violation(f"create: {status} {body}")
            draft_id = body["data"]["id"]
            status, body, _ = await self.request(
                http,
                "POST",
                f"/v1/collab/drafts/{draft_id}/collaborators",
                json={"user_id": READER, "role": "viewer"},
                key=f"reader-{i}",
            )
            if status != 201:
                raise Violation(f"add reader: {status} {body}")
            self.drafts.append(draft_id)
            self.readers.append(Reader(draft_id, i % self.nodes, 0))

    async def resolve_in_doubt(self, http: aiohttp.ClientSession) -> None:
        """Retry every append the crash left unanswered: same key, same body, one answer each."""
        for key, (draft_id, content) in sorted(self.in_doubt.items()):
            status, body, headers = await self.request(
                http, "POST", f"/v1/collab/drafts/{draft_id}/segments", json={"content": content}, key=key
            )
            if status != 201:
                raise Violation(f"retry of in-doubt {key}: {status} {body}")
            if headers.get("Idempotent-Replayed") == "true":
                self.committed_before_crash += 1
            else:
                self.lost_in_crash += 1
            self._record_ack(key, draft_id, body)
        self.in_doubt.clear()

    def _record_ack(self, key: str, draft_id: str, body: Any) -> None:
        seq, segment = body["data"]["seq"], body["data"]["segment"]
        previous = self.acked.get(key)
        if previous is not None and (previous.seq, previous.segment) != (seq, segment):
            raise Violation(f"{key} acknowledged twice differently: {previous} then {seq} {segment}")
        self.acked[key] = Ack(draft_id, seq, segment)

    async def events(self, http: aiohttp.ClientSession, draft_id: str, node: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        since = 0
        for _ in range(100_000):
            status, body, _ = await self.request(
                http, "GET", f"/v1/collab/drafts/{draft_id}/events?since={since}&limit=1000", node=node
            )
            if status != 200:
                raise Violation(f"/events: {status} {body}")
            out.extend(body["data"])
            if not body["data"] or out[-1]["seq"] >= body["head_seq"]:
                return out
            since = out[-1]["seq"]
        raise Violation("/events paging did not end")

    async def check_log(self, http: aiohttp.ClientSession, node: int) -> dict[str, list[dict[str, Any]]]:
        logs: dict[str, list[dict[str, Any]]] = {}
        for draft_id in self.drafts:
            log = await self.events(http, draft_id, node)
            seqs = [e["seq"] for e in log]
            if seqs != list(range(1, len(log) + 1)):
                raise Violation(f"{draft_id}: seqs not contiguous from 1: {_gaps(seqs)}")
            status, body, _ = await self.request(http, "GET", f"/v1/collab/drafts/{draft_id}", node=node)
            if status != 200:
                raise Violation(f"GET {draft_id}: {status} {body}")
            state = body["data"]
            if state["seq"] != len(log):
                raise Violation(f"{draft_id}: state seq {state['seq']} but log head {len(log)}")
            segments = {s["id"]: s for s in state["segments"]}
            seen_keys: set[str] = set()
            for event in log:
                if event["type"] != EventType.SEGMENT_ADDED:
                    continue
                content = event["data"]["segment"]["content"]
                key = content.split(" ", 1)[0]
                if key in seen_keys:
                    raise Violation(f"{draft_id}: append {key} is in the log twice")
                if key not in self.attempted:
                    raise Violation(f"{draft_id}: the log holds {key}, which was never sent")
                seen_keys.add(key)
            for key, ack in self.acked.items():
                if ack.draft_id != draft_id:
                    continue
                if ack.seq > len(log):
                    raise Violation(f"acknowledged {key} (seq {ack.seq}) lost: head is {len(log)}")
                event = log[ack.seq - 1]
                if event["type"] != EventType.SEGMENT_ADDED or event["data"]["segment"] != ack.segment:
                    raise Violation(f"acknowledged {key} changed: {ack.segment} vs {event}")
                if segments.get(ack.segment["id"]) != ack.segment:
                    raise Violation(
                        f"acknowledged {key} differs in GET state: {segments.get(ack.segment['id'])}"
                    )
            logs[draft_id] = log
        return logs

    def verify(self) -> None:
        run = subprocess.run(
            [sys.executable, "-m", "server.cli", "verify", "--db", self.db],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
        if run.returncode != 0:
            raise Violation(f"ringlog verify failed ({run.returncode}): {run.stdout} {run.stderr}")

    async def load(self, http: aiohttp.ClientSession, kill_after: float, victim: int) -> dict[str, int]:
        """Writers and readers until ``victim`` is SIGKILLed (and a moment after, for a survivor)."""
        stop = asyncio.Event()
        appended = [0]

        async def writer(draft_id: str, index: int, node: int) -> None:
            for _ in range(1_000_000):
                if stop.is_set():
                    return
                self.counter += 1
                key = f"k{self.counter}-w{index}"
                content = f"{key} {'x' * self.rng.randrange(1, 200)}"
                self.attempted.add(key)
                try:
                    status, body, _ = await self.request(
                        http, "POST", f"/v1/collab/drafts/{draft_id}/segments",
                        json={"content": content}, key=key, node=node,
                    )  # fmt: skip
                except (TimeoutError, aiohttp.ClientError, ValueError):
                    self.in_doubt[key] = (draft_id, content)
                    return  # this node is gone: its writers stop, the survivor's go on
                if status == 201:
                    self._record_ack(key, draft_id, body)
                    appended[0] += 1
                elif status == 503:
                    self.in_doubt[key] = (draft_id, content)
                    return
                else:
                    raise Violation(f"append {key}: unexpected {status} {body}")

        tasks = [asyncio.ensure_future(self.stream(http, r, stop)) for r in self.readers]
        for i, draft_id in enumerate(self.drafts):
            for j in range(self.writers_per_draft):
                node = (i + j) % self.nodes
                tasks.append(asyncio.ensure_future(writer(draft_id, i * 10 + j, node)))
        await asyncio.sleep(kill_after)
        if self.workers > 1:
            pids = await self.worker_pids(victim)
            self.killed_pid = self.rng.choice(sorted(pids))
            os.kill(self.killed_pid, signal.SIGKILL)
        else:
            self.servers[victim].kill()
        if self.nodes > 1 or self.workers > 1:
            await asyncio.sleep(0.5)  # the survivor keeps taking writes and streaming
        stop.set()
        done, pending = await asyncio.wait(tasks, timeout=30)
        for task in pending:
            task.cancel()
        for task in done:
            task.result()  # a Violation raised in a writer or reader surfaces here
        if pending:
            raise Violation(f"{len(pending)} writers/readers did not stop within 30 s")
        return {"appended": appended[0]}

    async def stream(self, http: aiohttp.ClientSession, reader: Reader, stop: asyncio.Event) -> None:
        """Live stream from ``reader.last_seq`` until the node dies or ``stop``; no gap, no repeat."""
        url = f"{self.servers[reader.node].ws_url}/v1/ws/drafts/{reader.draft_id}"
        try:
            async with http.ws_connect(url, params={"since": str(reader.last_seq), "user_id": READER}) as ws:
                for _ in range(10_000_000):
                    receive = asyncio.ensure_future(ws.receive())
                    stopped = asyncio.ensure_future(stop.wait())
                    await asyncio.wait((receive, stopped), return_when=asyncio.FIRST_COMPLETED)
                    if not receive.done():
                        receive.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await receive
                        return
                    stopped.cancel()
                    msg = receive.result()
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        return
                    self._take(reader, orjson.loads(msg.data))
        except (TimeoutError, aiohttp.ClientError):
            return

    def _take(self, reader: Reader, message: dict[str, Any]) -> None:
        if message.get("type") in ("connected", "pong", "presence_sync", "presence"):
            return
        if "seq" not in message:
            raise Violation(f"reader of {reader.draft_id}: unexpected message {message}")
        if message["seq"] != reader.last_seq + 1:
            raise Violation(f"reader of {reader.draft_id}: seq {message['seq']} after {reader.last_seq}")
        reader.last_seq = message["seq"]
        reader.received += 1

    async def check_resume(self, http: aiohttp.ClientSession, logs: dict[str, list[dict[str, Any]]]) -> int:
        """Each reader resumes with its last seq and must get exactly the rest of the log."""
        delivered = 0
        for reader in self.readers:
            log = logs[reader.draft_id]
            url = f"{self.servers[reader.node].ws_url}/v1/ws/drafts/{reader.draft_id}"
            params = {"since": str(reader.last_seq), "user_id": READER}
            async with http.ws_connect(url, params=params) as ws:
                connected = orjson.loads((await asyncio.wait_for(ws.receive(), 10)).data)
                if connected.get("type") != "connected" or connected["head_seq"] < len(log):
                    raise Violation(f"resume {reader.draft_id}: {connected}")
                sync = orjson.loads((await asyncio.wait_for(ws.receive(), 10)).data)
                if sync.get("type") != "presence_sync":  # API.md v2: right after connected
                    raise Violation(f"resume {reader.draft_id}: no presence_sync: {sync}")
                for expected in log[reader.last_seq :]:
                    msg = await asyncio.wait_for(ws.receive(), 10)
                    if msg.type != aiohttp.WSMsgType.TEXT or orjson.loads(msg.data) != expected:
                        raise Violation(
                            f"resume {reader.draft_id} from {reader.last_seq}: {msg} != {expected}"
                        )
                    delivered += 1
                    reader.last_seq = expected["seq"]
                # and nothing more: the log was idle, so the next frame can only be a pong
                await ws.send_str('{"type": "ping"}')
                extra = orjson.loads((await asyncio.wait_for(ws.receive(), 10)).data)
                if extra.get("type") != "pong":
                    raise Violation(f"resume {reader.draft_id}: an extra event after the head: {extra}")
        return delivered

    # -- servers ------------------------------------------------------------------------------

    def start_node(self, node: int) -> None:
        self.servers[node].start(timeout=60)

    async def worker_pids(self, node: int, tries: int = 30) -> set[int]:
        """Pids of the workers answering at ``node`` (each request on a new connection)."""
        pids: set[int] = set()
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(timeout=TIMEOUT, connector=connector) as fresh:
            for _ in range(tries):
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with fresh.get(self.url(node) + "/healthz") as r:
                        pids.add((await r.json())["data"]["pid"])
        return pids

    async def replaced(self, node: int) -> None:
        """Wait until the supervisor of ``node`` has replaced the killed worker (bounded)."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            pids = await self.worker_pids(node, tries=4 * self.workers)
            if len(pids) == self.workers and self.killed_pid not in pids:
                return
            await asyncio.sleep(0.1)
        raise Violation(f"worker {self.killed_pid} of node {node} was not replaced within 60 s")


def _gaps(seqs: list[int]) -> str:
    bad = [(a, b) for a, b in itertools.pairwise(seqs) if b != a + 1]
    return f"first={seqs[:1]} breaks={bad[:5]}"


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="ringlog-chaos-"))
    db = args.db or str(workdir / "chaos.db")
    chaos = Chaos(
        db, args.nodes, rng, workdir, writers_per_draft=args.writers_per_draft, workers=args.workers
    )
    extra = ("--workers", str(args.workers)) if args.workers > 1 else ()
    chaos.servers = [
        ServerProcess(db, *SERVER_ARGS, *extra, log_path=workdir / f"server-{n}.log")
        for n in range(args.nodes)
    ]
    summary: dict[str, Any] = {"db": "postgresql" if db.startswith("postgresql") else "sqlite",
                               "nodes": args.nodes, "workers": args.workers, "seed": args.seed,
                               "cycles": 0}  # fmt: skip
    started = time.monotonic()
    connector = aiohttp.TCPConnector(limit=200, force_close=False)
    try:
        for node in range(args.nodes):
            await asyncio.to_thread(chaos.start_node, node)
        async with aiohttp.ClientSession(timeout=TIMEOUT, connector=connector) as http:
            await chaos.setup(http, args.drafts)
            for cycle in range(1, args.cycles + 1):
                t0 = time.monotonic()
                victim = rng.randrange(args.nodes)
                kill_after = rng.uniform(args.min_kill, args.max_kill)
                load = await chaos.load(http, kill_after, victim)
                if args.workers > 1:
                    await chaos.replaced(victim)
                else:
                    await asyncio.to_thread(chaos.start_node, victim)
                await chaos.resolve_in_doubt(http)
                logs = await chaos.check_log(http, rng.randrange(args.nodes))
                await asyncio.to_thread(chaos.verify)
                resumed = await chaos.check_resume(http, logs)
                summary["cycles"] = cycle
                print(
                    f"cycle {cycle}: killed {f'worker {chaos.killed_pid} of ' if args.workers > 1 else ''}"
                    f"node {victim} after {kill_after:.2f}s, appended {load['appended']}, "
                    f"acked total {len(chaos.acked)}, in doubt: {chaos.committed_before_crash} committed / "
                    f"{chaos.lost_in_crash} not, resumed {resumed} events, heads "
                    f"{[len(v) for v in logs.values()]}, verify ok ({time.monotonic() - t0:.1f}s)",
                    flush=True,
                )
    except Violation as e:
        summary["violation"] = str(e)
        summary["logs"] = str(workdir)
    finally:
        for srv in chaos.servers:
            if srv.proc is not None and srv.proc.poll() is None:
                srv.stop()
    summary.update(
        acked=len(chaos.acked),
        in_doubt_committed=chaos.committed_before_crash,
        in_doubt_not_committed=chaos.lost_in_crash,
        seconds=round(time.monotonic() - started, 1),
    )
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--db", default=None, help="SQLite path or postgresql:// URL (default: a temp file)")
    parser.add_argument("--nodes", type=int, choices=(1, 2), default=1)
    parser.add_argument(
        "--workers", type=int, default=1, help="worker processes per node; >= 2 kills one worker per cycle"
    )
    parser.add_argument("--drafts", type=int, default=4)
    parser.add_argument("--writers-per-draft", type=int, default=2)
    parser.add_argument("--min-kill", type=float, default=0.2, help="earliest kill, seconds into the load")
    parser.add_argument("--max-kill", type=float, default=1.5, help="latest kill, seconds into the load")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    if args.seed is None:
        args.seed = random.randrange(1_000_000)
    summary = asyncio.run(run(args))
    print(orjson.dumps(summary).decode(), flush=True)
    return 1 if "violation" in summary else 0


if __name__ == "__main__":
    sys.exit(main())
