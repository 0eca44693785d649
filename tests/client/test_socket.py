"""RinglogSocket (API.md v2 "One socket, many drafts") against the real app, in process on a
loopback port; one test against a real ``ringlog serve`` that is stopped and started again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from eventstore.errors import StoreUnavailable
from ringlog import (
    AccessRevoked,
    DraftSubscription,
    Event,
    RinglogClient,
    RinglogSocket,
    StreamError,
)
from ringlog.backoff import Backoff
from server.state import AppState
from tests.client.sockets import TIMEOUT, api_and_socket, fast_backoff, take
from tests.server.wsclient import serving_app
from tests.serverproc import ServerProcess, make_token

CLOSE_TRY_AGAIN_LATER = 1013


@pytest.fixture
async def served() -> AsyncIterator[tuple[TestServer, str]]:
    async with serving_app(max_subscriptions_per_socket=5) as (server, _store):
        yield server, str(server.make_url("")).rstrip("/")


async def take_until(sub: DraftSubscription, seq: int) -> list[Event]:
    """Events until the one with ``seq`` (bounded: never more than ``seq`` of them)."""
    got: list[Event] = []
    for _ in range(seq):
        got.append(await asyncio.wait_for(anext(sub), TIMEOUT))
        if got[-1].seq >= seq:
            break
    return got


async def close_every_socket(server: TestServer, code: int) -> int:
    """Close every socket of the server with ``code`` through its own closer (as a slow socket
    or a shutdown is closed); how many there were."""
    closers = list(server.app[AppState.KEY].sockets.all.values())
    await asyncio.gather(*(close(code, b"test") for close in closers))
    return len(closers)


async def connections(sock: RinglogSocket, n: int) -> None:
    """Wait until the server has said ``connected`` ``n`` times and the socket is live."""
    async with asyncio.timeout(TIMEOUT):
        while sock.connections < n or sock.status != "live":
            await asyncio.sleep(0.02)


async def writers(api: RinglogClient, drafts: list[str], per_draft: int) -> dict[str, int]:
    """Append ``per_draft`` segments to each draft, the drafts concurrently; each draft's head."""

    async def write(draft_id: str) -> int:
        seq = 1
        for i in range(per_draft):
            _segment, seq = await api.append_segment(draft_id, f"{draft_id} {i}")
        return seq

    heads = await asyncio.gather(*(write(d) for d in drafts))
    return dict(zip(drafts, heads, strict=True))


async def test_several_drafts_on_one_socket_each_seq_once_in_order(served: tuple[TestServer, str]) -> None:
    _server, url = served
    async with RinglogClient(url, user_id="alice") as api, RinglogSocket(url, user_id="alice") as sock:
        drafts = [(await api.create_draft(f"D{i}")).id for i in range(3)]
        subs = [await sock.subscribe(d, since=0) for d in drafts]
        heads = await writers(api, drafts, 25)
        for sub in subs:
            got = await take_until(sub, heads[sub.draft_id])
            assert [e.seq for e in got] == list(range(1, heads[sub.draft_id] + 1))
            assert {e.draft_id for e in got} == {sub.draft_id}
            assert sub.status == "live" and sub.last_seq == heads[sub.draft_id]
        assert sock.status == "live" and sock.connections == 1


async def test_1013_mid_stream_resubscribes_each_draft_from_its_own_seq(
    served: tuple[TestServer, str],
) -> None:
    server, url = served
    async with api_and_socket(url, backoff=fast_backoff()) as (api, sock):
        drafts = [(await api.create_draft(f"D{i}")).id for i in range(3)]
        subs = [await sock.subscribe(d, since=0) for d in drafts]
        await take(subs[0], 1)  # connected and subscribed
        writing = asyncio.ensure_future(writers(api, drafts, 30))
        for i in range(2):  # twice while the writers run
            await connections(sock, i + 1)
            await asyncio.sleep(0.05)  # let some events through between the closes
            assert await close_every_socket(server, CLOSE_TRY_AGAIN_LATER) == 1
        heads = await asyncio.wait_for(writing, TIMEOUT)
        got = {sub.draft_id: await take_until(sub, heads[sub.draft_id]) for sub in subs}
        assert [e.seq for e in got[drafts[0]]] == list(range(2, heads[drafts[0]] + 1))
        for d in drafts[1:]:
            assert [e.seq for e in got[d]] == list(range(1, heads[d] + 1))
        await connections(sock, 3)
        assert "offline" in sock.status_history


