"""SIGTERM under load: acknowledged appends persist, every socket gets 1001, exit 0 within the drain timeout."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from tests.serverproc import ServerProcess

TIMEOUT = aiohttp.ClientTimeout(total=20)
DRAIN = 5.0


async def test_sigterm_during_appends_and_streaming(tmp_path: Path) -> None:
    srv = ServerProcess(
        str(tmp_path / "drain.db"), "--dev-auth", "--rate-limit", "0", "--max-sockets-per-user", "0",
        "--drain-timeout", str(DRAIN), log_path=tmp_path / "server.log",
    )  # fmt: skip
    acked: dict[str, tuple[str, int, dict[str, Any]]] = {}
    close_codes: list[int | None] = []
    with srv:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as http:

            async def post(path: str, body: Any, key: str | None = None) -> tuple[int, Any, Any]:
                headers = {"X-User-Id": "owner"} | ({"Idempotency-Key": key} if key else {})
                async with http.post(srv.url + path, json=body, headers=headers) as r:
                    return r.status, await r.json(content_type=None), r.headers

            drafts = []
            for i in range(3):
                status, body, _ = await post("/v1/collab/drafts", {"title": f"d{i}"})
                assert status == 201
                drafts.append(body["data"]["id"])
            load_running = asyncio.Event()

            async def writer(n: int) -> None:
                d = drafts[n % len(drafts)]
                for i in range(100_000):
                    key = f"w{n}-{i}"
                    try:
                        status, body, _ = await post(f"/v1/collab/drafts/{d}/segments", {"content": key}, key)
                    except (aiohttp.ClientError, TimeoutError):
                        return
                    if status == 503:
                        return  # refused while draining: not acknowledged
                    assert status == 201, body
                    acked[key] = (d, body["data"]["seq"], body["data"]["segment"])
                    if len(acked) > 200:
                        load_running.set()

            async def reader(d: str) -> list[int]:
                seqs: list[int] = []
                async with http.ws_connect(f"{srv.ws_url}/v1/ws/drafts/{d}?since=0&user_id=owner") as ws:
                    for _ in range(1_000_000):
                        msg = await ws.receive()
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            break
                        event = orjson.loads(msg.data)
                        if "seq" in event:
                            assert event["seq"] == len(seqs) + 1, (event["seq"], len(seqs))
                            seqs.append(event["seq"])
                    close_codes.append(ws.close_code)
                return seqs

            readers = [asyncio.ensure_future(reader(drafts[i % 3])) for i in range(30)]
            writers = [asyncio.ensure_future(writer(n)) for n in range(6)]
            await asyncio.wait_for(load_running.wait(), 30)
            started = time.monotonic()
            status = await asyncio.to_thread(srv.stop, DRAIN + 10)
            elapsed = time.monotonic() - started
            await asyncio.wait_for(asyncio.gather(*writers), 20)
            received = await asyncio.wait_for(asyncio.gather(*readers), 20)
        assert status == 0
        assert elapsed < DRAIN + 2, elapsed
        assert close_codes == [1001] * 30, close_codes
        assert all(len(r) > 0 for r in received)

        srv.start()
        async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
            for d in drafts:
                async with http.get(f"{srv.url}/v1/collab/drafts/{d}", headers={"X-User-Id": "owner"}) as r:
                    state = (await r.json())["data"]
                by_id = {s["id"]: s for s in state["segments"]}
                for key, (draft_id, seq, segment) in acked.items():
                    if draft_id == d:
                        assert seq <= state["seq"], (key, seq, state["seq"])
                        assert by_id.get(segment["id"]) == segment, key
                assert len(by_id) >= sum(1 for a in acked.values() if a[0] == d)
