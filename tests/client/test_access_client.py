"""The Python client and API.md v2: the new mutations with ``if_match=`` (on every mutation),
``at_seq``/``archived`` reads, and a ``DraftStream`` that stops for good on 4403."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from ringlog import AccessRevoked, ApiError, DraftStream, Event, RinglogClient, StreamError
from tests.server.wsclient import serving_app


@pytest.fixture
async def url() -> AsyncIterator[str]:
    async with serving_app() as (server, _):
        yield str(server.make_url("")).rstrip("/")


async def test_new_mutations_and_reads(url: str) -> None:
    async with RinglogClient(url, user_id="alice") as alice, RinglogClient(url, user_id="bob") as bob:
        d = (await alice.create_draft("T")).id
        await alice.add_collaborator(d, "bob", "contributor")
        await alice.pass_ring(d, "bob")
        collaborator, seq = await alice.change_role(d, "bob", "viewer")
        assert (collaborator.role, seq) == ("viewer", 5)  # role_changed + ring back to alice
        ring, seq = await bob.remove_collaborator(d, "bob")
        assert (ring.current_holder_id, seq) == ("alice", 6)
        state = await alice.archive(d)
        assert state.archived and state.seq == 7
        assert [r.id for r in await alice.list_drafts(archived=True)] == [d]
        assert await alice.list_drafts() == []
        assert (await alice.unarchive(d)).archived is False
        past = await alice.get_draft(d, at_seq=2)
        assert past.seq == 2 and [c.user_id for c in past.collaborators] == ["bob"]
        with pytest.raises(ApiError) as refused:
            await bob.get_draft(d)
        assert refused.value.status == 403


async def test_if_match_on_every_mutation(url: str) -> None:
    async with RinglogClient(url, user_id="alice") as alice:
        d = (await alice.create_draft("T")).id
        await alice.add_collaborator(d, "bob", "contributor", if_match=1)
        stale = 1
        attempts = [
            lambda: alice.update_draft(d, title="x", if_match=stale),
            lambda: alice.append_segment(d, "x", if_match=stale),
            lambda: alice.pass_ring(d, "bob", if_match=stale),
            lambda: alice.add_collaborator(d, "carl", "viewer", if_match=stale),
            lambda: alice.change_role(d, "bob", "viewer", if_match=stale),
            lambda: alice.remove_collaborator(d, "bob", if_match=stale),
            lambda: alice.archive(d, if_match=stale),
            lambda: alice.unarchive(d, if_match=stale),
        ]
        for attempt in attempts:
            with pytest.raises(ApiError) as refused:
                await attempt()
            assert (refused.value.status, refused.value.details) == (412, {"head_seq": 2})
        assert (await alice.get_draft(d)).seq == 2
        # a new draft has no head to match: create takes the header and ignores it
        assert (await alice.create_draft("T", if_match=3)).seq == 1


async def test_a_stream_stops_for_good_on_access_revoked(url: str) -> None:
    async with RinglogClient(url, user_id="alice") as alice:
        d = (await alice.create_draft("T")).id
        await alice.add_collaborator(d, "vera", "viewer")
        seen: list[Event] = []
        async with DraftStream(url, d, user_id="vera", since=0) as stream:
            await stream.wait_for_status("live", timeout=10)
            await alice.remove_collaborator(d, "vera")
            with pytest.raises(AccessRevoked) as ended:
                async with asyncio.timeout(10):
                    async for event in stream:
                        seen.append(event)
            assert isinstance(ended.value, StreamError) and ended.value.code == "access_revoked"
            assert stream.status == "offline"
            assert stream.status_history.count("live") == 1  # it never reconnected
        assert [e.type for e in seen] == [
            "collab.draft_created",
            "collab.collaborator_added",
            "collab.collaborator_removed",
        ]
