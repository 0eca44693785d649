"""Kind: contention is not unavailability (issue 10, item 7).

A mutation that loses the optimistic-concurrency race re-reads the draft's head from the log,
backs off with jitter and retries for a bounded time; if it still cannot win it is 409
``conflict`` with ``details.head_seq`` — never 503. In process, the store is a fake that races
(another node's appends, unseen by this node's projector) or always reports a conflict; the
service under test is the real one. Then two real nodes on one PostgreSQL database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from eventstore import ConcurrencyConflict
from eventstore.events import IdempotencyClaim, NewEvent
from eventstore.memory import MemoryStore
from eventstore.notifier import Notifier
from eventstore.store import AppendResult
from projections.decide import AppendSegment, decide
from projections.fold import fold_all
from server.state import AppState
from tests.pgutil import temporary_database
from tests.server.inprocess import InProcess, running_app
from tests.serverproc import ServerProcess

FAST_BACKOFF = (0.0005, 0.002)


class RacingStore(MemoryStore):
    """Before each of the next ``races`` appends to an existing draft, "another node" appends a
    segment first. This node hears nothing of it (no notification), as with a second process
    whose commit has not reached it yet: the projector's cache is stale when the race is lost."""

    def __init__(self) -> None:
        super().__init__()
        self.races = 0
        self.attempts = 0

    async def append(
        self,
        draft_id: str,
        events: Sequence[NewEvent],
        expected_seq: int,
        idempotency: IdempotencyClaim | None = None,
    ) -> AppendResult:
        if expected_seq > 0:
            self.attempts += 1
            if self.races > 0:
                self.races -= 1
                await self._other_node_appends(draft_id)
        return await super().append(draft_id, events, expected_seq, idempotency)

    async def _other_node_appends(self, draft_id: str) -> None:
        records = await self.read(draft_id)
        state = fold_all(None, [r.event() for r in records])
        assert state is not None
        holder = state.ring_state.current_holder_id
        events = decide(state, AppendSegment(holder, f"other node #{state.seq}"), "2026-01-01T00:00:00.000Z")
        heard, self.notifier = self.notifier, Notifier()
        try:
            await super().append(draft_id, events, state.seq)
        finally:
            self.notifier = heard


