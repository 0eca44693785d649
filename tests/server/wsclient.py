"""A hand-made WebSocket client, and the real app on a MemoryStore served on a loopback port.

The raw client speaks RFC 6455 by hand so that a test can do what a well-behaved client library
would not: stop reading, never answer a Close frame, and see every byte the server writes after it.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
import orjson
from aiohttp.test_utils import TestServer

from eventstore.memory import MemoryStore
from server.app import create_app
from server.settings import Settings
from tests.serverproc import TEST_SECRET

OP_TEXT, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x8, 0x9, 0xA


@asynccontextmanager
async def serving_app(**overrides: Any) -> AsyncIterator[tuple[TestServer, MemoryStore]]:
    """``create_app`` on a fresh MemoryStore, served on a loopback port; closed on exit."""
    values: dict[str, Any] = {"dev_auth": True, "rate_limit": 0.0, "jwt_secret": TEST_SECRET}
    values.update(overrides)
    store = MemoryStore()
    server = TestServer(create_app(Settings(**values), store), host="127.0.0.1")
    await server.start_server()
    try:
        yield server, store
    finally:
        await server.close()


class Client:
    """A JSON client of the in-process server (dev auth: ``X-User-Id``)."""

    def __init__(self, server: TestServer, http: aiohttp.ClientSession) -> None:
        self.server = server
        self.http = http

    async def post(self, path: str, user: str, body: dict[str, Any]) -> Any:
        async with self.http.post(self.server.make_url(path), json=body, headers={"X-User-Id": user}) as r:
            assert r.status in (200, 201), await r.text()
            return (await r.json())["data"]

    async def create(self, user: str) -> str:
        return str((await self.post("/v1/collab/drafts", user, {"title": "T"}))["id"])

    async def segment(self, draft_id: str, user: str, content: str = "s") -> int:
        return int(
            (await self.post(f"/v1/collab/drafts/{draft_id}/segments", user, {"content": content}))["seq"]
        )

    def ws(self, draft_id: str, query: str = "", **kwargs: Any) -> Any:
        url = self.server.make_url(f"/v1/ws/drafts/{draft_id}" + (f"?{query}" if query else ""))
        return self.http.ws_connect(url, **kwargs)


@dataclass
class Frame:
    opcode: int
    payload: bytes

    def json(self) -> Any:
        return orjson.loads(self.payload)

    @property
    def close_code(self) -> int:
        assert self.opcode == OP_CLOSE
        return int(struct.unpack("!H", self.payload[:2])[0])


@dataclass
class RawSocket:
    """One hand-made WebSocket connection (client side: frames it sends are masked)."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    frames: list[Frame] = field(default_factory=list)

    async def read_frame(self, timeout: float = 10.0) -> Frame | None:
        """The next frame, or None at EOF (the server dropped the connection)."""
        try:
            head = await asyncio.wait_for(self.reader.readexactly(2), timeout)
            b0, b1 = head
            assert b1 & 0x80 == 0, "server frames are never masked (RFC 6455 §5.1)"
            n = b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", await asyncio.wait_for(self.reader.readexactly(2), timeout))
            elif n == 127:
                (n,) = struct.unpack("!Q", await asyncio.wait_for(self.reader.readexactly(8), timeout))
            payload = await asyncio.wait_for(self.reader.readexactly(n), timeout)
        except (asyncio.IncompleteReadError, ConnectionResetError):
            return None
        frame = Frame(b0 & 0x0F, payload)
        self.frames.append(frame)
        return frame

    async def read_json(self, timeout: float = 10.0, presence: bool = False) -> Any:
        """The next text frame's JSON (pings are skipped; presence messages too, API.md v2,
        unless ``presence``)."""
        while True:
            frame = await self.read_frame(timeout)
            assert frame is not None, "connection closed"
            if frame.opcode == OP_TEXT:
                parsed = frame.json()
                if presence or parsed.get("type") not in ("presence", "presence_sync"):
                    return parsed
                continue
            assert frame.opcode == OP_PING, frame

    def send(self, payload: bytes, opcode: int = OP_TEXT) -> None:
        """Send one masked frame (payloads under 64 KiB)."""
        n = len(payload)
        length = bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack("!H", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.writer.write(bytes([0x80 | opcode]) + length + mask + masked)

    async def until_close_then_eof(self, timeout: float = 30.0) -> tuple[Frame, list[Frame]]:
        """Read up to the server's Close frame, never answer it, read on to EOF.

        Returns the Close frame and every frame that came after it (the server must send none).
        """
        close: Frame | None = None
        after: list[Frame] = []
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.read_frame(timeout)
                if frame is None:
                    break
                if close is not None:
                    after.append(frame)
                elif frame.opcode == OP_CLOSE:
                    close = frame
        assert close is not None, "the server never sent a Close frame"
        return close, after

    def events(self) -> list[dict[str, Any]]:
        """Every event (a text frame with a ``seq``) received so far."""
        out = []
        for frame in self.frames:
            if frame.opcode == OP_TEXT:
                message = frame.json()
                if "seq" in message and "type" in message and message["type"].startswith("collab."):
                    out.append(message)
        return out

    def close(self) -> None:
        self.writer.close()


class HasPort(Protocol):
    @property
    def port(self) -> int | None: ...


async def raw_connect(
    server: HasPort, path: str, headers: dict[str, str] | None = None, rcvbuf: int | None = None
) -> RawSocket:
    """Open ``path`` on a loopback server (in-process or a process) with a hand-made upgrade.

    ``rcvbuf`` shrinks the socket's receive buffer (a client that reads slowly fills up fast).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    assert server.port is not None
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=1024 if rcvbuf else 2**16)
    key = base64.b64encode(os.urandom(16)).decode()
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    writer.write(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        ).encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 101"), head
    return RawSocket(reader, writer)
