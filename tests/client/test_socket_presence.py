"""RinglogSocket's presence (API.md v2 "Presence") against the real app, in process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from ringlog import DraftSubscription, RinglogClient, RinglogSocket
from ringlog.backoff import Backoff
from server.state import AppState
from tests.server.wsclient import serving_app

TIMEOUT = 20


@pytest.fixture
async def served() -> AsyncIterator[tuple[TestServer, str]]:
    async with serving_app() as (server, _store):
        yield server, str(server.make_url("")).rstrip("/")


def states(sub: DraftSubscription) -> dict[str, Any]:
    return {user: member.get("state") for user, member in sub.members.items()}


def has(expected: dict[str, Any]) -> Any:
    return lambda members: {u: m.get("state") for u, m in members.items()} == expected


async def test_presence_is_seen_kept_across_a_reconnect_and_left(served: tuple[TestServer, str]) -> None:
    server, url = served
    backoff = Backoff(base=0.05, cap=0.5)
    async with (
        RinglogClient(url, user_id="alice") as api,
        RinglogSocket(url, user_id="alice") as alice,
        RinglogSocket(url, user_id="bob", backoff=backoff) as bob,
    ):
        draft = await api.create_draft("Together")
        await api.add_collaborator(draft.id, "bob", "contributor")
        seen_by_alice = await alice.subscribe(draft.id, since=0)
        await seen_by_alice.wait_for_members(has({"alice": {}}), TIMEOUT)
        seen_by_bob = await bob.subscribe(draft.id, since=0)
        await bob.set_presence(draft.id, {"typing": True})
        await seen_by_alice.wait_for_members(has({"alice": {}, "bob": {"typing": True}}), TIMEOUT)
        await seen_by_bob.wait_for_members(has({"alice": {}, "bob": {"typing": True}}), TIMEOUT)
        assert {m["user_id"] for m in seen_by_alice.members.values()} == {"alice", "bob"}

        # bob's socket is closed as too slow: he reconnects, resubscribes and sets his state again
        st = server.app[AppState.KEY]
        for ws, close in list(st.sockets.all.items()):
            if ws in st.sockets.by_user.get("bob", set()):
                await close(1013, b"test")
        await bob.wait_for_status("offline", timeout=TIMEOUT)
        await bob.wait_for_status("live", timeout=TIMEOUT)
        await seen_by_bob.wait_for_members(has({"alice": {}, "bob": {"typing": True}}), TIMEOUT)
        await seen_by_alice.wait_for_members(has({"alice": {}, "bob": {"typing": True}}), TIMEOUT)
        assert bob.connections == 2

        await bob.set_presence(draft.id, {"typing": False})
        await seen_by_alice.wait_for_members(has({"alice": {}, "bob": {"typing": False}}), TIMEOUT)
        await bob.unsubscribe(draft.id)
        await seen_by_alice.wait_for_members(has({"alice": {}}), TIMEOUT)
        assert seen_by_bob.members == {}  # an ended subscription sees nobody
        # events still flow to alice, once each
        _seg, seq = await api.append_segment(draft.id, "after the presence")
        seqs = [(await asyncio.wait_for(anext(seen_by_alice), TIMEOUT)).seq for _ in range(seq)]
        assert seqs == list(range(1, seq + 1))
