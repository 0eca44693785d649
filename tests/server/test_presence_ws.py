"""Presence on the per-draft socket and ``GET …/presence`` (API.md v2 "Presence"), in process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from eventstore.memory import MemoryStore
from tests.server.wsclient import Client, serving_app

WAIT = 10.0


@pytest.fixture
async def app() -> AsyncIterator[tuple[Client, MemoryStore]]:
    timeout = aiohttp.ClientTimeout(total=30)
    async with serving_app() as (server, store), aiohttp.ClientSession(timeout=timeout) as http:
        yield Client(server, http), store


async def team(c: Client) -> str:
    """alice's draft with bob (contributor) and vera (viewer)."""
    d = await c.create("alice")
    await c.post(f"/v1/collab/drafts/{d}/collaborators", "alice", {"user_id": "bob", "role": "contributor"})
    await c.post(f"/v1/collab/drafts/{d}/collaborators", "alice", {"user_id": "vera", "role": "viewer"})
    return d


async def message(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    msg = await ws.receive(timeout=WAIT)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    parsed: dict[str, Any] = msg.json()
    return parsed


async def opened(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    """Read ``connected`` and the ``presence_sync`` that must come right after it."""
    assert (await message(ws))["type"] == "connected"
    sync = await message(ws)
    assert sync["type"] == "presence_sync", sync
    return sync


async def presence(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    """The next presence message (events in between are skipped)."""
    for _ in range(1000):
        got = await message(ws)
        if got["type"] == "presence":
            return got
    raise AssertionError("no presence message")


async def quiet(ws: aiohttp.ClientWebSocketResponse) -> list[dict[str, Any]]:
    """Everything until a pong: what the server sent before it answered our ping."""
    await ws.send_json({"type": "ping"})
    out = []
    for _ in range(1000):
        got = await message(ws)
        if got["type"] == "pong":
            return out
        out.append(got)
    raise AssertionError("no pong")


async def get_presence(c: Client, d: str, user: str) -> tuple[int, Any]:
    async with c.http.get(
        c.server.make_url(f"/v1/collab/drafts/{d}/presence"), headers={"X-User-Id": user}
    ) as r:
        return r.status, await r.json()


async def present(c: Client, d: str, user: str) -> dict[str, Any]:
    """``GET …/presence`` as ``user``, which must answer 200: each present user's state, by user
    id, in the order the server lists them."""
    status, body = await get_presence(c, d, user)
    assert status == 200, body
    return {m["user_id"]: m["state"] for m in body["data"]}


async def remove_bob(c: Client, d: str) -> None:
    """alice removes bob from ``d`` (REST)."""
    async with c.http.delete(
        c.server.make_url(f"/v1/collab/drafts/{d}/collaborators/bob"), headers={"X-User-Id": "alice"}
    ) as r:
        assert r.status == 200


async def subscribe(ws: aiohttp.ClientWebSocketResponse, d: str) -> None:
    """Subscribe ``d`` on a /v1/ws socket from the head; the next message must be ``subscribed``."""
    await ws.send_json({"type": "subscribe", "draft_id": d})
    assert (await message(ws))["type"] == "subscribed"


async def test_sync_comes_before_any_event_even_during_catch_up(app: tuple[Client, MemoryStore]) -> None:
    c, _ = app
    d = await team(c)
    for i in range(300):
        await c.segment(d, "alice", f"s{i}")
    async with c.ws(d, "user_id=vera") as vera:
        await opened(vera)
        writer = asyncio.ensure_future(asyncio.gather(*(c.segment(d, "alice", f"w{i}") for i in range(20))))
        async with c.ws(d, "since=0&user_id=bob") as bob:
            sync = await opened(bob)  # asserts presence_sync is the message after connected
            assert sync["draft_id"] == d
            assert sorted(m["user_id"] for m in sync["members"]) == ["bob", "vera"]
            assert all(m["state"] == {} and m["since"].endswith("Z") for m in sync["members"])
            await writer
            seqs = []
            while len(seqs) < 323:
                got = await message(bob)
                assert got["type"] != "presence_sync"
                if "seq" in got:
                    seqs.append(got["seq"])
            assert seqs == list(range(1, 324))
        assert (await presence(vera)) | {"ts": None} == {
            "type": "presence",
            "draft_id": d,
            "event": "join",
            "user_id": "bob",
            "state": {},
            "ts": None,
        }


async def test_join_update_leave_and_the_senders_echo(app: tuple[Client, MemoryStore]) -> None:
    c, _ = app
    d = await team(c)
    async with c.ws(d, "user_id=alice") as alice:
        assert [m["user_id"] for m in (await opened(alice))["members"]] == ["alice"]
        async with c.ws(d, "user_id=bob") as bob:
            await opened(bob)
            join = await presence(alice)
            assert (join["event"], join["user_id"], join["state"]) == ("join", "bob", {})
            assert join["ts"].endswith("Z") and "seq" not in join
            await bob.send_json({"type": "presence", "state": {"typing": True}})
            for ws in (alice, bob):  # everyone on the draft, the sender included (its acknowledgement)
                update = await presence(ws)
                assert (update["event"], update["user_id"], update["state"]) == (
                    "update",
                    "bob",
                    {"typing": True},
                )
            await bob.send_json({"type": "presence", "draft_id": d, "state": {"typing": True}})
            assert await quiet(bob) == []  # the same state again: nothing changed, nothing sent
        leave = await presence(alice)
        assert (leave["event"], leave["user_id"], leave["state"]) == ("leave", "bob", None)
        assert list(await present(c, d, "alice")) == ["alice"]


async def test_two_sockets_of_one_user_are_one_entry(app: tuple[Client, MemoryStore]) -> None:
    c, _ = app
    d = await team(c)
    async with c.ws(d, "user_id=alice") as alice:
        await opened(alice)
        async with c.ws(d, "user_id=bob") as bob1:
            await opened(bob1)
            assert (await presence(alice))["event"] == "join"
            async with c.ws(d, "user_id=bob") as bob2:
                sync = await opened(bob2)
                assert sorted(m["user_id"] for m in sync["members"]) == ["alice", "bob"]
                await bob2.send_json({"type": "presence", "state": {"at": 2}})
                assert (await presence(bob1))["state"] == {"at": 2}  # the user's other socket too
                assert list((await present(c, d, "vera")).items()) == [("alice", {}), ("bob", {"at": 2})]
            # one of bob's sockets left: bob is still present, with the state set last
            got = [m for m in await quiet(alice) if m["type"] == "presence"]
            assert [(m["event"], m["user_id"]) for m in got] == [("update", "bob")]
        assert (await presence(alice))["event"] == "leave"


@pytest.mark.parametrize(
    ("sent", "code"),
    [
        ({"type": "presence", "state": [1, 2]}, "bad_message"),
        ({"type": "presence"}, "bad_message"),
        ({"type": "presence", "state": "typing"}, "bad_message"),
        ({"type": "presence", "draft_id": "draft_other", "state": {}}, "bad_message"),
        ({"type": "presence", "state": {"x": "y" * 600}}, "payload_too_large"),
    ],
)
async def test_invalid_presence_is_refused_and_the_socket_stays_open(
    app: tuple[Client, MemoryStore], sent: dict[str, Any], code: str
) -> None:
    c, _ = app
    d = await team(c)
    async with c.ws(d, "user_id=alice") as alice, c.ws(d, "user_id=vera") as vera:
        await opened(alice)
        await opened(vera)
        await alice.send_json({"type": "presence", "state": {"ok": 1}})
        assert (await presence(vera))["state"] == {"ok": 1}
        assert [(m["event"], m["user_id"]) for m in await quiet(alice)] == [
            ("join", "vera"),
            ("update", "alice"),
        ]
        await alice.send_json(sent)
        error = await message(alice)
        assert error["type"] == "error" and error["code"] == code and error["message"], error
        assert await quiet(alice) == []
        assert await quiet(vera) == []  # nothing reached the others
        await c.segment(d, "alice", "still streaming")
        assert (await message(alice))["seq"] == 4
        assert (await present(c, d, "alice"))["alice"] == {"ok": 1}


async def test_updates_beyond_the_rate_are_coalesced_to_the_latest() -> None:
    async with (
        serving_app(presence_rate=1.0) as (server, _),
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
    ):
        c = Client(server, http)
        d = await team(c)
        async with c.ws(d, "user_id=alice") as alice, c.ws(d, "user_id=bob") as bob:
            await opened(alice)
            await opened(bob)
            assert (await presence(alice))["event"] == "join"
            for n in range(10):
                await bob.send_json({"type": "presence", "state": {"n": n}})
            seen = []
            while not seen or seen[-1] != {"n": 9}:
                seen.append((await presence(alice))["state"])
            # a burst of 2, then the newest state once a token is back ([0, 1, 9] unless the
            # sends took seconds); nothing refused, the others dropped as replaced
            assert seen[:2] == [{"n": 0}, {"n": 1}] and len(seen) <= 4, seen
            assert all(m["type"] != "error" for m in await quiet(bob))
            metrics = await (await http.get(server.make_url("/metrics"))).text()
            assert f"ringlog_presence_coalesced_total {10 - len(seen)}.0" in metrics


async def test_revocation_ends_presence_with_a_leave(app: tuple[Client, MemoryStore]) -> None:
    c, _ = app
    d = await team(c)
    async with c.ws(d, "user_id=alice") as alice, c.ws(d, "user_id=bob") as bob:
        await opened(alice)
        await opened(bob)
        assert (await presence(alice))["event"] == "join"
        await remove_bob(c, d)
        removal = await message(alice)
        assert removal["type"] == "collab.collaborator_removed"
        leave = await message(alice)  # the removal, then bob's leave: presence ends with it
        assert (leave["type"], leave["event"], leave["user_id"]) == ("presence", "leave", "bob")
        bob_saw = []
        for _ in range(10):
            msg = await bob.receive(timeout=WAIT)
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            bob_saw.append(msg.json()["type"])
        assert bob_saw == ["collab.collaborator_removed", "error"] and bob.close_code == 4403
        assert list(await present(c, d, "alice")) == ["alice"]


async def test_get_presence_is_for_viewers_only(app: tuple[Client, MemoryStore]) -> None:
    c, _ = app
    d = await team(c)
    async with c.ws(d, "user_id=bob") as bob:
        await opened(bob)
        status, body = await get_presence(c, d, "vera")
        assert status == 200 and body["data"][0]["user_id"] == "bob"
        assert set(body["data"][0]) == {"user_id", "state", "since"}
        status, body = await get_presence(c, d, "mallory")
        assert status == 403 and body["error"]["code"] == "forbidden"
        status, body = await get_presence(c, "draft_doesnotexist0000000000000", "alice")
        assert status == 404 and body["error"]["code"] == "not_found"
        async with c.http.get(c.server.make_url(f"/v1/collab/drafts/{d}/presence")) as r:
            assert r.status == 401


async def test_presence_is_never_in_the_log(app: tuple[Client, MemoryStore]) -> None:
    c, store = app
    d = await team(c)
    async with c.ws(d, "user_id=alice") as alice, c.ws(d, "user_id=bob") as bob:
        await opened(alice)
        await opened(bob)
        for n in range(3):
            await bob.send_json({"type": "presence", "state": {"n": n}})
            assert (await presence(bob))["state"] == {"n": n}
    log = await store.read(d, 0, 1000)
    assert [r.seq for r in log] == [1, 2, 3]
    assert not any(b"presence" in r.body for r in log)
    async with c.http.get(
        c.server.make_url(f"/v1/collab/drafts/{d}/events"),
        params={"since": "0"},
        headers={"X-User-Id": "alice"},
    ) as r:
        body = await r.json()
    assert [e["type"] for e in body["data"]] == [
        "collab.draft_created",
        "collab.collaborator_added",
        "collab.collaborator_added",
    ]
    async with c.ws(d, "since=0&user_id=alice") as replay:  # a replay carries no presence either
        await opened(replay)
        got = await quiet(replay)
        assert [m["seq"] for m in got] == [1, 2, 3]


# -- GET /v1/ws (server/presence_mux.py) ---------------------------------------------------------


@asynccontextmanager
async def mux_socket(c: Client, user: str) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    """A ``/v1/ws`` socket as ``user``, past its ``connected``; closed on leaving."""
    async with c.http.ws_connect(c.server.make_url(f"/v1/ws?user_id={user}")) as ws:
        assert (await message(ws))["type"] == "connected"
        yield ws


async def test_mux_sync_after_subscribed_before_events_and_one_entry_across_socket_kinds(
    app: tuple[Client, MemoryStore],
) -> None:
    c, _ = app
    d = await team(c)
    async with c.ws(d, "user_id=alice") as alice:
        await opened(alice)
        async with mux_socket(c, "bob") as bob_mux:
            await bob_mux.send_json({"type": "subscribe", "draft_id": d, "since": 0})
            assert (await message(bob_mux))["type"] == "subscribed"
            sync = await message(bob_mux)
            assert sync["type"] == "presence_sync" and sync["draft_id"] == d
            assert sorted(m["user_id"] for m in sync["members"]) == ["alice", "bob"]
            assert [(await message(bob_mux))["seq"] for _ in range(3)] == [1, 2, 3]
            assert (await presence(alice))["event"] == "join"
            async with c.ws(d, "user_id=bob") as bob_draft:  # bob twice, two kinds of socket: one entry
                await opened(bob_draft)
                await bob_mux.send_json({"type": "presence", "draft_id": d, "state": {"via": "mux"}})
                for ws in (alice, bob_draft, bob_mux):
                    update = await presence(ws)
                    assert (update["event"], update["user_id"], update["state"]) == (
                        "update",
                        "bob",
                        {"via": "mux"},
                    )
            assert sorted(await present(c, d, "alice")) == ["alice", "bob"]
            # resubscribing is not a leave and a join for the others
            await subscribe(bob_mux, d)
            assert (await message(bob_mux))["type"] == "presence_sync"
            assert await quiet(alice) == []
            await bob_mux.send_json({"type": "unsubscribe", "draft_id": d})
            assert (await message(bob_mux))["type"] == "unsubscribed"
            leave = await presence(alice)
            assert (leave["event"], leave["user_id"]) == ("leave", "bob")
            # presence for a draft this socket does not follow, or without a draft_id
            for sent in ({"type": "presence", "draft_id": d, "state": {}}, {"type": "presence", "state": {}}):
                await bob_mux.send_json(sent)
                error = await message(bob_mux)
                assert error["type"] == "error" and error["code"] == "bad_message", error
            await subscribe(bob_mux, d)
            assert (await message(bob_mux))["type"] == "presence_sync"
            await bob_mux.send_json({"type": "presence", "draft_id": d, "state": {"x": "y" * 600}})
            error = await message(bob_mux)
            assert (error["code"], error["draft_id"]) == ("payload_too_large", d)
            assert (await presence(alice))["event"] == "join"
        assert (await presence(alice))["event"] == "leave"  # the socket closed: its subscription ended


async def test_mux_revocation_ends_presence_with_a_leave_after_the_removal(
    app: tuple[Client, MemoryStore],
) -> None:
    c, _ = app
    d = await team(c)
    async with c.ws(d, "user_id=alice") as alice:
        await opened(alice)
        async with mux_socket(c, "bob") as bob_mux:
            await subscribe(bob_mux, d)
            assert (await presence(alice))["event"] == "join"
            await remove_bob(c, d)
            assert (await message(alice))["type"] == "collab.collaborator_removed"
            leave = await message(alice)
            assert (leave["type"], leave["event"], leave["user_id"]) == ("presence", "leave", "bob")
            assert list(await present(c, d, "alice")) == ["alice"]