async def test_a_subscription_from_the_head_resumes_from_the_head_it_was_given(
    served: tuple[TestServer, str],
) -> None:
    server, url = served
    async with api_and_socket(url, backoff=fast_backoff()) as (api, sock):
        draft = await api.create_draft("From now")
        await api.append_segment(draft.id, "old")
        sub = await sock.subscribe(draft.id)  # since None: after the head (2)
        for _ in range(100):  # bounded: the subscribed answer comes within a few turns
            if sub.status == "live":
                break
            await asyncio.sleep(0.05)
        assert sub.head_seq == 2 and sub.since == 2
        await close_every_socket(server, CLOSE_TRY_AGAIN_LATER)
        await api.append_segment(draft.id, "new")  # while away or just back
        assert [e.seq for e in await take(sub, 1)] == [3]


async def test_revocation_ends_one_stream_only(served: tuple[TestServer, str]) -> None:
    _server, url = served
    async with api_and_socket(url, socket_user="bob") as (alice, sock):
        kept, lost = (await alice.create_draft("kept")).id, (await alice.create_draft("lost")).id
        for d in (kept, lost):
            await alice.add_collaborator(d, "bob", "contributor")
        sub_kept, sub_lost = await sock.subscribe(kept, since=0), await sock.subscribe(lost, since=0)
        assert [e.seq for e in await take(sub_lost, 2)] == [1, 2]
        await alice.remove_collaborator(lost, "bob")
        removal = await take(sub_lost, 1)
        assert removal[0].type == "collab.collaborator_removed"
        with pytest.raises(AccessRevoked):
            await asyncio.wait_for(anext(sub_lost), TIMEOUT)
        with pytest.raises(AccessRevoked):  # and it stays ended
            await asyncio.wait_for(anext(sub_lost), TIMEOUT)
        assert sub_lost.status == "ended" and lost not in sock.subscriptions
        _seg, seq = await alice.append_segment(kept, "still here")
        assert [e.seq for e in await take_until(sub_kept, seq)][-1] == seq
        assert sock.status == "live" and sock.connections == 1


async def test_a_refused_subscription_ends_its_stream_only(served: tuple[TestServer, str]) -> None:
    _server, url = served
    async with api_and_socket(url, socket_user="bob") as (alice, sock):
        shared, private = (await alice.create_draft("shared")).id, (await alice.create_draft("private")).id
        await alice.add_collaborator(shared, "bob", "viewer")
        sub = await sock.subscribe(shared, since=0)
        forbidden, missing = await sock.subscribe(private), await sock.subscribe("draft_doesnotexist")
        with pytest.raises(ValueError, match="already subscribed"):  # one subscription per draft
            await sock.subscribe(shared, since=99)
        for code, stream in (("forbidden", forbidden), ("not_found", missing)):
            with pytest.raises(StreamError) as err:
                await asyncio.wait_for(anext(stream), TIMEOUT)
            assert err.value.code == code and stream.status == "ended"
        assert set(sock.subscriptions) == {shared}
        _seg, seq = await alice.append_segment(shared, "for the viewer")
        assert [e.seq for e in await take_until(sub, seq)] == list(range(1, seq + 1))
        assert sock.connections == 1


