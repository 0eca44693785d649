"""``GET /v1/ws`` in-process (API.md v2 "One socket, many drafts"): the real app on a MemoryStore."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from yarl import URL

from eventstore.errors import StoreUnavailable
from eventstore.memory import MemoryStore
from server.params import MAX_SEQ
from server.state import AppState
from server.ws_mux import MuxSession, MuxSubscription
from tests.server.wsclient import OP_CLOSE, OP_TEXT, Client, raw_connect, serving_app
from tests.serverproc import make_token

SETTINGS = {
    "max_sockets_per_user": 2,
    "ws_flood_limit": 20,
    "jwt_leeway": 0.0,
    "max_subscriptions_per_socket": 3,
}


class Mux:
    """A ``/v1/ws`` client: sends JSON, receives messages, sorts events by draft."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.received: list[dict[str, Any]] = []
        self.keep_presence = False

    async def send(self, message: Any) -> None:
        await self.ws.send_str(message if isinstance(message, str) else orjson.dumps(message).decode())

    async def recv(self) -> dict[str, Any]:
        """The next message; presence messages (API.md v2) are skipped unless ``keep_presence``."""
        for _ in range(10_000):
            msg = await self.ws.receive(timeout=10)
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            message: dict[str, Any] = msg.json()
            if self.keep_presence or message["type"] not in ("presence", "presence_sync"):
                self.received.append(message)
                return message
        raise AssertionError("only presence messages")

    async def until(self, predicate: Any, after: int | None = None, limit: int = 5000) -> dict[str, Any]:
        """Receive until a message satisfies ``predicate``; return it. With ``after``, the
        messages already received from that index on are looked at first."""
        if after is not None:
            for message in self.received[after:]:
                if predicate(message):
                    return message
        for _ in range(limit):
            message = await self.recv()
            if predicate(message):
                return message
        raise AssertionError("no such message")

    async def subscribe(self, draft_id: str, since: int | None = None) -> dict[str, Any]:
        message: dict[str, Any] = {"type": "subscribe", "draft_id": draft_id}
        if since is not None:
            message["since"] = since
        await self.send(message)
        return await self.until(
            lambda m: m.get("draft_id") == draft_id and m["type"] in ("subscribed", "error")
        )

    def seqs(self, draft_id: str) -> list[int]:
        return [m["seq"] for m in self.received if "seq" in m and m.get("draft_id") == draft_id]


@pytest.fixture
async def app() -> AsyncIterator[tuple[Client, MemoryStore]]:
    timeout = aiohttp.ClientTimeout(total=30)
    async with serving_app(**SETTINGS) as (server, store), aiohttp.ClientSession(timeout=timeout) as http:
        yield Client(server, http), store


async def connect(c: Client, query: str = "user_id=alice", **kwargs: Any) -> Mux:
    ws = await c.http.ws_connect(c.server.make_url(f"/v1/ws?{query}"), **kwargs)
    mux = Mux(ws)
    connected = await mux.recv()
    assert connected["type"] == "connected" and set(connected) == {"type", "user_id", "ts"}, connected
    return mux


async def test_catch_up_then_live_for_each_draft(app: tuple[Client, MemoryStore]) -> None:
    c, _ = app
    d1, d2 = await c.create("alice"), await c.create("alice")
    for i in range(3):
        await c.segment(d1, "alice", f"a{i}")
    mux = await connect(c)
    assert await mux.subscribe(d1, since=1) == {"type": "subscribed", "draft_id": d1, "head_seq": 4}
    assert await mux.subscribe(d2) == {"type": "subscribed", "draft_id": d2, "head_seq": 1}
    await mux.until(lambda m: m.get("seq") == 4 and m["draft_id"] == d1, after=0)
    await c.segment(d2, "alice", "live2")
    await c.segment(d1, "alice", "live1")
    await mux.until(lambda m: m.get("seq") == 5 and m["draft_id"] == d1)
    assert mux.seqs(d1) == [2, 3, 4, 5]
    assert mux.seqs(d2) == [2]
    await mux.ws.close()


