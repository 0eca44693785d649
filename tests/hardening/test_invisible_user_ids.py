"""Kind: user ids that look like another user's — invisible and unusable code points.

``al\\u200bice`` (zero-width space), ``\\u202eecila`` (right-to-left override), U+FEFF, private-use
and noncharacters such as U+FFFE were accepted, so an id shown as "alice" could be another
user. ``projections.decide.valid_user_id`` (the one rule) now refuses Unicode format (Cf),
private-use (Co), surrogate (Cs) and control (Cc) characters, whitespace and the 66
noncharacters — on X-User-Id, ``?user_id=``, a JWT's ``sub`` (header and ``access_token``),
ids in bodies and paths, and in the Python client. Every refusal names the input it judged
(``X-User-Id`` header, ``user_id`` query parameter, ``sub`` claim).
"""

from __future__ import annotations

import unicodedata
from typing import Any

import jwt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from projections.decide import user_id_char_refused, valid_user_id
from tests.hardening.kit import FEW_EXAMPLES, app_client, create_draft
from tests.serverproc import TEST_SECRET

NONCHARACTERS = [chr(c) for c in range(0xFDD0, 0xFDF0)] + [
    chr(plane * 0x10000 + low) for plane in range(17) for low in (0xFFFE, 0xFFFF)
]
INVISIBLE = st.one_of(
    st.characters(categories=["Cf", "Co"]),
    st.sampled_from(["\u200b", "\u202e", "\ufeff", "\u2060", "\u00ad", "\U000e0001", *NONCHARACTERS]),
)
LOOKALIKES = st.builds(
    lambda prefix, ch, suffix: prefix + ch + suffix,
    st.sampled_from(["", "al", "alice"]),
    INVISIBLE,
    st.sampled_from(["", "ice", "x"]),
)


def _token(sub: Any) -> str:
    return jwt.encode({"sub": sub, "exp": 4_000_000_000}, TEST_SECRET, algorithm="HS256")


@pytest.fixture
async def live():
    async with app_client() as client:
        yield client


def test_the_rule_refuses_exactly_the_named_categories() -> None:
    for code in range(0x110000):
        ch = chr(code)
        named = (
            unicodedata.category(ch) in ("Cc", "Cf", "Co", "Cs")
            or ch.isspace()
            or 0xFDD0 <= code <= 0xFDEF
            or code & 0xFFFE == 0xFFFE
        )
        assert user_id_char_refused(ch) == named, hex(code)
    assert valid_user_id("alice") and valid_user_id("名前") and valid_user_id("\U0001f600")
    # unassigned code points are accepted: which ones are unassigned depends on the Unicode version
    assert valid_user_id("\u0378")


@FEW_EXAMPLES
@given(user_id=LOOKALIKES)
async def test_lookalike_ids_are_refused_on_every_channel(live, user_id: str) -> None:
    client = live
    assert not valid_user_id(user_id)
    # X-User-Id (dev auth)
    r = await client.post("/v1/collab/drafts", json={"title": "T"}, headers={"X-User-Id": user_id})
    body = await r.json()
    assert (r.status, body["error"]["code"]) == (401, "unauthorized"), user_id
    assert "X-User-Id header" in body["error"]["message"]
    # a JWT's sub
    r = await client.post(
        "/v1/collab/drafts", json={"title": "T"}, headers={"Authorization": f"Bearer {_token(user_id)}"}
    )
    body = await r.json()
    assert (r.status, body["error"]["code"]) == (401, "unauthorized"), user_id
    assert "sub claim" in body["error"]["message"]
    # ids in bodies and paths
    draft_id, _ = await create_draft(client)
    r = await client.post(
        f"/v1/collab/drafts/{draft_id}/collaborators",
        json={"user_id": user_id, "role": "viewer"},
        headers={"X-User-Id": "alice"},
    )
    assert (r.status, (await r.json())["error"]["code"]) == (422, "validation_error"), user_id
    r = await client.post(
        f"/v1/collab/drafts/{draft_id}/ring/pass",
        json={"to_user_id": user_id},
        headers={"X-User-Id": "alice"},
    )
    assert (r.status, (await r.json())["error"]["code"]) == (422, "validation_error"), user_id


async def _socket_refusal(client: Any, **kwargs: Any) -> tuple[str, str, int | None]:
    ws = await client.ws_connect("/v1/ws/drafts/draft_missing", **kwargs)
    try:
        first = await ws.receive_json(timeout=10)
        await ws.receive(timeout=10)
        return first["code"], first["message"], ws.close_code
    finally:
        await ws.close()


@FEW_EXAMPLES
@given(user_id=st.one_of(LOOKALIKES, st.sampled_from(["", "a\x00b", "a b", "x" * 129])))
async def test_socket_refusals_name_the_input_actually_used(live, user_id: str) -> None:
    client = live
    code, message, close = await _socket_refusal(client, params={"user_id": user_id})
    assert (code, close) == ("unauthorized", 1008)
    assert "user_id query parameter" in message and "X-User-Id" not in message, message
    if user_id and "\x00" not in user_id:
        code, message, close = await _socket_refusal(client, headers={"X-User-Id": user_id})
        assert (code, close) == ("unauthorized", 1008)
        assert "X-User-Id header" in message, message
    code, message, close = await _socket_refusal(client, params={"access_token": _token(user_id)})
    assert (code, close) == ("unauthorized", 1008)
    assert "sub claim" in message and "X-User-Id" not in message, message


def test_the_schema_pattern_is_one_a_regex_engine_without_surrogates_can_compile() -> None:
    import re

    from server.openapi import USER_ID_PATTERN

    # Rust's regex (jsonschema-rs, used by schemathesis) refuses a surrogate range; a
    # dropped pattern let the fuzzer send ids the server then refused as "schema-valid".
    assert re.search(r"\\ud[89a-f][0-9a-f]{2}", USER_ID_PATTERN, re.IGNORECASE) is None
    assert "\\ue000-\\uf8ff" in USER_ID_PATTERN
