"""API.md's role table (creator / contributor / viewer / stranger × every action) and idempotent retries."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.e2e.apikit import Api, assert_error, bearer, receive_close, receive_json

SERVER_ARGS = ("--rate-limit", "0")


ROLES = ["creator", "contributor", "viewer", "stranger"]


async def draft_with_roles(api: Api) -> tuple[str, dict[str, str]]:
    tag = uuid.uuid4().hex[:8]
    who = {role: f"{role}_{tag}" for role in ROLES}
    d = (await api.create(who["creator"]))["id"]
    await api.add(d, who["creator"], who["contributor"], "contributor")
    await api.add(d, who["creator"], who["viewer"], "viewer")
    return d, who


async def head(api: Api, d: str, user: str) -> int:
    _, body, _ = await api.call("GET", f"/v1/collab/drafts/{d}/events", user)
    return int(body["head_seq"])


@pytest.mark.parametrize("role", ROLES)
async def test_view(api: Api, role: str) -> None:
    d, who = await draft_with_roles(api)
    user = who[role]
    allowed = role != "stranger"
    for path in (f"/v1/collab/drafts/{d}", f"/v1/collab/drafts/{d}/events"):
        status, body, _ = await api.call("GET", path, user)
        if allowed:
            assert status == 200, body
        else:
            assert_error(status, body, 403, "forbidden")
    _, body, _ = await api.call("GET", "/v1/collab/drafts", user)
    assert (d in [r["id"] for r in body["data"]]) is allowed
    async with api.http.ws_connect(f"{api.server.ws_url}/v1/ws/drafts/{d}", headers=bearer(user)) as ws:
        first = await receive_json(ws)
        if allowed:
            assert first["type"] == "connected" and first["user_id"] == user and first["head_seq"] == 3
        else:
            assert first["type"] == "error" and first["code"] == "forbidden"
            assert await receive_close(ws) == 1008


@pytest.mark.parametrize("role", ROLES)
async def test_mutations_without_the_ring(api: Api, role: str) -> None:
    """Nobody but the creator holds the ring: contributors get 409, viewers and strangers 403."""
    d, who = await draft_with_roles(api)
    user = who[role]
    if role == "creator":
        status, body, _ = await api.pass_ring(d, user, who["contributor"])  # give the ring away first
        assert status == 200, body
    base_head = await head(api, d, who["creator"])
    for status, body, _ in (await api.segment(d, user), await api.pass_ring(d, user, who["creator"])):
        if role in ("creator", "contributor"):
            assert_error(status, body, 409, "not_ring_holder")
        else:
            assert_error(status, body, 403, "forbidden")
    assert await head(api, d, who["creator"]) == base_head


@pytest.mark.parametrize("role", ROLES)
async def test_mutations_while_holding_or_not(api: Api, role: str) -> None:
    """Every action of the table for ``role``; the ring is handed to them first when they may hold it."""
    d, who = await draft_with_roles(api)
    user = who[role]
    may_change = role in ("creator", "contributor")
    if role == "contributor":
        status, _, _ = await api.pass_ring(d, who["creator"], user)
        assert status == 200
    base_head = await head(api, d, who["creator"])
    results: dict[str, tuple[int, Any, Any]] = {
        "append": await api.segment(d, user, "mine"),
        "pass": await api.pass_ring(d, user, who["contributor"] if role != "contributor" else who["creator"]),
        "add": await api.call(
            "POST", f"/v1/collab/drafts/{d}/collaborators", user, {"user_id": f"new_{role}", "role": "viewer"}
        ),
        "update": await api.call("PATCH", f"/v1/collab/drafts/{d}", user, {"title": f"by {role}"}),
    }
    expected_ok = {"append": 201, "pass": 200, "add": 201, "update": 200}
    for action, (status, body, _) in results.items():
        if may_change:
            assert status == expected_ok[action], (action, body)
        else:
            assert_error(status, body, 403, "forbidden")
    assert await head(api, d, who["creator"]) == base_head + (4 if may_change else 0)


async def test_idempotent_retry_returns_the_first_response_and_appends_nothing(api: Api) -> None:
    tag = uuid.uuid4().hex[:8]
    alice, bob = f"alice_{tag}", f"bob_{tag}"

    async def twice(method: str, path: str, payload: Any, key: str) -> tuple[int, Any, Any]:
        first = await api.call(method, path, alice, payload, {"Idempotency-Key": key})
        second = await api.call(method, path, alice, payload, {"Idempotency-Key": key})
        assert first[0] == second[0] and first[1] == second[1], (first, second)
        assert second[2]["ETag"] == first[2]["ETag"]
        assert second[2].get("Idempotent-Replayed") == "true"
        return first

    status, created, _ = await twice("POST", "/v1/collab/drafts", {"title": "t"}, f"c-{tag}")
    assert status == 201
    d = created["data"]["id"]
    status, body, _ = await twice(
        "POST", f"/v1/collab/drafts/{d}/collaborators", {"user_id": bob, "role": "contributor"}, f"a-{tag}"
    )
    assert status == 201
    status, body, _ = await twice("POST", f"/v1/collab/drafts/{d}/segments", {"content": "once"}, f"s-{tag}")
    assert status == 201 and body["data"]["seq"] == 3
    status, body, _ = await twice("PATCH", f"/v1/collab/drafts/{d}", {"title": "t2"}, f"u-{tag}")
    assert status == 200
    status, body, _ = await twice("POST", f"/v1/collab/drafts/{d}/ring/pass", {"to_user_id": bob}, f"r-{tag}")
    assert status == 200
    events = await api.events(d, alice)
    assert [e["type"] for e in events] == [
        "collab.draft_created",
        "collab.collaborator_added",
        "collab.segment_added",
        "collab.draft_updated",
        "collab.ring_passed",
    ]
    # a retry after other changes still returns the first response (the draft moved on)
    status, body, _ = await api.call(
        "POST", f"/v1/collab/drafts/{d}/segments", alice, {"content": "once"}, {"Idempotency-Key": f"s-{tag}"}
    )
    assert status == 201 and body["data"]["seq"] == 3 and body["data"]["segment"]["content"] == "once"
    # a key belongs to one user: bob's request with alice's key is his own
    status, body, _ = await api.call(
        "POST", f"/v1/collab/drafts/{d}/segments", bob, {"content": "once"}, {"Idempotency-Key": f"s-{tag}"}
    )
    assert status == 201 and body["data"]["seq"] == 6
    # only one draft was created
    _, body, _ = await api.call("GET", "/v1/collab/drafts", alice)
    assert [r["id"] for r in body["data"]] == [d]


async def test_failed_request_does_not_burn_the_key(api: Api) -> None:
    tag = uuid.uuid4().hex[:8]
    alice, bob = f"alice_{tag}", f"bob_{tag}"
    d = (await api.create(alice))["id"]
    await api.add(d, alice, bob)
    key = {"Idempotency-Key": f"k-{tag}"}
    status, body, _ = await api.call("POST", f"/v1/collab/drafts/{d}/segments", bob, {"content": "x"}, key)
    assert_error(status, body, 409, "not_ring_holder")
    status, _, _ = await api.pass_ring(d, alice, bob)
    assert status == 200
    status, body, _ = await api.call("POST", f"/v1/collab/drafts/{d}/segments", bob, {"content": "x"}, key)
    assert status == 201 and body["data"]["seq"] == 4