async def test_per_draft_order_under_concurrent_writers(app: tuple[Client, MemoryStore]) -> None:
    """Subscriptions made while writers append to every draft: each draft's events once, in order."""
    c, _ = app
    drafts = [await c.create("alice") for _ in range(3)]
    mux = await connect(c)

    async def writer(d: str) -> None:
        for i in range(40):
            await c.segment(d, "alice", f"w{i}")

    writers = [asyncio.create_task(writer(d)) for d in drafts for _ in range(2)]
    since = {}
    for d in drafts:
        await asyncio.sleep(0)  # let the writers interleave with the subscriptions
        since[d] = 1
        assert (await mux.subscribe(d, since=1))["type"] == "subscribed"
    await asyncio.gather(*writers)
    heads = {d: 81 for d in drafts}
    for d in drafts:
        await mux.until(lambda m, d=d: m.get("draft_id") == d and m.get("seq") == heads[d], after=0)
    for d in drafts:
        assert mux.seqs(d) == list(range(since[d] + 1, heads[d] + 1)), d
    await mux.ws.close()


async def test_unsubscribe_no_event_of_the_draft_after_it(app: tuple[Client, MemoryStore]) -> None:
    c, _ = app
    d, marker = await c.create("alice"), await c.create("alice")
    mux = await connect(c)
    assert (await mux.subscribe(marker))["type"] == "subscribed"
    done = asyncio.Event()

    async def writer() -> None:
        for i in range(300):
            if done.is_set():
                return
            await c.segment(d, "alice", f"w{i}")

    task = asyncio.create_task(writer())
    for _ in range(5):
        assert (await mux.subscribe(d, since=0))["type"] == "subscribed"
        await mux.until(lambda m: m.get("draft_id") == d and "seq" in m)
        await mux.send({"type": "unsubscribe", "draft_id": d})
        await mux.until(lambda m: m == {"type": "unsubscribed", "draft_id": d})
        cut = len(mux.received)
        seq = await c.segment(marker, "alice", "marker")  # the writer goes on meanwhile
        await mux.until(lambda m, seq=seq: m.get("draft_id") == marker and m.get("seq") == seq)
        assert [m for m in mux.received[cut:] if m.get("draft_id") == d] == []
    done.set()
    await task
    await mux.send({"type": "unsubscribe", "draft_id": d})  # idempotent
    assert await mux.recv() == {"type": "unsubscribed", "draft_id": d}
    await mux.ws.close()


async def test_refusals_keep_the_socket_and_other_subscriptions(app: tuple[Client, MemoryStore]) -> None:
    c, _ = app
    d = await c.create("alice")
    bobs = await c.create("bob")
    mux = await connect(c)
    assert (await mux.subscribe(d))["type"] == "subscribed"
    refused = {
        ("draft_" + "0" * 26, None): "not_found",
        ("not-a-draft-id", None): "not_found",
        ("", None): "not_found",
        (bobs, None): "forbidden",
        (d, 2): "invalid_since",
        (d, -1): "invalid_since",
        (d, MAX_SEQ + 1): "invalid_since",
    }
    for (draft_id, since), code in refused.items():
        error = await mux.subscribe(draft_id, since)
        assert (error["type"], error["code"], error["draft_id"]) == ("error", code, draft_id), error
    seq = await c.segment(d, "alice", "still flowing")
    assert (await mux.recv())["seq"] == seq
    await mux.ws.close()