async def test_invalid_since_and_the_subscription_cap(served: tuple[TestServer, str]) -> None:
    _server, url = served
    async with RinglogClient(url, user_id="alice") as api, RinglogSocket(url, user_id="alice") as sock:
        drafts = [(await api.create_draft(f"D{i}")).id for i in range(6)]
        beyond = await sock.subscribe(drafts[0], since=5)
        with pytest.raises(StreamError) as err:
            await asyncio.wait_for(anext(beyond), TIMEOUT)
        assert err.value.code == "invalid_since"
        subs = [await sock.subscribe(d, since=0) for d in drafts[1:]]  # 5: the cap
        over = await sock.subscribe(drafts[0], since=0)
        with pytest.raises(StreamError) as err:
            await asyncio.wait_for(anext(over), TIMEOUT)
        assert err.value.code == "too_many_subscriptions"
        for sub in subs:
            assert [e.seq for e in await take(sub, 1)] == [1]


async def test_unsubscribe_ends_the_stream_and_leaves_the_others(served: tuple[TestServer, str]) -> None:
    _server, url = served
    async with RinglogClient(url, user_id="alice") as api, RinglogSocket(url, user_id="alice") as sock:
        a, b = (await api.create_draft("a")).id, (await api.create_draft("b")).id
        sub_a, sub_b = await sock.subscribe(a, since=0), await sock.subscribe(b, since=0)
        assert [e.seq for e in await take(sub_a, 1)] == [1]
        await sub_a.close()
        await api.append_segment(a, "not for the closed stream")
        _seg, seq = await api.append_segment(b, "for b")
        assert [e.seq for e in await take_until(sub_b, seq)] == [1, 2]
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(anext(sub_a), TIMEOUT)
        again = await sock.subscribe(a, since=1)  # the draft can be followed again
        assert [e.seq for e in await take(again, 1)] == [2]


async def test_a_consumer_that_falls_behind_catches_up_without_stalling_the_others(
    served: tuple[TestServer, str],
) -> None:
    _server, url = served
    async with api_and_socket(url, queue_size=4) as (api, sock):
        slow_id, fast_id = (await api.create_draft("slow")).id, (await api.create_draft("fast")).id
        slow, fast = await sock.subscribe(slow_id, since=0), await sock.subscribe(fast_id, since=0)
        heads = await writers(api, [slow_id, fast_id], 20)
        # the fast consumer gets everything while the slow one has not read anything
        assert [e.seq for e in await take_until(fast, heads[fast_id])] == list(range(1, 22))
        assert slow.status == "behind"
        assert [e.seq for e in await take_until(slow, heads[slow_id])] == list(range(1, 22))
        assert sock.connections == 1


async def test_bad_arguments_are_refused_at_once(served: tuple[TestServer, str]) -> None:
    _server, url = served
    with pytest.raises(ValueError):
        RinglogSocket(url)  # no credentials
    with pytest.raises(ValueError):
        RinglogSocket("127.0.0.1:8000", user_id="alice")
    with pytest.raises(ValueError):
        RinglogSocket(url, user_id="alice", queue_size=1)
    async with RinglogSocket(url, user_id="alice") as sock:
        for since in (-1, True, "3", 2**63):
            with pytest.raises(ValueError):
                await sock.subscribe("draft_x", since=since)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            await sock.set_presence("draft_x", {"typing": True})  # not subscribed
        sub = await sock.subscribe("draft_x")
        with pytest.raises(ValueError):
            await sock.set_presence("draft_x", {"s": "x" * 600})
        with pytest.raises(ValueError):
            await sock.set_presence("draft_x", [1])  # type: ignore[arg-type]
        with pytest.raises(StreamError):
            await asyncio.wait_for(anext(sub), TIMEOUT)


async def test_a_fatal_close_ends_every_stream(served: tuple[TestServer, str]) -> None:
    server, url = served
    async with RinglogClient(url, user_id="alice") as api, RinglogSocket(url, user_id="alice") as sock:
        d = (await api.create_draft("x")).id
        sub = await sock.subscribe(d, since=0)
        await take(sub, 1)
        await close_every_socket(server, 1008)  # policy: reconnecting cannot help
        with pytest.raises(StreamError):
            await asyncio.wait_for(anext(sub), TIMEOUT)
        assert await sock.wait_for_status("closed", timeout=TIMEOUT) == "closed"


