"""Client message size on both sockets (API.md v2 "One socket, many drafts": client messages are
"at most 4 KiB"): 4,096 bytes are a message like any other, 4,097 close the socket with 1009
(RFC 6455 §7.4.1 "Message Too Big"). aiohttp refuses a message that *reaches* its limit, so
the limit given to it is one above the contract's (``server.ws.WS_MAX_MSG_SIZE``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from server.ws import MAX_CLIENT_MESSAGE
from tests.server.wsclient import Client, serving_app

SIZES_ACCEPTED = (MAX_CLIENT_MESSAGE - 1, MAX_CLIENT_MESSAGE)
SIZES_REFUSED = (MAX_CLIENT_MESSAGE + 1, MAX_CLIENT_MESSAGE + 2, 2 * MAX_CLIENT_MESSAGE)


def ping_of_size(size: int) -> str:
    """A ``ping`` message of exactly ``size`` bytes of UTF-8 (padded with an ignored field)."""
    bare = orjson.dumps({"type": "ping", "pad": ""})
    text = orjson.dumps({"type": "ping", "pad": "x" * (size - len(bare))}).decode()
    assert len(text.encode()) == size
    return text


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    async with serving_app() as (server, _), aiohttp.ClientSession() as http:
        yield Client(server, http)


async def _open(c: Client, kind: str) -> aiohttp.ClientWebSocketResponse:
    """A socket past its opening messages (``connected``; the per-draft one's ``presence_sync``)."""
    if kind == "mux":
        ws = await c.http.ws_connect(c.server.make_url("/v1/ws?user_id=alice"))
        assert (await ws.receive_json(timeout=10))["type"] == "connected"
        return ws
    draft = await c.create("alice")
    ws = await c.http.ws_connect(c.server.make_url(f"/v1/ws/drafts/{draft}?user_id=alice"))
    assert (await ws.receive_json(timeout=10))["type"] == "connected"
    assert (await ws.receive_json(timeout=10))["type"] == "presence_sync"
    return ws


async def _next_reply(ws: aiohttp.ClientWebSocketResponse) -> Any:
    msg = await ws.receive(timeout=10)
    return orjson.loads(msg.data) if msg.type == aiohttp.WSMsgType.TEXT else msg


@pytest.mark.parametrize("kind", ["draft", "mux"])
@pytest.mark.parametrize("size", SIZES_ACCEPTED)
async def test_a_message_of_up_to_4_kib_is_answered(client: Client, kind: str, size: int) -> None:
    ws = await _open(client, kind)
    await ws.send_str(ping_of_size(size))
    reply = await _next_reply(ws)
    assert isinstance(reply, dict) and reply["type"] == "pong", reply
    await ws.send_str(ping_of_size(size))  # and the socket goes on
    reply = await _next_reply(ws)
    assert isinstance(reply, dict) and reply["type"] == "pong", reply
    await ws.close()


@pytest.mark.parametrize("kind", ["draft", "mux"])
@pytest.mark.parametrize("size", SIZES_REFUSED)
async def test_a_message_over_4_kib_closes_1009(client: Client, kind: str, size: int) -> None:
    ws = await _open(client, kind)
    await ws.send_str(ping_of_size(size))
    msg = await ws.receive(timeout=10)
    assert msg.type == aiohttp.WSMsgType.CLOSE, msg
    assert ws.close_code == 1009