async def test_subscription_cap_and_refused_resubscribe_changes_nothing(
    app: tuple[Client, MemoryStore],
) -> None:
    c, _ = app
    drafts = [await c.create("alice") for _ in range(4)]
    metrics = c.server.app[AppState.KEY].metrics
    mux = await connect(c)
    for d in drafts[:3]:
        assert (await mux.subscribe(d))["type"] == "subscribed"
    assert metrics.subscriptions._value.get() == 3
    error = await mux.subscribe(drafts[3])
    assert (error["code"], error["draft_id"]) == ("too_many_subscriptions", drafts[3])
    # the order of the checks (docs/API.md): the message's form, then the cap, then the draft
    for unknown in ("draft_" + "0" * 20, "nope"):
        error = await mux.subscribe(unknown)
        assert (error["code"], error["draft_id"]) == ("too_many_subscriptions", unknown)
    await mux.send({"type": "subscribe", "draft_id": "nope", "since": 1.5})
    error = await mux.until(lambda m: m.get("draft_id") == "nope")
    assert (error["code"], error["draft_id"]) == ("invalid_since", "nope")
    assert (await mux.subscribe(drafts[0], since=0))["type"] == "subscribed"  # not a new one
    assert (await mux.subscribe(drafts[0], since=99))["code"] == "invalid_since"  # refused: goes on
    await mux.send({"type": "unsubscribe", "draft_id": drafts[1]})
    await mux.until(lambda m: m["type"] == "unsubscribed")
    assert (await mux.subscribe(drafts[3]))["type"] == "subscribed"
    seq = await c.segment(drafts[0], "alice", "x")
    await mux.until(lambda m: m.get("draft_id") == drafts[0] and m.get("seq") == seq)
    assert mux.seqs(drafts[0]) == [1, 2]
    await mux.ws.close()
    for _ in range(100):
        if metrics.subscriptions._value.get() == 0:
            break
        await asyncio.sleep(0.05)
    assert metrics.subscriptions._value.get() == 0


async def test_resubscribe_restarts_from_the_new_since(app: tuple[Client, MemoryStore]) -> None:
    c, _ = app
    d = await c.create("alice")
    for i in range(4):
        await c.segment(d, "alice", f"s{i}")
    mux = await connect(c)
    assert (await mux.subscribe(d, since=0))["type"] == "subscribed"
    await mux.until(lambda m: m.get("seq") == 5)
    cut = len(mux.received)
    assert await mux.subscribe(d, since=2) == {"type": "subscribed", "draft_id": d, "head_seq": 5}
    await mux.until(lambda m: m.get("seq") == 5)
    assert [m["seq"] for m in mux.received[cut:] if "seq" in m] == [3, 4, 5]
    await mux.ws.close()


async def test_revocation_ends_only_that_subscription(app: tuple[Client, MemoryStore]) -> None:
    c, _ = app
    d1, d2 = await c.create("alice"), await c.create("alice")
    for d in (d1, d2):
        await c.post(f"/v1/collab/drafts/{d}/collaborators", "alice", {"user_id": "bob", "role": "viewer"})
    mux = await connect(c, "user_id=bob")
    for d in (d1, d2):
        assert (await mux.subscribe(d))["type"] == "subscribed"
    async with c.http.delete(
        c.server.make_url(f"/v1/collab/drafts/{d1}/collaborators/bob"), headers={"X-User-Id": "alice"}
    ) as r:
        assert r.status == 200
    removal = await mux.recv()
    assert (removal["type"], removal["draft_id"]) == ("collab.collaborator_removed", d1)
    error = await mux.recv()
    assert (error["type"], error["code"], error["draft_id"]) == ("error", "access_revoked", d1)
    await c.segment(d1, "alice", "not for bob")
    seq = await c.segment(d2, "alice", "for bob")
    await mux.until(lambda m: m.get("draft_id") == d2 and m.get("seq") == seq)
    assert mux.seqs(d1) == [removal["seq"]]
    assert mux.seqs(d2) == [seq]
    assert (await mux.subscribe(d1))["code"] == "forbidden"
    await mux.ws.close()