async def test_everything_resumes_across_a_server_restart(server: ServerProcess) -> None:
    async with api_and_socket(server.url, backoff=Backoff(base=0.2, cap=2.0)) as (api, sock):
        drafts = [(await api.create_draft(f"D{i}")).id for i in range(2)]
        subs = [await sock.subscribe(d, since=0) for d in drafts]
        seen: dict[str, list[int]] = {d: [] for d in drafts}
        for sub in subs:
            seen[sub.draft_id] += [e.seq for e in await take(sub, 1)]
        assert server.stop() == 0
        await sock.wait_for_status("offline", timeout=TIMEOUT)
        server.start()
        heads = await writers(api, drafts, 3)  # appended while the socket is away or coming back
        await sock.wait_for_status("live", timeout=TIMEOUT)
        more = await writers(api, drafts, 2)
        for sub in subs:
            seen[sub.draft_id] += [e.seq for e in await take_until(sub, more[sub.draft_id])]
            assert seen[sub.draft_id] == list(range(1, more[sub.draft_id] + 1))
            assert heads[sub.draft_id] < more[sub.draft_id]
        assert sock.connections == 2


async def test_a_subscription_refused_for_now_is_retried_alone(
    served: tuple[TestServer, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, url = served
    projector = server.app[AppState.KEY].projector
    real_get = projector.get
    failures = {"left": 2}

    async with RinglogClient(url, user_id="alice") as api, RinglogSocket(url, user_id="alice") as sock:
        ok, flaky = (await api.create_draft("ok")).id, (await api.create_draft("flaky")).id

        async def failing(draft_id: str, *args: Any) -> Any:
            if draft_id == flaky and failures["left"] > 0:
                failures["left"] -= 1
                raise StoreUnavailable("down") if failures["left"] else KeyError("a bug")
            return await real_get(draft_id, *args)

        monkeypatch.setattr(projector, "get", failing)
        sub_flaky, sub_ok = await sock.subscribe(flaky, since=0), await sock.subscribe(ok, since=0)
        assert [e.seq for e in await take(sub_ok, 1)] == [1]
        # unavailable (retry_after 1 s), then internal_error, then served
        assert [e.seq for e in await take(sub_flaky, 1)] == [1]
        assert failures["left"] == 0 and sock.connections == 1


async def test_bad_frames_and_a_gap_lose_and_repeat_nothing() -> None:
    """A fake /v1/ws: frames that are not the contract's are skipped; a gap subscribes again."""
    subscribes: list[dict[str, Any]] = []

    def event(seq: int, draft_id: str = "draft_a") -> dict[str, Any]:
        return {"type": "collab.segment_added", "draft_id": draft_id, "seq": seq,
                "ts": "2025-01-01T00:00:00.000Z", "user_id": "alice", "data": {}}  # fmt: skip

    async def fake(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json({"type": "connected", "user_id": "alice", "ts": "x"})
        async for msg in ws:
            message = msg.json()
            if message["type"] != "subscribe":
                continue
            subscribes.append(message)
            since = message.get("since", 0)
            await ws.send_json({"type": "subscribed", "draft_id": "draft_a", "head_seq": 6})
            if len(subscribes) == 1:
                await ws.send_str("not json")
                await ws.send_bytes(b"\x00")
                await ws.send_json([1, 2])
                await ws.send_json({**event(1), "seq": "1"})  # not the envelope: resubscribes
                await ws.send_json(event(1, "draft_other"))  # a draft not followed
                continue
            if len(subscribes) == 2:
                for seq in (since + 1, since + 1, since + 3):  # a repeat, then a gap
                    await ws.send_json(event(seq))
                continue
            for seq in range(since + 1, 7):
                await ws.send_json(event(seq))
        return ws

    app = web.Application()
    app.router.add_get("/v1/ws", fake)
    async with TestServer(app, host="127.0.0.1") as fake_server:
        url = str(fake_server.make_url("")).rstrip("/")
        async with RinglogSocket(url, user_id="alice") as sock:
            sub = await sock.subscribe("draft_a", since=0)
            assert [e.seq for e in await take(sub, 6)] == [1, 2, 3, 4, 5, 6]
            assert [m.get("since") for m in subscribes] == [0, 0, 1]
            assert sock.connections == 1


async def test_a_task_cancelled_from_outside_ends_every_stream(served: tuple[TestServer, str]) -> None:
    _server, url = served
    async with RinglogClient(url, user_id="alice") as api, RinglogSocket(url, user_id="alice") as sock:
        sub = await sock.subscribe((await api.create_draft("x")).id, since=0)
        await take(sub, 1)
        task = sock._task
        assert task is not None
        task.cancel()  # as a careless caller's cancel of every task would
        with pytest.raises(StreamError) as err:
            await asyncio.wait_for(anext(sub), TIMEOUT)
        assert err.value.code == "internal_error" and sock.status == "closed"
        with pytest.raises(StreamError):  # a closed socket takes no new subscription
            await sock.subscribe("draft_other")


def test_from_client_import_gives_the_same_objects() -> None:
    import client
    import ringlog

    for name in ("RinglogSocket", "DraftSubscription", "FeedStream", "FeedItem", "AccessRevoked"):
        assert getattr(client, name) is getattr(ringlog, name)
    assert sorted(client.__all__) == sorted(ringlog.__all__)


async def test_an_expired_token_is_refreshed_and_every_draft_resumes() -> None:
    async with serving_app(jwt_leeway=0.0) as (server, _store):
        url = str(server.make_url("")).rstrip("/")
        refreshed = asyncio.get_running_loop().create_future()

        async def get_token() -> str:
            if not refreshed.done():
                refreshed.set_result(None)
            return make_token("alice")

        async with (
            RinglogClient(url, token=make_token("alice")) as api,
            RinglogSocket(url, token=make_token("alice", expires_in=2), get_token=get_token) as sock,
        ):
            drafts = [(await api.create_draft(f"D{i}")).id for i in range(2)]
            subs = [await sock.subscribe(d, since=0) for d in drafts]
            for sub in subs:
                assert [e.seq for e in await take(sub, 1)] == [1]
            await asyncio.wait_for(refreshed, TIMEOUT)  # 4401, then at once a new socket
            for d in drafts:
                await api.append_segment(d, "after the refresh")
            for sub in subs:
                assert [e.seq for e in await take(sub, 1)] == [2]
            assert sock.connections == 2 and "offline" not in sock.status_history


async def test_an_expired_token_without_get_token_ends_every_stream() -> None:
    async with serving_app(jwt_leeway=0.0) as (server, _store):
        url = str(server.make_url("")).rstrip("/")
        async with (
            RinglogClient(url, token=make_token("alice")) as api,
            RinglogSocket(url, token=make_token("alice", expires_in=1)) as sock,
        ):
            sub = await sock.subscribe((await api.create_draft("x")).id, since=0)
            assert [e.seq for e in await take(sub, 1)] == [1]
            with pytest.raises(StreamError) as err:
                await asyncio.wait_for(anext(sub), TIMEOUT)
            assert err.value.code == "token_expired"


async def test_a_stream_behind_when_the_socket_drops_catches_up_after_the_reconnect(
    served: tuple[TestServer, str],
) -> None:
    server, url = served
    async with api_and_socket(url, queue_size=4, backoff=fast_backoff()) as (api, sock):
        slow_id, fast_id = (await api.create_draft("slow")).id, (await api.create_draft("fast")).id
        slow, fast = await sock.subscribe(slow_id, since=0), await sock.subscribe(fast_id, since=0)
        heads = await writers(api, [slow_id, fast_id], 12)
        assert [e.seq for e in await take_until(fast, heads[fast_id])] == list(range(1, 14))
        assert slow.status == "behind"
        await close_every_socket(server, CLOSE_TRY_AGAIN_LATER)
        more = await writers(api, [slow_id, fast_id], 3)  # while away or just back
        await connections(sock, 2)
        assert [e.seq for e in await take_until(slow, more[slow_id])] == list(range(1, 17))
        assert [e.seq for e in await take_until(fast, more[fast_id])] == [14, 15, 16]