class AlwaysConflictingStore(MemoryStore):
    """Once armed, every append to an existing draft reports a conflict at the real head."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False
        self.attempts = 0

    async def append(
        self,
        draft_id: str,
        events: Sequence[NewEvent],
        expected_seq: int,
        idempotency: IdempotencyClaim | None = None,
    ) -> AppendResult:
        if self.armed and expected_seq > 0:
            self.attempts += 1
            await asyncio.sleep(0)
            raise ConcurrencyConflict(draft_id, expected_seq, await self.head(draft_id))
        return await super().append(draft_id, events, expected_seq, idempotency)


def _fast(srv: InProcess, retry_seconds: float = 5.0) -> None:
    service = srv.app[AppState.KEY].service
    service.conflict_backoff = FAST_BACKOFF
    service.conflict_retry_seconds = retry_seconds


async def _log_seqs(srv: InProcess, d: str) -> list[int]:
    status, body, _ = await srv.call("GET", f"/v1/collab/drafts/{d}/events?since=0&limit=1000", "alice")
    assert status == 200, body
    return [e["seq"] for e in body["data"]]


@pytest.mark.parametrize("races", [1, 2, 5, 19, 20, 21, 40])
async def test_an_append_that_loses_races_wins_against_the_logs_head(races: int) -> None:
    store = RacingStore()
    async with running_app(store) as srv:
        _fast(srv)
        d = await srv.create()
        store.races = races
        status, body, headers = await srv.append(d, "mine")
        assert status == 201, body
        assert body["data"]["seq"] == races + 2 and headers["ETag"] == f'"{races + 2}"'
        assert store.attempts == races + 1
        status, state, _ = await srv.call("GET", f"/v1/collab/drafts/{d}", "alice")
        assert status == 200 and state["data"]["seq"] == races + 2
        assert [s["content"] for s in state["data"]["segments"]][-1] == "mine"
        assert len(state["data"]["segments"]) == races + 1
        assert await _log_seqs(srv, d) == list(range(1, races + 3))


MUTATIONS: list[tuple[str, str, dict[str, Any], int]] = [
    ("PATCH", "", {"title": "renamed"}, 200),
    ("POST", "/collaborators", {"user_id": "carol", "role": "viewer"}, 201),
    ("POST", "/ring/pass", {"to_user_id": "bob"}, 200),
    ("POST", "/segments", {"content": "mine"}, 201),
]


@pytest.mark.parametrize(("method", "tail", "payload", "ok"), MUTATIONS)
async def test_every_mutation_is_decided_again_after_a_lost_race(
    method: str, tail: str, payload: dict[str, Any], ok: int
) -> None:
    store = RacingStore()
    async with running_app(store) as srv:
        _fast(srv)
        d = await srv.create()
        status, _, _ = await srv.call(
            "POST", f"/v1/collab/drafts/{d}/collaborators", "alice", {"user_id": "bob", "role": "contributor"}
        )
        assert status == 201
        store.races = 3
        status, body, _ = await srv.call(method, f"/v1/collab/drafts/{d}{tail}", "alice", payload)
        assert status == ok, body
        assert await _log_seqs(srv, d) == list(range(1, 2 + 1 + 3 + 1))


@pytest.mark.parametrize("budget", [0.05, 0.3])
async def test_losing_for_longer_than_the_budget_is_409_with_the_head(
    budget: float, caplog: pytest.LogCaptureFixture
) -> None:
    store = AlwaysConflictingStore()
    async with running_app(store) as srv:
        srv.app[AppState.KEY].service.conflict_retry_seconds = budget
        d = await srv.create()
        assert (await srv.append(d, "one"))[0] == 201
        store.armed = True
        loop = asyncio.get_running_loop()
        started = loop.time()
        status, body, headers = await srv.append(d, "two")
        took = loop.time() - started
    assert status == 409, body
    assert body["error"]["code"] == "conflict"
    assert body["error"]["details"] == {"head_seq": 2}
    assert "Retry-After" not in headers
    assert budget <= took < budget + 2.0
    assert 2 <= store.attempts < 200, "retries must pause between attempts"
    assert any("gave up after" in r.getMessage() for r in caplog.records)


async def test_a_conflict_with_if_match_is_412_at_once() -> None:
    store = AlwaysConflictingStore()
    async with running_app(store) as srv:
        d = await srv.create()
        store.armed = True
        status, body, _ = await srv.append(d, headers={"If-Match": '"1"'})
    assert (status, body["error"]["code"], body["error"]["details"]) == (
        412,
        "precondition_failed",
        {"head_seq": 1},
    )
    assert store.attempts == 1


async def test_a_key_that_lost_to_contention_is_not_used_up() -> None:
    store = AlwaysConflictingStore()
    async with running_app(store) as srv:
        srv.app[AppState.KEY].service.conflict_retry_seconds = 0.05
        d = await srv.create()
        store.armed = True
        status, body, _ = await srv.append(d, "k", headers={"Idempotency-Key": "once"})
        assert (status, body["error"]["code"]) == (409, "conflict")
        store.armed = False
        status, body, headers = await srv.append(d, "k", headers={"Idempotency-Key": "once"})
    assert status == 201 and "Idempotent-Replayed" not in headers
    assert body["data"]["seq"] == 2


async def test_concurrent_local_writers_and_a_racing_node_all_get_201() -> None:
    store = RacingStore()
    async with running_app(store) as srv:
        _fast(srv)
        d = await srv.create()
        store.races = 30
        results = await asyncio.gather(*(srv.append(d, f"w{k}") for k in range(12)))
        assert [s for s, _, _ in results] == [201] * 12
        seqs = sorted(b["data"]["seq"] for _, b, _ in results)
        assert len(set(seqs)) == 12
        assert await _log_seqs(srv, d) == list(range(1, 2 + 12 + 30))


# -- two real nodes on one PostgreSQL database -----------------------------------------------

APPENDS = 20


@pytest.mark.postgres
@pytest.mark.parametrize("writers", [6, 24])
async def test_writers_through_two_nodes_never_get_503(tmp_path: Path, writers: int) -> None:
    """The issue's six writers, and four times as many (where the old code answered 503)."""
    async with temporary_database() as db:
        args = ("--dev-auth", "--rate-limit", "0", "--pool-size", "4")
        nodes = [ServerProcess(db, *args, log_path=tmp_path / f"node{i}.log") for i in range(2)]
        try:
            for node in nodes:
                node.start()
            timeout = aiohttp.ClientTimeout(total=60)
            async with aiohttp.ClientSession(timeout=timeout) as http:

                async def call(node: ServerProcess, method: str, path: str, body: Any) -> tuple[int, Any]:
                    async with http.request(
                        method, node.url + path, json=body, headers={"X-User-Id": "alice"}
                    ) as r:
                        return r.status, await r.json()

                status, created = await call(nodes[0], "POST", "/v1/collab/drafts", {"title": "contended"})
                assert status == 201, created
                d = created["data"]["id"]

                async def writer(w: int) -> list[tuple[int, Any]]:
                    out = []
                    for k in range(APPENDS):
                        node = nodes[(w + k) % 2]
                        out.append(
                            await call(
                                node, "POST", f"/v1/collab/drafts/{d}/segments", {"content": f"{w}.{k}"}
                            )
                        )
                    return out

                results = [
                    r for batch in await asyncio.gather(*(writer(w) for w in range(writers))) for r in batch
                ]
                statuses = [s for s, _ in results]
                assert 503 not in statuses, [b for s, b in results if s == 503][:3]
                assert set(statuses) <= {201, 409}, statuses
                for s, b in results:
                    if s == 409:
                        assert b["error"]["code"] == "conflict" and b["error"]["details"]["head_seq"] >= 2
                won = sorted(b["data"]["seq"] for s, b in results if s == 201)
                assert len(won) == len(set(won))
                status, log = await call(
                    nodes[1], "GET", f"/v1/collab/drafts/{d}/events?since=0&limit=1000", None
                )
                assert status == 200
                assert [e["seq"] for e in log["data"]] == list(range(1, 2 + len(won)))
                assert [e["seq"] for e in log["data"][1:]] == won
                assert statuses.count(201) >= writers * APPENDS * 0.9  # contention is mostly won, not refused
        finally:
            for node in nodes:
                node.__exit__()