BAD_MESSAGES: list[tuple[str, str, bool]] = [
    ("not json", "bad_message", False),
    ("", "bad_message", False),
    ("[1, 2]", "bad_message", False),
    ('"subscribe"', "bad_message", False),
    ("null", "bad_message", False),
    ("{}", "bad_message", False),
    ('{"type": 7}', "bad_message", False),
    ('{"type": null}', "bad_message", False),
    ('{"type": "publish"}', "bad_message", False),
    ('{"type": "subscribe"}', "bad_message", False),
    ('{"type": "subscribe", "draft_id": 5}', "bad_message", False),
    ('{"type": "subscribe", "draft_id": ["d"]}', "bad_message", False),
    ('{"type": "unsubscribe"}', "bad_message", False),
    ('{"type": "unsubscribe", "draft_id": {}}', "bad_message", False),
    ('{"type": "subscribe", "draft_id": "D", "since": "1"}', "invalid_since", True),
    ('{"type": "subscribe", "draft_id": "D", "since": 1.5}', "invalid_since", True),
    ('{"type": "subscribe", "draft_id": "D", "since": 1.0}', "invalid_since", True),
    ('{"type": "subscribe", "draft_id": "D", "since": true}', "invalid_since", True),
    ('{"type": "subscribe", "draft_id": "D", "since": -5}', "invalid_since", True),
    ('{"type": "subscribe", "draft_id": "D", "since": 9223372036854775807}', "invalid_since", True),
    ('{"type": "subscribe", "draft_id": "D", "since": 99999999999999999999999}', "invalid_since", True),
    ('{"type": "subscribe", "draft_id": "D", "since": [1]}', "invalid_since", True),
    # whole messages JSON parsers cannot represent: a number that overflows a double, a lone
    # surrogate escape in any string (docs/API.md: "a message is one JSON object", no draft_id)
    ('{"type": "subscribe", "draft_id": "D", "since": 1e999}', "bad_message", False),
    ('{"type": "subscribe", "draft_id": "D", "since": -1e999}', "bad_message", False),
    ('{"type": "subscribe", "draft_id": "D", "note": "\\ud800"}', "bad_message", False),
    ('{"type": "subscribe", "draft_id": "D\\ud800"}', "bad_message", False),
]


async def test_bad_messages_of_every_kind() -> None:
    async with serving_app(ws_flood_limit=0) as (server, _), aiohttp.ClientSession() as http:
        await _bad_messages(Client(server, http))


async def _bad_messages(c: Client) -> None:
    d = await c.create("alice")
    mux = await connect(c)
    assert (await mux.subscribe(d))["type"] == "subscribed"
    for text, code, names_draft in BAD_MESSAGES:
        await mux.send(text.replace('"D"', f'"{d}"'))
        error = await mux.recv()
        assert (error["type"], error["code"]) == ("error", code), (text, error)
        assert error.get("draft_id") == (d if names_draft else None), (text, error)
        assert "Traceback" not in error["message"]
    await mux.ws.send_bytes(b'{"type": "ping"}')
    assert (await mux.recv())["code"] == "bad_message"
    await mux.send({"type": "ping"})
    assert (await mux.recv())["type"] == "pong"
    seq = await c.segment(d, "alice", "the subscription survived")
    assert (await mux.recv())["seq"] == seq
    await mux.ws.close()


async def test_a_message_over_4_kib_closes_1009_as_on_the_per_draft_socket(
    app: tuple[Client, MemoryStore],
) -> None:
    c, _ = app
    mux = await connect(c)
    await mux.send({"type": "ping", "pad": "x" * 5000})
    msg = await mux.ws.receive(timeout=10)
    assert msg.type == aiohttp.WSMsgType.CLOSE and mux.ws.close_code == 1009


async def test_text_that_is_not_utf8_closes_1007_as_on_the_per_draft_socket(
    app: tuple[Client, MemoryStore],
) -> None:
    c, _ = app
    sock = await raw_connect(c.server, "/v1/ws?user_id=alice")
    try:
        assert (await sock.read_json())["type"] == "connected"
        sock.send(b'{"type": "ping", "x": "\xff"}')
        close, after = await sock.until_close_then_eof()
        assert close.close_code == 1007 and after == []
    finally:
        sock.close()


async def test_admission_like_the_per_draft_socket(app: tuple[Client, MemoryStore]) -> None:
    c, _ = app
    async with c.http.ws_connect(c.server.make_url("/v1/ws")) as ws:
        error = (await ws.receive(timeout=10)).json()
        assert error["code"] == "unauthorized"
        assert (await ws.receive(timeout=10)).type == aiohttp.WSMsgType.CLOSE and ws.close_code == 1008
    async with c.http.get(c.server.make_url("/v1/ws?user_id=a&user_id=b")) as r:
        assert r.status == 401  # given twice: refused before the upgrade (server/request_text.py)
    async with c.http.get(URL(f"{c.server.make_url('/v1/ws')}?access_token=%FF%FE", encoded=True)) as r:
        assert r.status == 401  # not UTF-8: the same guard
    # the socket counts once toward --max-sockets-per-user (2), however many drafts it follows
    d = await c.create("alice")
    first = await connect(c)
    for since in (0, 1):
        await first.subscribe(d, since)
    second = await connect(c)
    async with c.http.ws_connect(c.server.make_url("/v1/ws?user_id=alice")) as third:
        error = (await third.receive(timeout=10)).json()
        assert error["code"] == "too_many_sockets"
    for mux in (first, second):
        await mux.ws.close()


