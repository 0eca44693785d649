"""Kind: ambiguous input — a header or query parameter the server reads, given more than once.

``?limit=1&limit=5000`` was answered as ``limit=1``, ``?user_id=alice&user_id=bob`` connected as
alice, two ``X-User-Id`` lines used the first: which copy counts was an accident of the library
(a proxy in front may keep the last one). server/request_text.py's guard now refuses every such
request before anything else — 401 ``unauthorized`` for a credential (Authorization, X-User-Id,
access_token, user_id), else 400 ``invalid_parameter`` — on every route, and on ``/v1/ws/…``
as an HTTP answer before the upgrade. Nothing is written: the draft's log is unchanged.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from server.request_text import CREDENTIAL_HEADERS, CREDENTIAL_PARAMS, READ_HEADERS, READ_PARAMS
from tests.hardening.kit import FEW_EXAMPLES, app_client, create_draft, raw_exchange, socket_outcome


@pytest.fixture
async def live():
    async with app_client() as client:
        draft_id, seq = await create_draft(client, segments=1)
        yield client, draft_id, seq


def _paths(draft_id: str) -> list[tuple[str, str]]:
    d = f"/v1/collab/drafts/{draft_id}"
    return [
        ("GET", "/v1/collab/drafts"),
        ("GET", d),
        ("GET", f"{d}/events"),
        ("GET", "/v1/me/events"),
        ("GET", f"{d}/segments"),
        ("POST", "/v1/collab/drafts"),
        ("POST", f"{d}/segments"),
        ("PATCH", d),
        ("POST", f"{d}/ring/pass"),
        ("GET", "/healthz"),
        ("GET", "/openapi.json"),
        ("GET", "/metrics"),
        ("GET", f"/v1/ws/drafts/{draft_id}"),
    ]


PARAM_VALUES = st.sampled_from(["0", "1", "5000", "alice", "bob", "", "true", "0.5"])
PARSER_SINGLETONS = frozenset({"Content-Type", "Host"})
"""Headers aiohttp's HTTP parser itself refuses to see twice (its plain-text 400)."""
HEADER_VALUES = {
    "Authorization": ["Bearer x", "Bearer y"],
    "X-User-Id": ["alice", "bob"],
    "If-Match": ['"1"', '"2"'],
    "If-None-Match": ['"1"', '"2"'],
    "Idempotency-Key": ["k1", "k2"],
    "Origin": ["http://a.example", "http://b.example"],
    "Content-Type": ["application/json", "text/plain"],
    "Access-Control-Request-Method": ["POST", "GET"],
}


async def _log_length(client: Any, draft_id: str) -> int:
    r = await client.get(f"/v1/collab/drafts/{draft_id}/events", headers={"X-User-Id": "alice"})
    assert r.status == 200
    return len((await r.json())["data"])


@FEW_EXAMPLES
@given(data=st.data(), name=st.sampled_from(READ_PARAMS))
async def test_a_read_parameter_given_twice_is_refused_on_every_route(live, data, name: str) -> None:
    client, draft_id, _ = live
    method, path = data.draw(st.sampled_from(_paths(draft_id)))
    first, second = data.draw(PARAM_VALUES), data.draw(PARAM_VALUES)
    before = await _log_length(client, draft_id)
    r = await client.request(
        method,
        path,
        params=[(name, first), ("other", "x"), (name, second)],
        headers={"X-User-Id": "alice"},
        json={"content": "c", "title": "t", "to_user_id": "bob"},
    )
    body = await r.json()
    expected = (401, "unauthorized") if name in CREDENTIAL_PARAMS else (400, "invalid_parameter")
    assert (r.status, body["error"]["code"]) == expected, (method, path, name, body)
    assert name in body["error"]["message"] and "more than once" in body["error"]["message"]
    assert await _log_length(client, draft_id) == before


@FEW_EXAMPLES
@given(data=st.data(), name=st.sampled_from([n for n in READ_HEADERS if n != "Host"]))
async def test_a_read_header_given_twice_is_refused_on_every_route(live, data, name: str) -> None:
    client, draft_id, _ = live
    method, path = data.draw(st.sampled_from(_paths(draft_id)))
    a, b = HEADER_VALUES[name]
    same = data.draw(st.booleans())  # the same value twice is refused too: one rule, no judging
    headers = CIMultiDict([(name, a), (name, a if same else b)])
    if name != "X-User-Id":
        headers.add("X-User-Id", "alice")
    before = await _log_length(client, draft_id)
    r = await client.request(method, path, headers=headers, data=b'{"content": "c"}')
    if name in PARSER_SINGLETONS:  # aiohttp's parser refuses these first, in plain text
        assert r.status == 400 and "Duplicate" in await r.text()
        assert await _log_length(client, draft_id) == before
        return
    body = await r.json()
    expected = (401, "unauthorized") if name in CREDENTIAL_HEADERS else (400, "invalid_parameter")
    assert (r.status, body["error"]["code"]) == expected, (method, path, name, body)
    assert name in body["error"]["message"]
    assert await _log_length(client, draft_id) == before


async def test_the_examples_of_the_finding(live) -> None:
    client, draft_id, _ = live
    r = await client.get(
        f"/v1/collab/drafts/{draft_id}/events?limit=1&limit=5000", headers={"X-User-Id": "alice"}
    )
    assert (r.status, (await r.json())["error"]["code"]) == (400, "invalid_parameter")
    # a percent-encoded name is the same name
    r = await client.get(
        f"/v1/collab/drafts/{draft_id}/events?limit=1&lim%69t=2", headers={"X-User-Id": "alice"}
    )
    assert r.status == 400
    outcome = await socket_outcome(client, f"/v1/ws/drafts/{draft_id}?user_id=alice&user_id=bob")
    assert outcome == ("http", 401)
    outcome = await socket_outcome(
        client, f"/v1/ws/drafts/{draft_id}?since=0&since=1", headers={"X-User-Id": "alice"}
    )
    assert outcome == ("http", 400)
    r = await client.get(
        f"/v1/collab/drafts/{draft_id}", headers=CIMultiDict([("X-User-Id", "alice"), ("X-User-Id", "bob")])
    )
    assert (r.status, (await r.json())["error"]["code"]) == (401, "unauthorized")


async def test_parameters_given_once_and_unread_repeats_still_work(live) -> None:
    client, draft_id, seq = live
    r = await client.get(
        f"/v1/collab/drafts/{draft_id}/events?since=0&limit=5&x=1&x=2", headers={"X-User-Id": "alice"}
    )
    assert r.status == 200 and (await r.json())["head_seq"] == seq
    outcome = await socket_outcome(
        client, f"/v1/ws/drafts/{draft_id}?user_id=alice&since=0", protocols=("a", "b")
    )
    assert outcome[0] == "connected"


async def test_two_host_headers_are_refused_before_the_upgrade(live) -> None:
    client, draft_id, _ = live
    request = (
        f"GET /v1/ws/drafts/{draft_id}?user_id=alice HTTP/1.1\r\nHost: a\r\nHost: b\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    ).encode()
    status, _, _ = await raw_exchange(client.port, request)
    assert status == 400
