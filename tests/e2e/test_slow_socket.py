"""A socket that never reads is closed with 1013; another socket on the draft keeps up meanwhile.

The slow client is a raw TCP connection that does the WebSocket handshake by hand and then stops
reading (a tiny receive buffer, a paused transport), so the kernel buffers and then the server's
per-socket backlog (``--ws-queue-size``) fill with ~10 KB events.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import socket
import struct
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from tests.e2e.apikit import TIMEOUT, Api, receive_json
from tests.serverproc import ServerProcess

CONTENT = "z" * 10_000
MAX_APPENDS = 2000


async def raw_websocket(
    srv: ServerProcess, path: str, user: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Handshake by hand on a socket with a small receive buffer; return the (unread) stream."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", srv.port))
    # a small StreamReader limit pauses the transport early: the kernel buffers fill behind it
    reader, writer = await asyncio.open_connection(sock=sock, limit=1024)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"X-User-Id: {user}\r\n\r\n"
        ).encode()
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    b0, b1 = await asyncio.wait_for(reader.readexactly(2), 10)
    assert b1 & 0x80 == 0, "server frames are not masked"
    n = b1 & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), 10))
    elif n == 127:
        (n,) = struct.unpack("!Q", await asyncio.wait_for(reader.readexactly(8), 10))
    return b0 & 0x0F, await asyncio.wait_for(reader.readexactly(n), 10)


async def slow_closes(api: Api) -> float:
    _, body, _ = await api.call("GET", "/metrics")
    match = re.search(rb"^ringlog_ws_slow_closes_total ([0-9.e+]+)$", body, re.M)
    assert match is not None
    return float(match.group(1))


async def test_never_reading_socket_gets_1013_while_another_keeps_up(tmp_path: Path) -> None:
    args = ["--dev-auth", "--rate-limit", "0", "--ws-queue-size", "8"]
    with ServerProcess(str(tmp_path / "slow.db"), *args, log_path=tmp_path / "server.log") as srv:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
            api = Api(srv, http)
            d = (await api.create("writer"))["id"]
            await api.add(d, "writer", "fast", "viewer")
            await api.add(d, "writer", "slow", "viewer")
            reader, writer = await raw_websocket(srv, f"/v1/ws/drafts/{d}?since=3", "slow")
            fast = await http.ws_connect(
                f"{srv.ws_url}/v1/ws/drafts/{d}?since=3", headers={"X-User-Id": "fast"}
            )
            assert (await receive_json(fast))["type"] == "connected"

            # append until the server gives up on the slow socket, then a little more;
            # every event must reach the fast socket promptly all along
            lags: list[float] = []
            closed_at: int | None = None
            for i in range(MAX_APPENDS):
                status, body, _ = await api.segment(d, "writer", CONTENT)
                assert status == 201, body
                sent = time.monotonic()
                event = await receive_json(fast, timeout=5)
                assert event["seq"] == body["data"]["seq"]
                lags.append(time.monotonic() - sent)
                if closed_at is None and i % 10 == 9 and await slow_closes(api) >= 1:
                    closed_at = i
                if closed_at is not None and i >= closed_at + 20:
                    break
            assert closed_at is not None, "the never-reading socket was never closed"
            head = (await api.state(d, "fast"))["seq"]
            assert max(lags) < 2.0, max(lags)

            # the slow client finally reads: every event in order up to some seq, then a 1013 close
            seqs: list[int] = []
            close_code = None
            for _ in range(MAX_APPENDS + 10):
                opcode, payload = await read_frame(reader)
                if opcode == 0x1:
                    message: dict[str, Any] = orjson.loads(payload)
                    if message["type"] not in ("connected", "presence_sync", "presence"):
                        seqs.append(message["seq"])
                elif opcode == 0x8:
                    (close_code,) = struct.unpack("!H", payload[:2])
                    break
            writer.close()
            assert close_code == 1013
            assert seqs == list(range(4, 4 + len(seqs))), "frames before the close are in order, no gap"
            assert seqs[-1] < head

            # and it resumes from the last seq it processed without losing anything
            async with http.ws_connect(
                f"{srv.ws_url}/v1/ws/drafts/{d}?since={seqs[-1]}", headers={"X-User-Id": "slow"}
            ) as ws:
                assert (await receive_json(ws))["head_seq"] == head
                rest = [(await receive_json(ws))["seq"] for _ in range(head - seqs[-1])]
            assert rest == list(range(seqs[-1] + 1, head + 1))
            await fast.close()
        assert srv.stop() == 0