async def test_origin_is_checked_before_the_upgrade() -> None:
    async with (
        serving_app(allowed_origins=("https://app.example",)) as (server, _),
        aiohttp.ClientSession() as http,
    ):
        url = server.make_url("/v1/ws?user_id=alice")
        async with http.get(url, headers={"Origin": "https://evil.example"}) as r:
            assert r.status == 403
        async with http.ws_connect(url, headers={"Origin": "https://app.example"}) as ws:
            assert (await ws.receive(timeout=10)).json()["type"] == "connected"


async def test_4401_when_the_token_expires_and_flood_1008(app: tuple[Client, MemoryStore]) -> None:
    c, _ = app
    token = make_token("alice", expires_in=1.5)
    mux = await connect(c, f"access_token={token}")
    error = await mux.recv()
    assert (error["code"], (await mux.ws.receive(timeout=10)).type) == (
        "token_expired",
        aiohttp.WSMsgType.CLOSE,
    )
    assert mux.ws.close_code == 4401
    mux = await connect(c)
    for _ in range(30):
        await mux.send({"type": "ping"})
    while (msg := await mux.ws.receive(timeout=10)).type == aiohttp.WSMsgType.TEXT:
        last = msg.json()
    assert last["code"] == "rate_limited" and mux.ws.close_code == 1008


async def test_a_socket_too_slow_for_its_drafts_is_1013_then_resubscribes_exactly() -> None:
    """One backlog bound for the sum of the drafts; the client resumes each from its own last seq."""
    settings = {"ws_queue_size": 64, "ws_queue_bytes": 64 * 1024}
    async with serving_app(**settings) as (server, _), aiohttp.ClientSession() as http:
        c = Client(server, http)
        drafts = [await c.create("alice") for _ in range(3)]
        metrics = server.app[AppState.KEY].metrics
        sock = await raw_connect(server, "/v1/ws?user_id=alice", rcvbuf=4096)
        try:
            for d in drafts:
                sock.send(orjson.dumps({"type": "subscribe", "draft_id": d, "since": 0}))
            heads = dict.fromkeys(drafts, 1)
            for i in range(3000):  # until the socket is closed for falling behind
                d = drafts[i % 3]
                heads[d] = await c.segment(d, "alice", "z" * 10_000)
                if metrics.slow_closes._value.get() >= 1:
                    break
            assert metrics.slow_closes._value.get() == 1
            close, after = await sock.until_close_then_eof()
            assert close.close_code == 1013 and after == []
            got: dict[str, list[int]] = {d: [] for d in drafts}
            for frame in sock.frames:
                if frame.opcode == OP_TEXT and "seq" in (m := frame.json()):
                    got[m["draft_id"]].append(m["seq"])
        finally:
            sock.close()
        assert sock.frames[-1].opcode == OP_CLOSE
        mux = await connect(c)
        for d in drafts:
            last = got[d][-1] if got[d] else 0
            assert got[d] == list(range(1, last + 1))
            assert (await mux.subscribe(d, since=last))["type"] == "subscribed"
        for d in drafts:
            if got[d][-1:] != [heads[d]]:
                await mux.until(lambda m, d=d: m.get("draft_id") == d and m.get("seq") == heads[d], after=0)
            assert got[d] + mux.seqs(d) == list(range(1, heads[d] + 1))
        await mux.ws.close()


async def test_metrics_name_the_subscriptions_gauge(app: tuple[Client, MemoryStore]) -> None:
    c, _ = app
    d = await c.create("alice")
    mux = await connect(c)
    await mux.subscribe(d)
    async with c.http.get(c.server.make_url("/metrics")) as r:
        body = await r.text()
    assert re.search(r"^ringlog_ws_subscriptions 1\.0$", body, re.M), body
    await mux.ws.close()


