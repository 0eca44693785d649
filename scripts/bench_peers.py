"""Baseline servers for the benchmarks (not part of ringlog): one process per baseline.

    python scripts/bench_peers.py noop|raw|spec|socketio [--port 0]

Every kind prints ``listening on http://HOST:PORT`` when ready and serves:

* ``POST /{anything}`` — ``noop``: a do-nothing handler (the HTTP ceiling); the others
  broadcast one event envelope built from the body's ``content`` (same shape and size as a
  ringlog ``collab.segment_added`` event) to every socket, then answer 201;
* ``GET /ws`` — a WebSocket that receives the broadcasts (``socketio``: ``/socket.io/``);
* ``GET /dump?n=N`` (``raw`` only) — a WebSocket that receives N preframed events at once,
  1,000 frames per write (the client's own ceiling for catch-up; the frames are built on the
  first request for N and reused, so a warm-up request keeps their building out of the timing).
  The events are byte for byte the shape ringlog stores for ``bench.py``'s catch-up log
  (:func:`dump_event`: sorted keys, the same draft id), so the client's work per event is the same.

How each kind broadcasts:

* ``raw``: serialise once with orjson, frame once, ``transport.write`` per socket (the ceiling);
* ``spec``: the spec's reference hub (SPEC-phase-6.2.md ``DraftHub``): a set of sockets and
  ``await ws.send_json(message)`` in a loop, no persistence, no sequencing guarantees on resume;
* ``socketio``: python-socketio ``AsyncServer`` (aiohttp mode), every client in one room,
  ``await sio.emit("event", message, room=...)``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import time
from typing import Any

import orjson
from aiohttp import web

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))

from projections.event_types import EventType
from server.frames import text_frame

DRAFT = "draft_bench"


def envelope(seq: int, content: str) -> dict[str, Any]:
    """A ``collab.segment_added`` event shaped exactly like ringlog's."""
    ts = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    return {
        "type": EventType.SEGMENT_ADDED,
        "draft_id": DRAFT,
        "seq": seq,
        "ts": ts,
        "user_id": "bench-owner",
        "data": {
            "segment": {
                "id": seq,
                "author_user_id": "bench-owner",
                "content": content,
                "position": seq,
                "created_at": ts,
            }
        },
    }


DUMP_DRAFT = "draft_" + "ca7c" * 5
"""The draft id ``bench.py``'s catch-up log uses (ringlog's id form: the same length)."""


def dump_event(seq: int) -> bytes:
    """One event of the catch-up dump: the bytes ringlog stores for the catch-up benchmark's
    ``collab.segment_added`` events (``bench.py`` ``build_draft_log``): canonical JSON with sorted
    keys, the same draft id, sizes and fields, so that the client does the same work for each
    (its search for ``"seq":`` scans up to where the key is: near the end of a sorted envelope)."""
    event = envelope(seq, "x" * 100)
    event["draft_id"] = DUMP_DRAFT
    event["ts"] = event["data"]["segment"]["created_at"] = "2025-12-23T20:30:45.123Z"
    event["data"]["segment"]["position"] = seq - 1
    return orjson.dumps(event, option=orjson.OPT_SORT_KEYS)


async def _content(request: web.Request) -> str:
    body = orjson.loads(await request.read())
    return str(body.get("content", ""))


async def noop(request: web.Request) -> web.Response:
    return web.Response(status=201, body=b'{"data":{}}', content_type="application/json")


