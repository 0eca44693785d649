"""Kind 8, one rule per setting, applied by one function on every channel.

* Allowed origins: CORS (preflight and simple requests) and the WebSocket ``Origin`` check both
  ask :func:`server.origins.origin_allowed`; for every configured list and every ``Origin``
  variant (case, default port, trailing slash, ``null``, ``*``, paths, userinfo, other hosts)
  both channels give the same answer.
* Token expiry: REST and the WebSocket use :func:`server.auth.token_valid_until` (same leeway,
  same clock): a token REST accepts opens a socket that stays open until the very moment REST
  starts refusing it, then is closed with 4401.
* Field limits: ``/openapi.json``'s ``maxLength`` and the server's refusals come from the same
  settings.
* User ids: see ``test_user_ids.py`` (header, query, JWT ``sub`` and bodies, one function).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import jwt
import pytest
from aiohttp import WSMsgType
from hypothesis import event, given
from hypothesis import strategies as st

from server.origins import normalize_origin, origin_allowed, parse_allowed_origin
from server.settings import SettingError, Settings
from tests.hardening.kit import EXAMPLES, app_client, create_draft, raw_exchange
from tests.serverproc import TEST_SECRET

BASES = ["https://app.example", "http://localhost:8000", "http://127.0.0.1:5173", "https://[::1]:8443"]


def _variants(base: str) -> st.SearchStrategy[str]:
    scheme, host = base.split("://")
    return st.sampled_from(
        [
            base,
            base.upper(),
            scheme.upper() + "://" + host,
            base + "/",
            base + "/path",
            base + ":443" if ":" not in host.rsplit("]", 1)[-1] else base,
            base.replace("https://", "http://"),
            base.replace("app", "evil"),
            base + ".evil.example",
            f"{scheme}://user@{host}",
            "null",
            "*",
            "",
            base + " ",
        ]
    )


ORIGIN = st.sampled_from(BASES).flatmap(_variants)
CONFIG_ENTRY = st.one_of(
    st.just("*"), st.sampled_from(BASES).flatmap(_variants).filter(lambda e: _config([e]) is not None)
)


def _config(entries: list[str]) -> tuple[str, ...] | None:
    """The normalised setting, or None when an entry is refused (as the command line would)."""
    try:
        return Settings(allowed_origins=tuple(entries)).allowed_origins
    except SettingError:
        return None


async def _cors_preflight(client: Any, origin: str) -> bool:
    r = await client.options(
        "/v1/collab/drafts", headers={"Origin": origin, "Access-Control-Request-Method": "POST", "Host": "x"}
    )
    assert r.status in (204, 403)
    if r.status == 403:  # refused in the contract's error body (API.md "Errors"), like every route
        assert r.content_type == "application/json"
        assert (await r.json())["error"]["code"] == "forbidden"
    return r.status == 204


async def _cors_simple(client: Any, origin: str) -> bool:
    r = await client.get("/v1/collab/drafts", headers={"Origin": origin, "X-User-Id": "alice", "Host": "x"})
    assert r.status == 200
    return r.headers.get("Access-Control-Allow-Origin") == origin


async def _ws_upgrade(client: Any, draft_id: str, origin: str) -> bool:
    request = (
        f"GET /v1/ws/drafts/{draft_id}?user_id=alice HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        f"Origin: {origin}\r\n\r\n"
    ).encode()
    status, _, _ = await raw_exchange(client.port, request)
    assert status in (101, 403)
    return status == 101


@EXAMPLES
@given(entries=st.lists(CONFIG_ENTRY, min_size=1, max_size=3), origin=ORIGIN)
async def test_cors_and_websocket_agree_on_every_origin(entries: list[str], origin: str) -> None:
    allowed = _config(entries)
    if allowed is None:  # an entry that is not an origin: refused at startup, see test_serve_options
        return
    if origin != origin.strip() or not origin:
        return  # HTTP strips the edges of a field value; an empty Origin is no Origin
    async with app_client(allowed_origins=allowed) as client:
        draft_id, _ = await create_draft(client)
        expected = origin_allowed(allowed, origin, "x")  # the raw requests send Host: x
        event(f"allowed={expected}")
        assert await _cors_preflight(client, origin) == expected
        assert await _cors_simple(client, origin) == expected
        assert await _ws_upgrade(client, draft_id, origin) == expected


@pytest.mark.parametrize(
    "configured, origin, allowed",
    [
        ("https://app.example/", "https://app.example", True),  # trailing slash in the setting
        ("https://App.Example", "https://app.example", True),  # case
        ("https://app.example:443", "https://app.example", True),  # default port
        ("https://app.example", "https://app.example:443", True),
        ("http://app.example", "https://app.example", False),  # scheme matters
        ("https://app.example", "https://app.example:8443", False),
        ("https://app.example", "null", False),
        ("*", "null", True),
        ("*", "https://anything.example", True),
        ("https://app.example", "http://x", True),  # the server's own origin (Host: x): its demo page
        ("https://app.example", "https://x", True),  # ... behind a TLS-terminating proxy
        ("https://app.example", "http://x:8080", False),  # another port is another origin
        ("https://app.example", "http://x.evil", False),
    ],
)
async def test_origin_examples_on_both_channels(configured: str, origin: str, allowed: bool) -> None:
    async with app_client(allowed_origins=(configured,)) as client:
        draft_id, _ = await create_draft(client)
        assert await _cors_preflight(client, origin) is allowed
        assert await _ws_upgrade(client, draft_id, origin) is allowed


@pytest.mark.parametrize(
    "entry", ["null", "app.example", "https://app.example/path", "ftp://x", "https://u@x", ""]
)
def test_entries_that_are_not_origins_are_refused_at_startup(entry: str) -> None:
    if entry == "":
        assert Settings(allowed_origins=()).allowed_origins == ()
        return
    with pytest.raises(SettingError, match="--allowed-origins"):
        Settings(allowed_origins=(entry,))
    with pytest.raises(ValueError):
        parse_allowed_origin(entry)


@given(st.text(max_size=40))
def test_normalize_origin_is_idempotent(text: str) -> None:
    normal = normalize_origin(text)
    if normal is not None:
        assert normalize_origin(normal) == normal
        assert parse_allowed_origin(normal) == normal


async def test_a_token_expires_on_the_socket_exactly_when_rest_starts_refusing_it() -> None:
    leeway = 2.0
    exp = int(time.time()) - 1  # past its exp, within the leeway: valid for about a second more
    token = jwt.encode({"sub": "alice", "exp": exp}, TEST_SECRET, algorithm="HS256")
    headers = {"Authorization": f"Bearer {token}"}
    async with app_client(jwt_leeway=leeway) as client:
        r = await client.post("/v1/collab/drafts", json={"title": "T"}, headers=headers)
        assert r.status == 201, await r.text()
        draft_id = (await r.json())["data"]["id"]
        async with client.ws_connect(f"/v1/ws/drafts/{draft_id}", params={"access_token": token}) as ws:
            first = await ws.receive_json(timeout=10)
            assert first["type"] == "connected"
            assert (await ws.receive_json(timeout=10))["type"] == "presence_sync"  # API.md v2
            expired = await ws.receive_json(timeout=10)
            closed_at = time.time()
            assert expired["code"] == "token_expired"
            msg = await asyncio.wait_for(ws.receive(), 10)
            assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED)
            assert ws.close_code == 4401
        assert exp + leeway - 0.05 <= closed_at <= exp + leeway + 1.5  # when REST starts refusing it
        r = await client.get("/v1/collab/drafts", headers=headers)
        assert r.status == 401  # and REST refuses it now


@pytest.mark.parametrize("title_max", [1, 5, 200])
async def test_openapi_limits_and_refusals_come_from_the_same_setting(title_max: int) -> None:
    async with app_client(title_max=title_max) as client:
        doc = await (await client.get("/openapi.json")).json()
        assert (
            doc["components"]["schemas"]["CreateDraftBody"]["properties"]["title"]["maxLength"] == title_max
        )
        for length, status in ((title_max, 201), (title_max + 1, 422)):
            r = await client.post(
                "/v1/collab/drafts", json={"title": "t" * length}, headers={"X-User-Id": "alice"}
            )
            assert r.status == status