async def test_hooks_for_presence_and_the_feed_plug_in() -> None:
    """A step between ``subscribed`` and the first event, a handler in the dispatch table, and a
    call when a subscription ends (what presence and ``subscribe_me`` will use)."""
    ended: list[tuple[str, str]] = []

    async def presence_sync(session: MuxSession, sub: MuxSubscription) -> None:
        if sub.draft_id == broken:
            raise RuntimeError("hook bug")
        await asyncio.sleep(0.05)  # an await here must not let an event through first
        session.send({"type": "hook_ran", "draft_id": sub.draft_id})  # (the real presence_sync is skipped)

    async def echo(session: MuxSession, message: dict[str, Any]) -> None:
        session.send({"type": "echoed", "user_id": session.user_id})

    async with serving_app() as (server, _), aiohttp.ClientSession() as http:
        mux_hooks = server.app[AppState.KEY].mux
        mux_hooks.before_events.append(presence_sync)
        mux_hooks.handlers["echo"] = echo
        mux_hooks.on_end.append(lambda _s, sub, reason: ended.append((sub.draft_id, reason)))
        mux_hooks.on_close.append(lambda session: ended.append(("socket", str(len(session.subscriptions)))))
        c = Client(server, http)
        d, broken = await c.create("alice"), await c.create("alice")
        await c.segment(d, "alice", "one")
        mux = await connect(c)
        await mux.send({"type": "subscribe", "draft_id": d, "since": 0})
        kinds = [(await mux.recv())["type"] for _ in range(4)]
        assert kinds == ["subscribed", "hook_ran", "collab.draft_created", "collab.segment_added"]
        await mux.send({"type": "echo"})
        assert await mux.recv() == {"type": "echoed", "user_id": "alice"}
        error = await mux.subscribe(broken)
        assert error["type"] == "subscribed"
        error = await mux.recv()
        assert (error["code"], error["draft_id"]) == ("internal_error", broken)
        await mux.subscribe(d, since=2)
        await mux.send({"type": "unsubscribe", "draft_id": d})
        await mux.until(lambda m: m["type"] == "unsubscribed")
        assert ended == [(broken, "failed"), (d, "resubscribed"), (d, "unsubscribed")]
        assert server.app[AppState.KEY].metrics.subscriptions._value.get() == 0
        await mux.subscribe(d)
        await mux.ws.close()
        for _ in range(100):
            if len(ended) == 5:
                break
            await asyncio.sleep(0.05)
        assert ended[3:] == [(d, "socket_closed"), ("socket", "0")]


async def test_1001_on_shutdown_with_subscriptions_open() -> None:
    async with serving_app() as (server, _), aiohttp.ClientSession() as http:
        c = Client(server, http)
        d = await c.create("alice")
        mux = await connect(c)
        assert (await mux.subscribe(d))["type"] == "subscribed"
        assert (await mux.ws.receive(timeout=10)).json()["type"] == "presence_sync"
        closing = asyncio.ensure_future(server.close())
        assert (await mux.ws.receive(timeout=10)).type == aiohttp.WSMsgType.CLOSE
        assert mux.ws.close_code == 1001
        await mux.ws.close()
        await asyncio.wait_for(closing, 20)
        assert server.app[AppState.KEY].metrics.subscriptions._value.get() == 0


async def test_store_trouble_refuses_one_subscription_only(
    app: tuple[Client, MemoryStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    c, _ = app
    d, other = await c.create("alice"), await c.create("alice")
    projector = c.server.app[AppState.KEY].projector
    mux = await connect(c)
    assert (await mux.subscribe(d))["type"] == "subscribed"
    real_get = projector.get
    failure = ["down"]

    async def failing(draft_id: str, *args: Any) -> Any:
        if draft_id != other:
            return await real_get(draft_id, *args)
        raise StoreUnavailable("down") if failure[0] == "down" else KeyError("bug")

    monkeypatch.setattr(projector, "get", failing)
    error = await mux.subscribe(other)
    assert (error["code"], error["draft_id"], error["retry_after"]) == ("unavailable", other, 1)
    failure[0] = "bug"
    error = await mux.subscribe(other)
    assert (error["code"], error["draft_id"]) == ("internal_error", other)
    assert "bug" not in error["message"]
    seq = await c.segment(d, "alice", "still here")
    assert (await mux.recv())["seq"] == seq
    await mux.ws.close()
