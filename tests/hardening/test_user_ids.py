"""Kind 3 (at the door): user ids that could not be stored are refused at authentication.

API.md "Limits": user ids are 1–128 characters without whitespace or control characters; they
must also be Unicode scalar values (a lone surrogate cannot be encoded as UTF-8, so it can be
neither stored nor sent). One function, ``projections.decide.valid_user_id``, decides on every
channel: ``X-User-Id`` and ``?user_id=`` (dev auth), a JWT's ``sub`` (REST header, WebSocket header,
``?access_token=``), and ids in request bodies. A refused id never reaches the store's writer, so
it cannot fail anyone else's append.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import quote_from_bytes

import jwt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from projections.decide import valid_user_id
from tests.hardening.kit import EXAMPLES, FEW_EXAMPLES, app_client, create_draft, raw_exchange, socket_outcome
from tests.serverproc import TEST_SECRET

BAD_BYTES = [b"\xff", b"a\xfeb", b"\xed\xa0\x80", b"\xc3", b"bob\x80"]
LONE_SURROGATES = ["\ud800", "a\udfffb", "\udcff", "x\ud83d"]  # the last: half an emoji

USER_IDS = st.one_of(
    st.text(min_size=0, max_size=140),
    st.text(alphabet=st.characters(categories=["Cs", "Cc", "Zs", "Co", "So"]), max_size=6),
    st.sampled_from(
        ["alice", "user_xyz789", "名前", "a" * 128, "a" * 129, " bob", "bob\t", "\x85x", *LONE_SURROGATES]
    ),
)


def _token(sub: Any) -> str:
    # json.dumps (pyjwt's encoder) writes a lone surrogate as the escape "\\ud800": a valid token
    return jwt.encode({"sub": sub, "exp": 4_000_000_000}, TEST_SECRET, algorithm="HS256")


@pytest.fixture
async def live():
    async with app_client() as client:
        yield client


def _raw_create(user_header: bytes) -> bytes:
    body = b'{"title": "T"}'
    return (
        b"POST /v1/collab/drafts HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n"
        b"X-User-Id: " + user_header + b"\r\n\r\n" + body
    )


@pytest.mark.parametrize("bad", BAD_BYTES)
async def test_x_user_id_with_invalid_utf8_is_401_and_others_are_unharmed(tmp_path, bad: bytes) -> None:
    # SQLite: its writer commits concurrent appends in groups, which one bad id used to fail
    async with app_client(db=str(tmp_path / "log.db")) as client:
        await _thirty_good_and_one_bad(client, bad)


async def _thirty_good_and_one_bad(client: Any, bad: bytes) -> None:
    async def good(i: int) -> int:
        r = await client.post("/v1/collab/drafts", json={"title": f"t{i}"}, headers={"X-User-Id": f"user{i}"})
        return r.status

    results = await asyncio.gather(
        *(good(i) for i in range(30)), raw_exchange(client.port, _raw_create(b"u" + bad))
    )
    status, _, body = results[-1]
    assert status == 401 and json.loads(body)["error"]["code"] == "unauthorized"
    assert results[:-1] == [201] * 30
    r = await client.get("/v1/collab/drafts", headers={"X-User-Id": "user0"})
    assert len((await r.json())["data"]) == 1


@pytest.mark.parametrize("bad", BAD_BYTES)
async def test_websocket_refuses_invalid_bytes_in_user_id_before_the_upgrade(live, bad: bytes) -> None:
    client = live
    draft_id, _ = await create_draft(client)
    handshake = (
        f"GET /v1/ws/drafts/{draft_id}{{query}} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    )
    header_form = handshake.format(query="").encode() + b"X-User-Id: a" + bad + b"\r\n\r\n"
    query_form = handshake.format(query=f"?user_id=a{quote_from_bytes(bad)}").encode() + b"\r\n"
    for request in (header_form, query_form):
        status, _, body = await raw_exchange(client.port, request)
        assert status == 401, body
        assert json.loads(body)["error"]["code"] == "unauthorized"


@pytest.mark.parametrize("sub", LONE_SURROGATES)
async def test_jwt_sub_with_a_lone_surrogate_is_401_on_rest_and_socket(live, sub: str) -> None:
    client = live
    draft_id, _ = await create_draft(client)
    token = _token(sub)
    r = await client.post(
        "/v1/collab/drafts", json={"title": "T"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert r.status == 401 and (await r.json())["error"]["code"] == "unauthorized"
    for kwargs in ({"headers": {"Authorization": f"Bearer {token}"}}, {"params": {"access_token": token}}):
        outcome = await socket_outcome(client, f"/v1/ws/drafts/{draft_id}", **kwargs)
        assert outcome == ("refused", ("unauthorized", 1008))


@EXAMPLES
@given(sub=USER_IDS)
async def test_jwt_sub_on_rest_follows_the_one_rule(live, sub: str) -> None:
    client = live
    r = await client.post(
        "/v1/collab/drafts", json={"title": "T"}, headers={"Authorization": f"Bearer {_token(sub)}"}
    )
    body = await r.json()
    if valid_user_id(sub):
        assert r.status == 201, (sub, body)
        assert body["data"]["creator_id"] == sub
    else:
        assert r.status == 401, (sub, body)
        assert body["error"]["code"] == "unauthorized"


@FEW_EXAMPLES
@given(sub=USER_IDS, via=st.sampled_from(["access_token", "user_id"]))
async def test_socket_user_ids_follow_the_same_rule(live, sub: str, via: str) -> None:
    client = live
    if via == "user_id" and any("\ud800" <= ch <= "\udfff" for ch in sub):
        return  # a URL cannot carry a lone surrogate at all (covered by the bytes test above)
    params = {"access_token": _token(sub)} if via == "access_token" else {"user_id": sub}
    kind, detail = await socket_outcome(client, "/v1/ws/drafts/draft_missing", params=params)
    if valid_user_id(sub):
        assert (kind, detail) == ("refused", ("not_found", 4404)), sub  # authenticated, then 4404
    else:
        assert (kind, detail) == ("refused", ("unauthorized", 1008)), sub


@EXAMPLES
@given(user_id=USER_IDS.filter(lambda u: not any("\ud800" <= ch <= "\udfff" for ch in u)))
async def test_ids_in_bodies_follow_the_same_rule(live, user_id: str) -> None:
    client = live
    draft_id, _ = await create_draft(client)
    r = await client.post(
        f"/v1/collab/drafts/{draft_id}/collaborators",
        json={"user_id": user_id, "role": "viewer"},
        headers={"X-User-Id": "alice"},
    )
    body = await r.json()
    if valid_user_id(user_id) and user_id != "alice":
        assert r.status == 201, (user_id, body)
    elif user_id != "alice":
        assert r.status == 422, (user_id, body)
        assert body["error"]["code"] == "validation_error"
