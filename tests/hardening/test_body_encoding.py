"""Kind: a request body that cannot be read (found by a new user: ``Content-Encoding: gzip`` on a
body that is not gzip answered 500 ``internal_error`` with a zlib traceback in the log).

Every mutation reads its body through one function (``server.routes._read_json``); a body whose
``Content-Encoding`` does not decode (gzip, deflate: aiohttp decodes both) is answered like any
body that is not JSON — 400 ``invalid_json`` (API.md "HTTP API" errors) — on every route, nothing
is appended, no ERROR is logged, and the 500 counter of ``/metrics`` does not move. ``br`` and
``zstd`` bodies are refused by aiohttp's parser before the application (its plain-text 400, as for
any request that is not HTTP: docs/RELIABILITY.md row 21); they are checked here not to be 500s.
A socket whose peer closes right after the upgrade ends quietly (it was an AssertionError).
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import zlib

import pytest
from aiohttp import WSMsgType

from server.routes import MUTATIONS
from tests.server.inprocess import InProcess, running_app

UNREADABLE: list[tuple[str, bytes]] = [
    ("gzip", b"notgzip"),
    ("gzip", b"\x1f\x8b\x08\x00" + b"\x00" * 40),  # a gzip header, then garbage
    ("deflate", b"notdeflate"),
    ("GZIP", b"\xff" * 10),
]


async def _paths(srv: InProcess) -> list[tuple[str, str]]:
    d = await srv.create("alice")
    values = {"draft_id": d, "user_id": "bob", "id": d}
    out = []
    for m in MUTATIONS:
        path = m.path
        for name, value in values.items():
            path = path.replace("{" + name + "}", value)
        assert "{" not in path, m.path
        out.append((m.method, path))
    return out


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


async def _fives(srv: InProcess) -> float:
    async with srv.client.get("/metrics") as r:
        text = await r.text()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("ringlog_http_request_duration_seconds_count") and 'status="500"' in line
    )


@pytest.mark.parametrize(("encoding", "data"), UNREADABLE)
async def test_an_undecodable_body_is_invalid_json_on_every_mutation(
    encoding: str, data: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_app() as srv:
        paths = await _paths(srv)
        before = len(await srv.store.read_all(0, 10_000))
        for method, path in paths:
            headers = {
                "X-User-Id": "alice",
                "Content-Type": "application/json",
                "Content-Encoding": encoding,
                "Connection": "close",  # aiohttp drops a connection whose body failed to decode
            }
            async with srv.client.request(method, path, data=data, headers=headers) as r:
                body = await r.json(content_type=None)
                assert (r.status, body["error"]["code"]) == (400, "invalid_json"), (method, path, body)
                assert "could not be read" in body["error"]["message"]
        assert len(await srv.store.read_all(0, 10_000)) == before  # nothing appended
        assert await _fives(srv) == 0
    assert _errors(caplog) == []


@pytest.mark.parametrize(
    ("encoding", "data"),
    [
        ("br", b'{"title": "T"}'),
        ("zstd", b'{"title": "T"}'),
        ("compress", b'{"title": "T"}'),
        ("gzip, br", b'{"title": "T"}'),
        ("deflate", zlib.compress(b'{"title": "T"}')[:5]),  # a stream cut short: refused at its end
        ("gzip", gzip.compress(b'{"title": "T"}')[:-6]),  # whole data, trailer cut: aiohttp reads it
    ],
)
async def test_bodies_the_parser_refuses_or_reads_leniently_are_never_500(encoding: str, data: bytes) -> None:
    """aiohttp's parser answers these itself (plain-text 400) or decodes the data it has."""
    async with running_app() as srv:
        headers = {
            "X-User-Id": "alice",
            "Content-Type": "application/json",
            "Content-Encoding": encoding,
            "Connection": "close",
        }
        async with srv.client.post("/v1/collab/drafts", data=data, headers=headers) as r:
            assert r.status in (201, 400, 415), (encoding, r.status, await r.text())
            if r.status == 201:
                assert (await r.json())["data"]["title"] == "T"
        assert await _fives(srv) == 0


async def test_a_socket_whose_peer_leaves_right_after_the_upgrade_ends_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running_app() as srv:
        d = await srv.create("alice")
        server = srv.client.server
        for path in (f"/v1/ws/drafts/{d}?user_id=alice", "/v1/ws?user_id=alice"):
            for _ in range(10):  # the upgrade request, then gone before the 101 is read
                _reader, writer = await asyncio.open_connection(server.host, server.port)
                writer.write(
                    f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
                )
                writer.transport.abort()
            for _ in range(3):
                ws = await srv.client.ws_connect(path)
                await ws.close()
        async with srv.client.ws_connect(f"/v1/ws/drafts/{d}?user_id=alice") as ws:  # still serving
            msg = await ws.receive(timeout=10)
            assert msg.type == WSMsgType.TEXT and '"connected"' in msg.data
        assert await _fives(srv) == 0
    assert [m for m in _errors(caplog) if "AssertionError" in m or "Error handling" in m] == []
