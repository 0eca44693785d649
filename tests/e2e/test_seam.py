"""The catch-up→live seam under load, against a real ``ringlog serve``.

Six collaborators append 300 segments, passing the ring round-robin while all six keep trying
(409 ``not_ring_holder`` is retried). Meanwhile clients that keep disconnecting and resuming with
``since`` = the last seq they saw, and a steady client, must each see every seq exactly once, in
order; ``/events`` paging must agree with them event for event.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import aiohttp
import orjson
import pytest

from tests.e2e.apikit import TIMEOUT, Api
from tests.serverproc import ServerProcess

WRITERS = 6
SEGMENTS = 300
TURN = 7  # segments a holder appends before passing the ring on


async def write(
    api: Api, draft_id: str, writers: list[str], index: int, done: dict[str, int], pass_ring: bool
) -> None:
    me, mine = (writers[index] if pass_ring else writers[0]), 0
    for _ in range(20_000):
        if done["segments"] >= SEGMENTS:
            return
        status, body, _ = await api.segment(draft_id, me, f"{me} #{mine}")
        if status == 409:
            assert body["error"]["code"] == "not_ring_holder", body
            await asyncio.sleep(0.002)  # back off; the holder is busy
            continue
        assert status == 201, body
        done["segments"] += 1
        mine += 1
        if pass_ring and (mine % TURN == 0 or done["segments"] >= SEGMENTS):
            status, body, _ = await api.pass_ring(draft_id, me, writers[(index + 1) % WRITERS])
            assert status == 200, body
    raise AssertionError("writer did not finish")


async def read_frames(ws: aiohttp.ClientWebSocketResponse, seen: list[dict[str, Any]], count: int) -> None:
    """Read up to ``count`` events (or until the socket stays quiet for a moment)."""
    for _ in range(count):
        try:
            msg = await asyncio.wait_for(ws.receive(), 0.5)
        except TimeoutError:
            return
        assert msg.type == aiohttp.WSMsgType.TEXT, (msg.type, msg.data)
        event = orjson.loads(msg.data)
        if event["type"] in ("presence", "presence_sync"):  # API.md v2: not events
            continue
        assert event["type"].startswith("collab."), event
        seen.append(event)


async def resuming_reader(
    server: ServerProcess,
    user: str,
    draft_id: str,
    final: asyncio.Future[int],
    seen: list[dict[str, Any]],
    rng: random.Random,
    during: list[int],
) -> int:
    """Connect, read a few events, disconnect, resume from the last seq; return the reconnect count."""
    reconnects = 0
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
        for _ in range(5_000):
            last = seen[-1]["seq"] if seen else 0
            if final.done() and last >= final.result():
                return reconnects
            url = f"{server.ws_url}/v1/ws/drafts/{draft_id}?since={last}"
            if not final.done():
                during[0] += 1
            async with http.ws_connect(url, headers={"X-User-Id": user}) as ws:
                connected = orjson.loads((await asyncio.wait_for(ws.receive(), 10)).data)
                assert connected["type"] == "connected" and connected["head_seq"] >= last, connected
                await read_frames(ws, seen, rng.randint(0, 12))
            reconnects += 1
    raise AssertionError("resuming reader did not finish")


async def steady_reader(
    server: ServerProcess, user: str, draft_id: str, final: asyncio.Future[int], seen: list[dict[str, Any]]
) -> None:
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as http,
        http.ws_connect(
            f"{server.ws_url}/v1/ws/drafts/{draft_id}?since=0", headers={"X-User-Id": user}
        ) as ws,
    ):
        connected = orjson.loads((await asyncio.wait_for(ws.receive(), 10)).data)
        assert connected["type"] == "connected"
        for _ in range(100_000):
            if final.done() and seen and seen[-1]["seq"] >= final.result():
                return
            await read_frames(ws, seen, 50)
    raise AssertionError("steady reader did not finish")


def assert_exactly_once_in_order(seen: list[dict[str, Any]], head: int, who: str) -> None:
    seqs = [e["seq"] for e in seen]
    assert seqs == list(range(1, head + 1)), f"{who}: first bad position " + str(
        next((i for i, s in enumerate(seqs) if s != i + 1), len(seqs))
    )


@pytest.mark.parametrize("pass_ring", [True, False], ids=["ring-round-robin", "one-holder-six-writers"])
async def test_every_seq_exactly_once_across_reconnects_while_six_writers_append(
    server: ServerProcess, pass_ring: bool
) -> None:
    writers = [f"writer{i}" for i in range(WRITERS)]
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
        api = Api(server, http)
        status, body, _ = await api.call(
            "POST", "/v1/collab/drafts", None, {"title": "seam"}, {"X-User-Id": writers[0]}
        )
        assert status == 201
        draft_id = body["data"]["id"]
        for w in writers[1:]:
            status, _, _ = await api.call(
                "POST", f"/v1/collab/drafts/{draft_id}/collaborators", None,
                {"user_id": w, "role": "contributor"}, {"X-User-Id": writers[0]},
            )  # fmt: skip
            assert status == 201
        status, _, _ = await api.call(
            "POST", f"/v1/collab/drafts/{draft_id}/collaborators", None,
            {"user_id": "reader", "role": "viewer"}, {"X-User-Id": writers[0]},
        )  # fmt: skip
        assert status == 201

        final: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        steady: list[dict[str, Any]] = []
        resumers: list[list[dict[str, Any]]] = [[], [], []]
        during = [[0] for _ in resumers]
        readers: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(steady_reader(server, "reader", draft_id, final, steady))
        ]
        readers += [
            asyncio.ensure_future(
                resuming_reader(
                    server,
                    "reader" if i == 0 else writers[i],
                    draft_id,
                    final,
                    seen,
                    random.Random(i),
                    during[i],
                )
            )
            for i, seen in enumerate(resumers)
        ]
        # every writer has its own connection pool, as separate clients would
        sessions = [aiohttp.ClientSession(timeout=TIMEOUT) for _ in writers]
        done = {"segments": 0}
        try:
            await asyncio.wait_for(
                asyncio.gather(
                    *(
                        write(Api(server, s), draft_id, writers, i, done, pass_ring)
                        for i, s in enumerate(sessions)
                    )
                ),
                90,
            )
        finally:
            for s in sessions:
                await s.close()
        head = (await api.state(draft_id, "reader"))["seq"]
        final.set_result(head)
        results = await asyncio.wait_for(asyncio.gather(*readers), 60)

        state = await api.state(draft_id, "reader")
        # concurrent writers may overshoot by the requests in flight: count what was acknowledged
        assert len(state["segments"]) == done["segments"] >= SEGMENTS
        assert [s["position"] for s in state["segments"]] == list(range(1, done["segments"] + 1))
        assert len({seg["author_user_id"] for seg in state["segments"]}) == (WRITERS if pass_ring else 1)

        paged = await api.events(draft_id, "reader", limit=7)
        assert_exactly_once_in_order(paged, head, "/events")
        assert_exactly_once_in_order(steady, head, "steady")
        assert steady == paged
        for i, seen in enumerate(resumers):
            assert_exactly_once_in_order(seen, head, f"resumer {i}")
            assert seen == paged
        # the seam was crossed many times while the writers were appending
        assert all(d[0] >= 10 for d in during), (during, results[1:])
