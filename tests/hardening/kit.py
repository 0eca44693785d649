"""In-process servers and raw-socket helpers for the hardening tests (one module per kind)."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from server.app import create_app
from server.params import MAX_DIGITS
from server.settings import Settings
from tests.serverproc import TEST_SECRET

# hypothesis reuses one in-process server across a test's examples
EXAMPLES = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
FEW_EXAMPLES = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

ASCII_INT = re.compile(f"[0-9]{{1,{MAX_DIGITS}}}")  # [0-9], never \d: \d matches every Nd digit


def ascii_int_in(raw: str, low: int, high: int) -> bool:
    """The rule every integer from outside must follow (server.params.parse_int's contract)."""
    return ASCII_INT.fullmatch(raw) is not None and low <= int(raw) <= high


INTEGER_LIKE = st.one_of(
    st.integers(min_value=-(10**25), max_value=10**25).map(str),
    st.integers(min_value=0, max_value=2**64).map(str),
    st.text(alphabet=st.characters(categories=["Nd"]), min_size=1, max_size=22),  # every Unicode digit
    st.text(alphabet="0123456789+-_ .eExX\t\u00b2\u00b3\u00b9\u2070\u0663\u0967\uff11", max_size=22),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.integers(min_value=1000, max_value=10**12).map(lambda n: f"{n:_}"),
    st.integers(min_value=0, max_value=40).map(lambda zeros: "0" * zeros + "7"),
    st.sampled_from(
        [
            "",
            "\u00b2",
            "\u0663",
            "1_0",
            "+3",
            "-3",
            "-0",
            " 3",
            "3 ",
            "0x10",
            "1e3",
            "\u0661\u0662",
            "9" * 5000,
            str(2**62),
            str(2**62 + 1),
            str(2**63 - 1),
            str(2**63),
            "99999999999999999999999",
        ]
    ),
)
"""Integer-like strings: ASCII and Unicode digits, signs, underscores, spaces, floats, exponents,
superscripts, leading zeros, values around 2**62 / 2**63, very long strings."""


def header_safe(raw: str) -> bool:
    """Whether an HTTP client can put ``raw`` in a header at all (no CR, LF, NUL)."""
    return not any(ch in raw for ch in "\r\n\x00")


@asynccontextmanager
async def app_client(**overrides: Any) -> AsyncIterator[TestClient[Any, Any]]:
    """An in-process server (MemoryStore, dev auth, an HS256 secret, no rate limit)."""
    options: dict[str, Any] = {
        "db": "memory:",
        "dev_auth": True,
        "jwt_secret": TEST_SECRET,
        "rate_limit": 0,
        "max_sockets_per_user": 0,
        **overrides,
    }
    client = TestClient(TestServer(create_app(Settings(**options))))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


async def create_draft(
    client: TestClient[Any, Any], user: str = "alice", segments: int = 0
) -> tuple[str, int]:
    """A draft of ``user`` with ``segments`` segments: (id, head seq)."""
    headers = {"X-User-Id": user}
    r = await client.post("/v1/collab/drafts", json={"title": "T"}, headers=headers)
    assert r.status == 201, await r.text()
    body = await r.json()
    draft_id, seq = body["data"]["id"], body["data"]["seq"]
    for i in range(segments):
        r = await client.post(
            f"/v1/collab/drafts/{draft_id}/segments", json={"content": f"s{i}"}, headers=headers
        )
        assert r.status == 201, await r.text()
        seq = (await r.json())["data"]["seq"]
    return draft_id, seq


async def socket_outcome(client: TestClient[Any, Any], path: str, **kwargs: Any) -> tuple[str, Any]:
    """Open a WebSocket and return ("connected", first message) or ("refused", (error code,
    close code)), or ("http", status) when the upgrade itself is refused."""
    from aiohttp import WSServerHandshakeError

    try:
        ws = await client.ws_connect(path, **kwargs)
    except WSServerHandshakeError as e:
        return "http", e.status
    try:
        msg = await asyncio.wait_for(ws.receive(), 10)
        assert msg.type == WSMsgType.TEXT, msg
        first = msg.json()
        if first["type"] == "connected":
            return "connected", first
        close = await asyncio.wait_for(ws.receive(), 10)
        assert close.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING), close
        return "refused", (first["code"], ws.close_code)
    finally:
        await ws.close()


async def raw_exchange(port: int, request: bytes, timeout: float = 10) -> tuple[int, bytes, bytes]:
    """Send raw bytes to 127.0.0.1:``port``; return (status, head, body), where body is the
    ``Content-Length`` bytes of an answer, or the first bytes of the stream after a 101."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        status = int(head.split(b" ", 2)[1])
        if status == 101:
            return status, head, await asyncio.wait_for(reader.read(64), timeout)
        length = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
        body = await asyncio.wait_for(reader.readexactly(int(length[1])), timeout) if length else b""
        return status, head, body
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