def raw_app() -> web.Application:
    sockets: set[asyncio.Transport] = set()
    seqs = itertools.count(1)

    async def publish(request: web.Request) -> web.Response:
        frame = text_frame(orjson.dumps(envelope(next(seqs), await _content(request))))
        for transport in tuple(sockets):
            if not transport.is_closing():
                transport.write(frame)
        return web.Response(status=201, body=b'{"data":{}}', content_type="application/json")

    async def socket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        transport = request.transport
        assert transport is not None
        sockets.add(transport)
        try:
            async for _ in ws:
                pass
        finally:
            sockets.discard(transport)
        return ws

    pages: dict[int, list[bytes]] = {}

    def dump_pages(n: int) -> list[bytes]:
        """N events, framed and joined 1,000 to a page, built once per N (not per request)."""
        if n not in pages:
            pages.clear()
            pages[n] = [
                b"".join(text_frame(dump_event(s)) for s in range(start, min(n, start + 999) + 1))
                for start in range(1, n + 1, 1000)
            ]
        return pages[n]

    async def dump(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        n = int(request.query.get("n", "1000"))
        transport = request.transport
        assert transport is not None
        for chunk in dump_pages(n):
            transport.write(chunk)
            if transport.get_write_buffer_size() > 256 * 1024:
                await transport.get_protocol()._drain_helper()  # type: ignore[attr-defined]
        async for _ in ws:
            pass
        return ws

    app = web.Application()
    app.router.add_get("/ws", socket)
    app.router.add_get("/dump", dump)
    app.router.add_post("/{tail:.*}", publish)
    return app


def spec_app() -> web.Application:
    class DraftHub:
        """In-memory room-per-draft broadcast hub (the spec's reference, on aiohttp)."""

        def __init__(self) -> None:
            self._rooms: dict[str, set[web.WebSocketResponse]] = {}

        async def register(self, draft_id: str, ws: web.WebSocketResponse) -> None:
            self._rooms.setdefault(draft_id, set()).add(ws)

        async def unregister(self, draft_id: str, ws: web.WebSocketResponse) -> None:
            if draft_id in self._rooms:
                self._rooms[draft_id].discard(ws)

        async def broadcast(self, draft_id: str, message: dict[str, Any]) -> None:
            if draft_id not in self._rooms:
                return
            dead = set()
            for ws in self._rooms[draft_id]:
                try:
                    await ws.send_json(message)
                except Exception:
                    dead.add(ws)
            self._rooms[draft_id] -= dead

    hub = DraftHub()
    seqs = itertools.count(1)

    async def publish(request: web.Request) -> web.Response:
        await hub.broadcast(DRAFT, envelope(next(seqs), await _content(request)))
        return web.Response(status=201, body=b'{"data":{}}', content_type="application/json")

    async def socket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        await hub.register(DRAFT, ws)
        try:
            async for _ in ws:
                pass
        finally:
            await hub.unregister(DRAFT, ws)
        return ws

    app = web.Application()
    app.router.add_get("/ws", socket)
    app.router.add_post("/{tail:.*}", publish)
    return app


def socketio_app() -> web.Application:
    import socketio

    sio = socketio.AsyncServer(async_mode="aiohttp", cors_allowed_origins="*")
    app = web.Application()
    sio.attach(app)
    seqs = itertools.count(1)

    @sio.event  # type: ignore[untyped-decorator]
    async def connect(sid: str, environ: dict[str, Any]) -> None:
        await sio.enter_room(sid, DRAFT)

    async def publish(request: web.Request) -> web.Response:
        await sio.emit("event", envelope(next(seqs), await _content(request)), room=DRAFT)
        return web.Response(status=201, body=b'{"data":{}}', content_type="application/json")

    app.router.add_post("/{tail:.*}", publish)
    return app


def build(kind: str) -> web.Application:
    if kind == "noop":
        app = web.Application()
        app.router.add_post("/{tail:.*}", noop)
        return app
    return {"raw": raw_app, "spec": spec_app, "socketio": socketio_app}[kind]()


async def serve(kind: str, port: int) -> None:
    runner = web.AppRunner(build(kind), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=4096)
    await site.start()
    server = getattr(site, "_server", None)
    bound = server.sockets[0].getsockname()[1] if server is not None else port
    print(f"listening on http://127.0.0.1:{bound}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=["noop", "raw", "spec", "socketio"])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    try:
        import uvloop  # same event loop as `ringlog serve` when available

        uvloop.run(serve(args.kind, args.port))
    except ImportError:
        asyncio.run(serve(args.kind, args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
