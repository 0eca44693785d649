"""Expensive reads cannot starve the event loop: a burst of cold ``GET …?at_seq=N`` folds of a
large draft (API.md v2 "Time travel over HTTP") still lets a revocation reach the removed user's
socket and ``/healthz`` answer while the burst is being served.

Nothing here times the machine: progress is asserted by the order in which things finish. The
old code folded every ``at_seq`` from seq 1 in one go on the event loop, so the DELETE, the
socket's close and ``/healthz`` all waited behind the whole burst.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from projections import AppendSegment, DomainError
from tests.projections.drafting import clock, execute
from tests.server.inprocess import InProcess, running_app

EVENTS = 6000
"""Segments in the large draft: the old code folded them all on the loop, once per request."""

BURST = 12
"""Concurrent cold ``at_seq`` requests (distinct seqs, so none is served from the cache)."""

CONTENT = "segment text ✍ " * 130  # about 2 KB, as in the report


async def large_draft(app: InProcess) -> tuple[str, int]:
    """A draft by alice with bob as a viewer and ``EVENTS`` segments; (its id, its head)."""
    d = await app.create("alice")
    status, body, _ = await app.call(
        "POST", f"/v1/collab/drafts/{d}/collaborators", "alice", {"user_id": "bob", "role": "viewer"}
    )
    assert status == 201, body
    now = clock()
    for _ in range(EVENTS):
        outcome = await execute(app.store, d, AppendSegment("alice", CONTENT), next(now), app.state.projector)
        assert not isinstance(outcome, DomainError), outcome
    head = app.state.projector.known_head(d)
    assert head == EVENTS + 2
    return d, head


async def test_a_burst_of_cold_at_seq_folds_lets_a_revocation_and_healthz_through() -> None:
    async with running_app() as app:
        d, head = await large_draft(app)
        finished: list[str] = []

        async def at_seq(n: int) -> None:
            status, body, _ = await app.call(
                "GET", f"/v1/collab/drafts/{d}", "alice", params={"at_seq": str(n)}
            )
            assert status == 200, body
            assert body["data"]["seq"] == n and len(body["data"]["segments"]) == n - 2
            finished.append("at_seq")

        async def healthz() -> None:
            status, _, _ = await app.call("GET", "/healthz", None)
            assert status == 200
            finished.append("healthz")

        async def revoked(ws: aiohttp.ClientWebSocketResponse) -> None:
            received: list[Any] = []
            while (msg := await ws.receive(timeout=60)).type == aiohttp.WSMsgType.TEXT:
                received.append(msg.json()["type"])
            assert received == ["collab.collaborator_removed", "error"]
            assert ws.close_code == 4403
            finished.append("revoked")

        async with app.client.ws_connect(
            f"/v1/ws/drafts/{d}?since={head}", headers={"X-User-Id": "bob"}
        ) as bob:
            assert (await bob.receive_json(timeout=10))["type"] == "connected"
            assert (await bob.receive_json(timeout=10))["type"] == "presence_sync"  # API.md v2
            # highest seq first: no fold can start from another's result
            burst = [asyncio.create_task(at_seq(head - 1 - i * 7)) for i in range(BURST)]
            await asyncio.wait(burst, return_when=asyncio.FIRST_COMPLETED)  # the burst is being served
            assert finished.count("at_seq") < BURST
            close = asyncio.create_task(revoked(bob))
            health = asyncio.create_task(healthz())
            status, body, _ = await app.call("DELETE", f"/v1/collab/drafts/{d}/collaborators/bob", "alice")
            assert status == 200, body
            finished.append("deleted")
            await asyncio.gather(close, health, *burst)
        last = len(finished) - 1 - finished[::-1].index("at_seq")
        for step in ("deleted", "revoked", "healthz"):
            assert finished.index(step) < last, finished  # it did not wait for the whole burst
