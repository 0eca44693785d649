"""The one middleware (server/front.py): what the four it replaced did, on the paths only it has.

The text guard's one pass over the headers is checked against the exact checks it stands in
for. The socket routes are not wrapped by it (their handler answers its own refusals before the
upgrade), so those refusals are checked here to be the contract's JSON body with CORS headers,
as a REST refusal is; REST requests are timed and socket connections are not.
"""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from server.request_text import (
    ASCII_HEADERS,
    READ_HEADERS,
    _headers_plainly_fine,
    bad_header,
    repeated_header,
)
from tests.hardening.kit import app_client

ALLOWED = "https://app.example"


async def test_a_handshake_error_before_the_upgrade_is_the_json_body_with_cors() -> None:
    async with app_client(allowed_origins=(ALLOWED,)) as client:
        # a plain GET (no Upgrade header): aiohttp's handshake refuses it, 400
        r = await client.get("/v1/ws/drafts/draft_0123456789abcdef0123", headers={"Origin": ALLOWED})
        assert r.status == 400
        assert (await r.json())["error"]["code"] == "bad_request"
        assert r.headers["Access-Control-Allow-Origin"] == ALLOWED
        assert r.headers["Vary"] == "Origin"
        r = await client.get("/v1/ws", headers={"Origin": "https://other.example"})
        assert r.status == 403  # our Origin check, before the handshake
        assert (await r.json())["error"]["code"] == "forbidden"
        assert "Access-Control-Allow-Origin" not in r.headers


HANDSHAKE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}
BROKEN_HANDSHAKES = [
    {},  # a plain GET
    {**HANDSHAKE, "Upgrade": "h2c"},
    {**HANDSHAKE, "Upgrade": "websocket<script>"},
    {**HANDSHAKE, "Connection": "keep-alive"},
    {**HANDSHAKE, "Sec-WebSocket-Version": "12"},
    {**HANDSHAKE, "Sec-WebSocket-Version": "thirteen"},
    {**HANDSHAKE, "Sec-WebSocket-Key": "short"},
    {**HANDSHAKE, "Sec-WebSocket-Key": "bm90IHNpeHRlZW4gYnl0ZXMgYXQgYWxs"},
    {**HANDSHAKE, "Sec-WebSocket-Key": "%%%%%%%%%%%%%%%%%%%%%%%%"},
    {k: v for k, v in HANDSHAKE.items() if k != "Sec-WebSocket-Key"},
    {k: v for k, v in HANDSHAKE.items() if k != "Sec-WebSocket-Version"},
]


async def test_every_broken_opening_handshake_is_a_400_that_says_what_a_handshake_is() -> None:
    """RFC 6455 §4.1's required fields, each missing or wrong, on both socket routes: the
    contract's ``bad_request`` body in our words (naming the RFC), never aiohttp's text echoing
    the client's header values."""
    async with app_client() as client:
        for path in ("/v1/ws/drafts/draft_0123456789abcdef0123?user_id=alice", "/v1/ws?user_id=alice"):
            for headers in BROKEN_HANDSHAKES:
                r = await client.get(path, headers=headers)
                assert r.status == 400, (path, headers)
                error = (await r.json())["error"]
                assert error["code"] == "bad_request", (path, headers)
                assert "RFC 6455" in error["message"] and "<script>" not in error["message"], error
        async with client.ws_connect("/v1/ws?user_id=alice") as ws:  # the sound handshake still upgrades
            assert not ws.closed
            await ws.close()


async def test_switched_off_sockets_are_refused_with_retry_body() -> None:
    async with app_client(ws_enabled=False) as client:
        for path in ("/v1/ws/drafts/draft_0123456789abcdef0123", "/v1/ws"):
            r = await client.get(path)
            assert r.status == 503, path
            assert (await r.json())["error"]["code"] == "unavailable"


async def test_requests_are_timed_and_sockets_are_not() -> None:
    async with app_client() as client:
        r = await client.get("/v1/collab/drafts", headers={"X-User-Id": "alice"})
        assert r.status == 200
        r = await client.get("/v1/collab/drafts/draft_0123456789abcdef0123", headers={"X-User-Id": "alice"})
        assert r.status == 404
        async with client.ws_connect("/v1/ws?user_id=alice") as ws:
            await ws.close()
        r = await client.get("/v1/ws")  # refused before the upgrade: not timed either
        assert r.status == 400
        text = await (await client.get("/metrics")).text()
    count = r'^ringlog_http_request_duration_seconds_count\{{method="GET",route="{}",status="{}"\}} 1\.0$'
    assert re.search(count.format("/v1/collab/drafts", 200), text, re.M)
    assert re.search(count.format("/v1/collab/drafts/{draft_id}", 404), text, re.M)
    assert 'route="/v1/ws' not in text


HEADER_NAMES = st.sampled_from(
    [*READ_HEADERS, *ASCII_HEADERS, "x-user-id", "IF-MATCH", "Accept", "User-Agent", "X-Other"]
)
HEADER_VALUES = st.one_of(
    st.text(alphabet=st.characters(codec="ascii"), max_size=8),
    st.text(max_size=8),  # non-ASCII, valid text
    st.binary(max_size=8).map(lambda b: b.decode("utf-8", "surrogateescape")),  # as aiohttp decodes
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=8))
def test_the_one_pass_over_the_headers_never_lets_through_what_the_exact_checks_refuse(
    pairs: list[tuple[str, str]],
) -> None:
    headers = CIMultiDictProxy(CIMultiDict(pairs))
    if _headers_plainly_fine(headers):
        assert repeated_header(headers) is None and bad_header(headers) is None
