"""Every REST row of API.md against a real ``ringlog serve``: success shapes, polling, long-poll."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import aiohttp

from tests.e2e.apikit import TIMEOUT, Api, users
from tests.serverproc import ServerProcess

TS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
STATE_KEYS = {
    "id", "title", "description", "creator_id", "collaborators", "segments", "ring_state",
    "seq", "created_at", "updated_at",
    "archived",  # API.md v2 "Access that changes live"
}  # fmt: skip
EVENT_KEYS = {"type", "draft_id", "seq", "ts", "user_id", "data"}


def check_event(event: dict[str, Any], draft_id: str, seq: int, type_: str, user: str) -> None:
    assert set(event) == EVENT_KEYS, event
    assert event["draft_id"] == draft_id and event["seq"] == seq
    assert event["type"] == type_ and event["user_id"] == user
    assert TS.match(event["ts"]), event["ts"]


async def test_create_returns_201_location_etag_and_the_state(api: Api) -> None:
    (alice,) = users("alice")
    status, body, headers = await api.call(
        "POST", "/v1/collab/drafts", alice, {"title": "Hello", "description": "world"}
    )
    assert status == 201
    draft = body["data"]
    assert set(draft) == STATE_KEYS
    assert draft["id"].startswith("draft_")
    assert headers["Location"] == f"/v1/collab/drafts/{draft['id']}"
    assert headers["ETag"] == '"1"'
    assert headers["Content-Type"].startswith("application/json")
    assert draft["title"] == "Hello" and draft["description"] == "world"
    assert draft["creator_id"] == alice
    assert draft["collaborators"] == [] and draft["segments"] == []
    assert draft["ring_state"] == {"current_holder_id": alice, "holders_history": [alice]}
    assert draft["seq"] == 1
    assert TS.match(draft["created_at"]) and TS.match(draft["updated_at"])
    # the Location is where the draft lives, and GET there gives the same state
    status, body, _ = await api.call("GET", headers["Location"], alice)
    assert status == 200 and body["data"] == draft
    # description is optional
    status, body, _ = await api.call("POST", "/v1/collab/drafts", alice, {"title": "t"})
    assert status == 201 and body["data"]["description"] == ""


async def test_list_shows_only_drafts_the_caller_may_view(api: Api) -> None:
    alice, bob, carol, dave = users("alice", "bob", "carol", "dave")
    a1 = await api.create(alice, "a1")
    a2 = await api.create(alice, "a2")
    b1 = await api.create(bob, "b1")
    await api.add(b1["id"], bob, alice, "viewer")
    await api.add(a2["id"], alice, carol, "contributor")
    status, body, _ = await api.call("GET", "/v1/collab/drafts", alice)
    assert status == 200
    rows = body["data"]
    assert all(set(r) == {"id", "title", "seq", "updated_at"} for r in rows), rows
    by_id = {r["id"]: r for r in rows}
    assert set(by_id) == {a1["id"], a2["id"], b1["id"]}
    assert by_id[a2["id"]]["seq"] == 2 and by_id[a2["id"]]["title"] == "a2"
    assert by_id[b1["id"]]["seq"] == 2
    _, body, _ = await api.call("GET", "/v1/collab/drafts", carol)
    assert [r["id"] for r in body["data"]] == [a2["id"]]
    _, body, _ = await api.call("GET", "/v1/collab/drafts", dave)
    assert body["data"] == []


async def test_get_etag_and_if_none_match(api: Api) -> None:
    (alice,) = users("alice")
    draft = await api.create(alice)
    path = f"/v1/collab/drafts/{draft['id']}"
    status, body, headers = await api.call("GET", path, alice)
    assert status == 200 and headers["ETag"] == '"1"' and body["data"]["seq"] == 1
    status, body, headers = await api.call("GET", path, alice, headers={"If-None-Match": '"1"'})
    assert status == 304 and body == b"" and headers["ETag"] == '"1"'
    status, _, _ = await api.call("GET", path, alice, headers={"If-None-Match": '"7", "1"'})
    assert status == 304
    status, _, _ = await api.call("GET", path, alice, headers={"If-None-Match": '"0"'})
    assert status == 200
    status, body, _ = await api.segment(draft["id"], alice, "one")
    assert status == 201
    # read-your-writes: the very next GET shows the segment and a new ETag
    status, body, headers = await api.call("GET", path, alice, headers={"If-None-Match": '"1"'})
    assert status == 200 and headers["ETag"] == '"2"'
    assert [s["content"] for s in body["data"]["segments"]] == ["one"]


async def test_patch_updates_and_records_only_changed_fields(api: Api) -> None:
    (alice,) = users("alice")
    draft = await api.create(alice, "old", description="same")
    path = f"/v1/collab/drafts/{draft['id']}"
    status, body, headers = await api.call("PATCH", path, alice, {"title": "new", "description": "same"})
    assert status == 200
    state = body["data"]
    assert set(state) == STATE_KEYS and state["title"] == "new" and state["description"] == "same"
    assert state["seq"] == 2 and headers["ETag"] == '"2"'
    status, body, _ = await api.call("PATCH", path, alice, {"description": "changed"})
    assert status == 200 and body["data"]["description"] == "changed" and body["data"]["title"] == "new"
    events = await api.events(draft["id"], alice)
    check_event(events[1], draft["id"], 2, "collab.draft_updated", alice)
    assert events[1]["data"] == {"title": "new"}
    assert events[2]["data"] == {"description": "changed"}


async def test_segment_ring_and_collaborator_shapes(api: Api) -> None:
    alice, bob = users("alice", "bob")
    draft = await api.create(alice)
    d = draft["id"]
    status, body, headers = await api.call(
        "POST", f"/v1/collab/drafts/{d}/collaborators", alice, {"user_id": bob, "role": "contributor"}
    )
    assert status == 201 and headers["ETag"] == '"2"'
    assert set(body["data"]) == {"collaborator", "seq"} and body["data"]["seq"] == 2
    collab = body["data"]["collaborator"]
    assert set(collab) == {"user_id", "role", "joined_at"}
    assert collab["user_id"] == bob and collab["role"] == "contributor" and TS.match(collab["joined_at"])

    status, body, _ = await api.segment(d, alice, "first")
    assert status == 201 and set(body["data"]) == {"segment", "seq"} and body["data"]["seq"] == 3
    seg1 = body["data"]["segment"]
    assert set(seg1) == {"id", "author_user_id", "content", "position", "created_at"}
    assert seg1["author_user_id"] == alice and seg1["content"] == "first" and seg1["position"] == 1
    assert isinstance(seg1["id"], int) and TS.match(seg1["created_at"])

    status, body, _ = await api.pass_ring(d, alice, bob)
    assert status == 200
    assert body["data"] == {
        "ring_state": {"current_holder_id": bob, "holders_history": [alice, bob]},
        "seq": 4,
    }
    status, body, _ = await api.segment(d, bob, "second")
    assert status == 201
    seg2 = body["data"]["segment"]
    assert seg2["position"] == 2 and seg2["author_user_id"] == bob and seg2["id"] != seg1["id"]

    state = await api.state(d, alice)
    assert state["segments"] == [seg1, seg2]
    assert state["collaborators"] == [collab]
    assert state["ring_state"] == {"current_holder_id": bob, "holders_history": [alice, bob]}
    assert state["seq"] == 5

    events = await api.events(d, bob)
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5]
    check_event(events[0], d, 1, "collab.draft_created", alice)
    assert events[0]["data"] == {"title": "T", "description": "", "creator_id": alice}
    check_event(events[1], d, 2, "collab.collaborator_added", alice)
    assert events[1]["data"] == {
        "collaborator_id": bob,
        "role": "contributor",
        "joined_at": collab["joined_at"],
    }
    check_event(events[2], d, 3, "collab.segment_added", alice)
    assert events[2]["data"] == {"segment": seg1}
    check_event(events[3], d, 4, "collab.ring_passed", alice)
    assert events[3]["data"] == {
        "from_user_id": alice, "to_user_id": bob, "current_holder_id": bob, "holders_history": [alice, bob]
    }  # fmt: skip
    check_event(events[4], d, 5, "collab.segment_added", bob)


async def test_events_since_limit_and_head_seq(api: Api) -> None:
    (alice,) = users("alice")
    d = (await api.create(alice))["id"]
    for i in range(9):
        status, _, _ = await api.segment(d, alice, f"s{i}")
        assert status == 201
    base = f"/v1/collab/drafts/{d}/events"
    status, body, _ = await api.call("GET", base, alice)
    assert status == 200 and set(body) == {"data", "head_seq"}
    assert [e["seq"] for e in body["data"]] == list(range(1, 11)) and body["head_seq"] == 10
    _, body, _ = await api.call("GET", base + "?since=3&limit=4", alice)
    assert [e["seq"] for e in body["data"]] == [4, 5, 6, 7] and body["head_seq"] == 10
    _, body, _ = await api.call("GET", base + "?since=10", alice)
    assert body == {"data": [], "head_seq": 10}
    _, body, _ = await api.call("GET", base + "?since=50", alice)  # beyond the head: simply nothing yet
    assert body == {"data": [], "head_seq": 10}
    _, body, _ = await api.call("GET", base + "?since=0&limit=1000", alice)
    assert len(body["data"]) == 10
    started = time.monotonic()
    _, body, _ = await api.call("GET", base + "?since=10&wait=0", alice)
    assert body == {"data": [], "head_seq": 10} and time.monotonic() - started < 2
    # with events available, wait does not wait
    started = time.monotonic()
    _, body, _ = await api.call("GET", base + "?since=9&wait=20", alice)
    assert [e["seq"] for e in body["data"]] == [10] and time.monotonic() - started < 5


async def test_long_poll_times_out_empty(api: Api) -> None:
    (alice,) = users("alice")
    d = (await api.create(alice))["id"]
    started = time.monotonic()
    status, body, _ = await api.call("GET", f"/v1/collab/drafts/{d}/events?since=1&wait=1", alice)
    elapsed = time.monotonic() - started
    assert status == 200 and body == {"data": [], "head_seq": 1}
    assert 0.9 <= elapsed < 5, elapsed


async def test_long_poll_is_woken_by_an_append_from_another_client(srv: ServerProcess) -> None:
    alice, bob = users("alice", "bob")
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as h1,
        aiohttp.ClientSession(timeout=TIMEOUT) as h2,
    ):
        reader, writer = Api(srv, h1), Api(srv, h2)
        d = (await writer.create(alice))["id"]
        await writer.add(d, alice, bob, "viewer")
        poll = asyncio.ensure_future(reader.call("GET", f"/v1/collab/drafts/{d}/events?since=2&wait=25", bob))
        # Nothing observable says the poll is parked: give it a moment, then check it has not returned.
        done, _ = await asyncio.wait({poll}, timeout=0.5)
        assert not done, "the long poll returned without an event"
        started = time.monotonic()
        status, _, _ = await writer.segment(d, alice, "wake up")
        assert status == 201
        status, body, _ = await asyncio.wait_for(poll, 10)
        assert time.monotonic() - started < 5
    assert status == 200
    assert [e["seq"] for e in body["data"]] == [3] and body["head_seq"] == 3
    assert body["data"][0]["data"]["segment"]["content"] == "wake up"


async def test_operations_endpoints(api: Api) -> None:
    (alice,) = users("alice")
    d = (await api.create(alice))["id"]
    await api.segment(d, alice)
    status, body, _ = await api.call("GET", "/healthz")
    assert status == 200
    status, body, _ = await api.call("GET", "/readyz")
    assert status == 200
    status, body, headers = await api.call("GET", "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    text = body.decode()
    for name in (
        "ringlog_open_sockets",
        "ringlog_events_appended_total",
        "ringlog_fanout_lag_seconds_bucket",
        "ringlog_http_request_duration_seconds_bucket",
    ):
        assert f"# TYPE {name.removesuffix('_bucket').removesuffix('_total')}" in text, name
        assert re.search(rf"^{name}(\{{[^}}]*\}})? [0-9.e+-]+$", text, re.M), name
    appended = re.search(
        r'^ringlog_events_appended_total\{type="collab.segment_added"\} ([0-9.e+]+)$', text, re.M
    )
    assert appended is not None and float(appended.group(1)) >= 1
    status, doc, _ = await api.call("GET", "/openapi.json")
    assert status == 200 and str(doc["openapi"]).startswith("3.")
    assert {"title", "version"} <= set(doc["info"])
    for path in (
        "/v1/collab/drafts", "/v1/collab/drafts/{id}", "/v1/collab/drafts/{id}/segments",
        "/v1/collab/drafts/{id}/ring/pass", "/v1/collab/drafts/{id}/collaborators",
        "/v1/collab/drafts/{id}/events",
    ):  # fmt: skip
        assert path in doc["paths"] or path.replace("{id}", "{draft_id}") in doc["paths"], path
    status, body, headers = await api.call("GET", "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b"<html" in body.lower()
    csp = headers["Content-Security-Policy"]
    assert "default-src" in csp and "script-src" in csp
