"""DraftStream and RinglogClient against a real server: live, restart, polling fallback."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ringlog import ApiError, DraftStream, Event, RinglogClient, StreamError, fold
from ringlog.backoff import Backoff
from tests.serverproc import ServerProcess, make_token

TIMEOUT = 20


async def _take(stream: DraftStream, n: int) -> list[Event]:
    it = aiter(stream)
    return [await asyncio.wait_for(anext(it), TIMEOUT) for _ in range(n)]


async def _shared_draft(url: str) -> tuple[RinglogClient, RinglogClient, str]:
    alice = RinglogClient(url, user_id="alice")
    bob = RinglogClient(url, user_id="bob")
    draft = await alice.create_draft("Shared", "two writers")
    await alice.add_collaborator(draft.id, "bob", "contributor")
    return alice, bob, draft.id


async def test_two_users_see_each_others_changes_live(server: ServerProcess) -> None:
    alice, bob, draft_id = await _shared_draft(server.url)
    async with alice, bob, DraftStream(server.url, draft_id, user_id="bob") as stream:
        first = await _take(stream, 2)
        assert [e.type for e in first] == ["collab.draft_created", "collab.collaborator_added"]
        await stream.wait_for_status("live", timeout=TIMEOUT)
        await alice.append_segment(draft_id, "alice writes")
        await alice.pass_ring(draft_id, "bob")
        await bob.append_segment(draft_id, "bob answers")
        live = await _take(stream, 3)
        assert [e.seq for e in live] == [3, 4, 5]
        assert live[0].data["segment"]["content"] == "alice writes"
        assert live[1]["type"] == "collab.ring_passed" and live[1]["data"]["to_user_id"] == "bob"
        assert live[2].data["segment"]["author_user_id"] == "bob"
        assert stream.status == "live" and stream.last_seq == 5
        state = None
        for e in first + live:
            state = fold(state, e)
        assert state == await bob.get_draft(draft_id)  # the client's fold agrees with the server


async def test_every_event_once_across_a_server_restart(server: ServerProcess) -> None:
    alice, _bob, draft_id = await _shared_draft(server.url)
    backoff = Backoff(base=0.2, cap=2.0)
    async with alice, DraftStream(server.url, draft_id, user_id="bob", backoff=backoff) as stream:
        await alice.append_segment(draft_id, "before")
        seen = await _take(stream, 3)
        await stream.wait_for_status("live", timeout=TIMEOUT)
        assert server.stop() == 0
        await stream.wait_for_status("offline", "polling", timeout=TIMEOUT)
        server.start()
        for i in range(3):  # appended while the stream is away or just coming back
            await alice.append_segment(draft_id, f"after {i}")
        seen += await _take(stream, 3)
        await stream.wait_for_status("live", timeout=TIMEOUT)
        await alice.append_segment(draft_id, "live again")
        seen += await _take(stream, 1)
        assert [e.seq for e in seen] == list(range(1, 8))
        contents = [e.data["segment"]["content"] for e in seen if e.type == "collab.segment_added"]
        assert contents == ["before", "after 0", "after 1", "after 2", "live again"]
        assert "offline" in stream.status_history[stream.status_history.index("live") :]
        assert stream.status == "live"


async def test_polling_fallback_when_websockets_are_off(tmp_path: Path) -> None:
    args = ("--dev-auth", "--rate-limit", "0", "--no-ws-enabled")
    with ServerProcess(str(tmp_path / "nows.db"), *args, log_path=tmp_path / "s.log") as server:
        alice = RinglogClient(server.url, user_id="alice")
        draft = await alice.create_draft("Polled")
        async with alice, DraftStream(server.url, draft.id, user_id="alice", long_poll_wait=5) as stream:
            assert [e.seq for e in await _take(stream, 1)] == [1]
            await stream.wait_for_status("polling", timeout=TIMEOUT)
            for i in range(3):
                await alice.append_segment(draft.id, f"polled {i}")
            got = await _take(stream, 3)
            assert [e.data["segment"]["content"] for e in got] == ["polled 0", "polled 1", "polled 2"]
            assert stream.status == "polling" and "live" not in stream.status_history


async def test_since_resumes_and_a_stranger_is_refused(server: ServerProcess) -> None:
    alice, _bob, draft_id = await _shared_draft(server.url)
    async with alice:
        await alice.append_segment(draft_id, "x")
        async with DraftStream(server.url, draft_id, token=make_token("alice"), since=2) as stream:
            assert [e.seq for e in await _take(stream, 1)] == [3]
        async with DraftStream(server.url, draft_id, user_id="mallory") as stream:
            with pytest.raises(StreamError) as err:
                await _take(stream, 1)
            assert err.value.code == "forbidden"
            with pytest.raises(StreamError):  # and it stays ended, rather than hanging
                await asyncio.wait_for(anext(aiter(stream)), 5)


async def test_rest_helpers_retry_with_the_same_key(tmp_path: Path) -> None:
    # rate limit 1/s with bursts of 2: the third and fourth appends get 429 + Retry-After first
    args = ("--dev-auth", "--rate-limit", "1")
    with ServerProcess(str(tmp_path / "rl.db"), *args, log_path=tmp_path / "s.log") as server:
        async with RinglogClient(server.url, user_id="alice") as alice:
            draft = await alice.create_draft("Retries")
            results = [await alice.append_segment(draft.id, f"s{i}") for i in range(3)]
            assert [seq for _seg, seq in results] == [2, 3, 4]
            # the same key again (a retry after a lost reply) returns the first answer, appends nothing
            once = await alice.append_segment(draft.id, "same", idempotency_key="k-1")
            again = await alice.append_segment(draft.id, "same", idempotency_key="k-1")
            assert once == again
            events, head = await alice.events(draft.id)
            assert head == 5 and len(events) == 5
            with pytest.raises(ApiError) as err:
                await alice.append_segment(draft.id, "other body", idempotency_key="k-1")
            assert err.value.status == 422 and err.value.code == "idempotency_key_reused"


async def test_an_expired_socket_token_is_refreshed_and_nothing_is_lost(server: ServerProcess) -> None:
    refreshed = asyncio.get_running_loop().create_future()

    async def get_token() -> str:
        refreshed.set_result(None)
        return make_token("alice")

    async with RinglogClient(server.url, token=make_token("alice")) as alice:
        draft = await alice.create_draft("Short-lived token")
        # the server closes the socket with 4401 when REST would refuse the token too: at exp plus
        # the leeway (30 s by default), so this token is two seconds from the end of its grace
        short = make_token("alice", expires_in=2 - 30)
        async with DraftStream(server.url, draft.id, token=short, get_token=get_token) as stream:
            assert [e.seq for e in await _take(stream, 1)] == [1]
            await stream.wait_for_status("live", timeout=TIMEOUT)
            await asyncio.wait_for(refreshed, TIMEOUT)
            await alice.append_segment(draft.id, "after the refresh")
            assert [e.seq for e in await _take(stream, 1)] == [2]
            assert stream.token != short and stream.status == "live"
            assert stream.status_history == ["offline", "live"]  # reconnected at once, no fallback
