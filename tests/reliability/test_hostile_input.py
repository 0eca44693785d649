"""Hostile WebSocket input and abuse: answered per API.md, refused early, and nobody else is affected."""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from tests.serverproc import ServerProcess

TIMEOUT = aiohttp.ClientTimeout(total=20)


def dev(user: str) -> dict[str, str]:
    return {"X-User-Id": user}


async def create(http: aiohttp.ClientSession, srv: ServerProcess, user: str = "alice") -> str:
    async with http.post(f"{srv.url}/v1/collab/drafts", json={"title": "t"}, headers=dev(user)) as r:
        assert r.status == 201
        return str((await r.json())["data"]["id"])


async def next_json(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    """The next message that is not presence (API.md v2)."""
    for _ in range(1000):
        msg = await ws.receive(timeout=10)
        assert msg.type == aiohttp.WSMsgType.TEXT, (msg.type, msg.data)
        out: dict[str, Any] = orjson.loads(msg.data)
        if out.get("type") not in ("presence", "presence_sync"):
            return out
    raise AssertionError("only presence messages")


async def close_code(ws: aiohttp.ClientWebSocketResponse) -> int | None:
    for _ in range(1000):
        msg = await ws.receive(timeout=10)
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
            break
    return ws.close_code


async def raw_upgrade(srv: ServerProcess, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = srv.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


async def test_malformed_frames_never_affect_other_sockets(tmp_path: Path) -> None:
    with ServerProcess(str(tmp_path / "ws.db"), "--dev-auth", "--rate-limit", "0",
                       log_path=tmp_path / "server.log") as srv:  # fmt: skip
        async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
            d = await create(http, srv)
            url = f"{srv.ws_url}/v1/ws/drafts/{d}?user_id=alice&since=1"
            victim = await http.ws_connect(url)
            assert (await next_json(victim))["type"] == "connected"

            async def append(i: int) -> None:
                body = {"content": f"s{i}"}
                async with http.post(
                    f"{srv.url}/v1/collab/drafts/{d}/segments", json=body, headers=dev("alice")
                ) as r:
                    assert r.status == 201

            # binary frame and non-JSON text: bad_message, socket stays open
            attacker = await http.ws_connect(url)
            assert (await next_json(attacker))["type"] == "connected"
            await attacker.send_bytes(b"\x00\x01binary")
            assert (await next_json(attacker))["code"] == "bad_message"
            await attacker.send_str("{not json")
            assert (await next_json(attacker))["code"] == "bad_message"
            await attacker.send_str('{"type": "subscribe"}')
            assert (await next_json(attacker))["code"] == "bad_message"
            await attacker.send_str('{"type": "ping"}')
            assert (await next_json(attacker))["type"] == "pong"
            await append(0)
            assert (await next_json(attacker))["seq"] == 2

            # invalid UTF-8 in a text frame: a protocol error the server closes (1007)
            await attacker.send_frame(b"\xff\xfe\xfd", aiohttp.WSMsgType.TEXT)
            assert await close_code(attacker) == 1007

            # a frame declaring 1 TiB: refused from its header, without waiting for the payload
            reader, writer = await raw_upgrade(srv, f"/v1/ws/drafts/{d}?user_id=alice&since=1")
            writer.write(b"\x82\xff" + struct.pack("!Q", 1 << 40) + os.urandom(4) + b"x" * 100)
            await writer.drain()
            data = b""
            for _ in range(100):
                chunk = await asyncio.wait_for(reader.read(65536), 10)
                if not chunk:
                    break
                data += chunk
                if b"\x88" in data:
                    break
            close_at = data.index(b"\x88")  # a close frame (after 'connected' and the catch-up)
            assert struct.unpack("!H", data[close_at + 2 : close_at + 4])[0] == 1009, data[close_at:]
            writer.close()

            # a ping flood beyond 50/s: rate_limited error, close 1008
            flooder = await http.ws_connect(url)
            assert (await next_json(flooder))["type"] == "connected"
            for _ in range(120):
                await flooder.send_str('{"type": "ping"}')
            codes = []
            for _ in range(200):
                msg = await flooder.receive(timeout=10)
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                codes.append(orjson.loads(msg.data).get("code") or orjson.loads(msg.data)["type"])
            assert "rate_limited" in codes and flooder.close_code == 1008, (codes, flooder.close_code)

            # the victim saw nothing of it: every event, in order, and still answers pings
            for i in range(1, 6):
                await append(i)
            seqs = [(await next_json(victim))["seq"] for _ in range(6)]
            assert seqs == [2, 3, 4, 5, 6, 7]
            await victim.send_str('{"type": "ping"}')
            assert (await next_json(victim))["type"] == "pong"
            await victim.close()


async def test_rate_limit_socket_cap_body_limit_and_origins(tmp_path: Path) -> None:
    with ServerProcess(str(tmp_path / "abuse.db"), "--dev-auth", "--rate-limit", "5", "--max-sockets-per-user", "3",
                       "--allowed-origins", "https://ok.example", log_path=tmp_path / "server.log") as srv:  # fmt: skip
        async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
            d = await create(http, srv)

            async def post(user: str) -> tuple[int, str | None]:
                body = {"content": "burst"}
                async with http.post(
                    f"{srv.url}/v1/collab/drafts/{d}/segments", json=body, headers=dev(user)
                ) as r:
                    await r.read()
                    return r.status, r.headers.get("Retry-After")

            results = await asyncio.gather(*(post("alice") for _ in range(40)))
            ok = [s for s, _ in results if s == 201]
            limited = [ra for s, ra in results if s == 429]
            assert 1 <= len(ok) <= 12, results  # bursts up to 2R = 10 (+ refill during the burst)
            assert len(ok) + len(limited) == 40, results
            assert all(ra is not None and int(ra) >= 1 for ra in limited), limited
            # someone else is not limited by alice's burst
            async with http.post(f"{srv.url}/v1/collab/drafts", json={"title": "b"}, headers=dev("bob")) as r:
                assert r.status == 201

            # socket cap: the 4th socket of one user is refused with 1008, others are fine
            url = f"{srv.ws_url}/v1/ws/drafts/{d}?user_id=alice"
            socks = [await http.ws_connect(url) for _ in range(3)]
            for s in socks:
                assert (await next_json(s))["type"] == "connected"
            extra = await http.ws_connect(url)
            assert (await next_json(extra))["code"] == "too_many_sockets"
            assert await close_code(extra) == 1008
            await socks.pop().close()
            for _ in range(50):  # bounded polling: the server notices the close a moment later
                again = await http.ws_connect(url)
                first = await next_json(again)
                if first["type"] == "connected":
                    break
                await close_code(again)
                await asyncio.sleep(0.05)
            assert first["type"] == "connected"
            await again.close()
            for s in socks:
                await s.close()

            # a body declared far above 64 KiB is refused before it is sent
            host, port = srv.url.removeprefix("http://").split(":")
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(
                f"POST /v1/collab/drafts HTTP/1.1\r\nHost: {host}\r\nX-User-Id: carol\r\n"
                "Content-Type: application/json\r\nContent-Length: 1073741824\r\n\r\n{".encode()
            )
            status_line = await asyncio.wait_for(reader.readline(), 10)
            assert b" 413 " in status_line, status_line
            writer.close()

            # Origin allow-list, for browsers
            for origin, expected in (("https://evil.example", 403), ("https://ok.example", 101)):
                headers = {"Origin": origin, "Connection": "Upgrade", "Upgrade": "websocket",
                           "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(), "Sec-WebSocket-Version": "13"}  # fmt: skip
                async with http.get(f"{srv.url}/v1/ws/drafts/{d}?user_id=bob", headers=headers) as r:
                    assert r.status == expected, (origin, r.status)
            preflight = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
            async with http.options(f"{srv.url}/v1/collab/drafts", headers=preflight) as r:
                assert r.status == 403 and r.content_type == "application/json"
                assert (await r.json())["error"]["code"] == "forbidden"  # the contract's body, not text
            preflight["Origin"] = "https://ok.example"
            async with http.options(f"{srv.url}/v1/collab/drafts", headers=preflight) as r:
                assert r.status == 204 and r.headers["Access-Control-Allow-Origin"] == "https://ok.example"
