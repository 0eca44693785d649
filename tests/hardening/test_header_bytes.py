"""Kind 2, header bytes that are not valid UTF-8: 401/400 before anything else happens.

A raw TCP client (asyncio streams) sends arbitrary byte strings in every header the server
reads, on REST routes and on the WebSocket upgrade, to an in-process server and to one real
``ringlog serve``. A credential header (Authorization, X-User-Id) with bytes that are not UTF-8
is 401 ``unauthorized``; any other read header 400 ``invalid_parameter``; on ``/v1/ws/…`` that
answer comes instead of the upgrade (never a 101 followed by an HTTP response in the stream).
Whatever the bytes, nothing answers 5xx.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote_from_bytes

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.request_text import ASCII_HEADERS, CREDENTIAL_HEADERS, READ_HEADERS
from tests.hardening.kit import EXAMPLES, app_client, create_draft, raw_exchange
from tests.serverproc import ServerProcess

UNREAD_HEADERS = ("User-Agent", "Referer", "Accept-Language", "X-Anything")
WS_HANDSHAKE = (
    b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
)
HEADER_BYTES = st.binary(min_size=1, max_size=40).map(
    lambda b: b.replace(b"\r", b"").replace(b"\n", b"").replace(b"\x00", b"").strip(b" \t") or b"x"
)
"""Arbitrary bytes that still make one header line (no CR, LF or NUL; HTTP strips edge spaces)."""

NOT_UTF8 = st.one_of(
    st.sampled_from(
        [b"\xff\xfe", b"\xff", b"\xc3", b"a\x80b", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf"]
    ),
    HEADER_BYTES.filter(lambda b: not _is_utf8(b)),
)


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _request(path: str, header: str, value: bytes, websocket: bool, user_header: bool = True) -> bytes:
    lines = [f"GET {path} HTTP/1.1\r\n".encode()]
    if header != "Host":
        lines.append(b"Host: 127.0.0.1\r\n")
    if websocket:
        lines.append(
            b"".join(
                line + b"\r\n"
                for line in WS_HANDSHAKE.split(b"\r\n")
                if line and line.split(b":", 1)[0].decode() != header
            )
        )
    else:
        lines.append(b"Connection: close\r\n")
    if user_header and header not in ("X-User-Id", "Authorization"):
        lines.append(b"X-User-Id: alice\r\n")
    lines.append(header.encode() + b": " + value + b"\r\n\r\n")
    return b"".join(lines)


def _parser_refuses(value: bytes) -> bool:
    """aiohttp's HTTP parser itself answers 400 (text/plain) to control bytes in a field value."""
    return any((b < 0x20 and b != 0x09) or b == 0x7F for b in value)


def _expected(header: str, value: bytes) -> int | None:
    """The status the guard must answer, or None when the bytes are usable text."""
    if _parser_refuses(value):
        return 400
    if header in ASCII_HEADERS:
        return None if value.isascii() else 400
    if header not in READ_HEADERS or _is_utf8(value):
        return None
    return 401 if header in CREDENTIAL_HEADERS else 400


@pytest.fixture
async def live():
    async with app_client() as client:
        draft_id, _ = await create_draft(client)
        yield client, draft_id


def _check(status: int, head: bytes, body: bytes, expected: int | None, websocket: bool) -> None:
    assert status < 500, (head, body)
    assert b"HTTP/1." not in body, body  # no HTTP answer written into an upgraded stream
    if expected is None:
        return
    assert status == expected, (head, body)
    if b"text/plain" in head:  # the HTTP parser's own 400, before the app sees the request
        assert status == 400
        return
    error = json.loads(body)["error"]
    assert error["code"] == ("unauthorized" if expected == 401 else "invalid_parameter")


@EXAMPLES
@given(
    header=st.sampled_from([*READ_HEADERS, *UNREAD_HEADERS]),
    value=st.one_of(NOT_UTF8, HEADER_BYTES),
    route=st.sampled_from(["list", "draft", "events"]),
)
async def test_rest_any_bytes_in_any_header(live, header: str, value: bytes, route: str) -> None:
    client, draft_id = live
    path = {
        "list": "/v1/collab/drafts",
        "draft": f"/v1/collab/drafts/{draft_id}",
        "events": f"/v1/collab/drafts/{draft_id}/events",
    }[route]
    status, head, body = await raw_exchange(client.port, _request(path, header, value, websocket=False))
    _check(status, head, body, _expected(header, value), websocket=False)


@EXAMPLES
@given(header=st.sampled_from([*READ_HEADERS, *ASCII_HEADERS]), value=st.one_of(NOT_UTF8, HEADER_BYTES))
async def test_websocket_upgrade_any_bytes_in_any_header(live, header: str, value: bytes) -> None:
    client, draft_id = live
    request = _request(f"/v1/ws/drafts/{draft_id}", header, value, websocket=True)
    status, head, body = await raw_exchange(client.port, request)
    expected = _expected(header, value)
    _check(status, head, body, expected, websocket=True)
    if expected is not None:
        assert status != 101


@EXAMPLES
@given(header=st.sampled_from(["If-Match", "Idempotency-Key", "Content-Type", "X-User-Id", "Authorization"]),
       value=NOT_UTF8)  # fmt: skip
async def test_mutations_refuse_before_reading_the_body(live, header: str, value: bytes) -> None:
    client, draft_id = live
    body = b'{"content": "x"}'
    lines = [
        f"POST /v1/collab/drafts/{draft_id}/segments HTTP/1.1\r\n".encode(),
        b"Host: 127.0.0.1\r\nConnection: close\r\n",
        f"Content-Length: {len(body)}\r\n".encode(),
    ]
    if header != "Content-Type":
        lines.append(b"Content-Type: application/json\r\n")
    if header != "X-User-Id":
        lines.append(b"X-User-Id: alice\r\n")
    lines.append(header.encode() + b": " + value + b"\r\n\r\n" + body)
    status, head, answer = await raw_exchange(client.port, b"".join(lines))
    _check(status, head, answer, _expected(header, value), websocket=False)
    r = await client.get(f"/v1/collab/drafts/{draft_id}", headers={"X-User-Id": "alice"})
    assert (await r.json())["data"]["seq"] == 1  # nothing was appended


@EXAMPLES
@given(name=st.sampled_from(["access_token", "user_id", "since"]), value=NOT_UTF8, websocket=st.booleans())
async def test_query_parameters_that_are_not_utf8(live, name: str, value: bytes, websocket: bool) -> None:
    client, draft_id = live
    path = f"/v1/ws/drafts/{draft_id}" if websocket else f"/v1/collab/drafts/{draft_id}/events"
    request = _request(
        f"{path}?{name}={quote_from_bytes(value)}", "X-Trace", b"1", websocket, user_header=False
    )
    status, head, body = await raw_exchange(client.port, request)
    expected = 401 if name in ("access_token", "user_id") else 400
    _check(status, head, body, expected, websocket)


@pytest.mark.parametrize("websocket", [False, True])
async def test_the_example_of_the_issue_on_a_real_server(tmp_path: Path, websocket: bool) -> None:
    log = tmp_path / "server.log"
    with ServerProcess(str(tmp_path / "e2e.db"), "--dev-auth", log_path=log) as srv:
        path = "/v1/ws/drafts/draft_x" if websocket else "/v1/collab/drafts"
        for header, value, expected in [
            ("Authorization", b"Bearer \xff\xfe", 401),
            ("X-User-Id", b"al\xffce", 401),
            ("If-None-Match", b'"\xff"', 400),
            ("Origin", b"http://\xe9\xff", 400),
        ]:
            status, head, body = await raw_exchange(srv.port, _request(path, header, value, websocket))
            _check(status, head, body, expected, websocket)
    assert "Traceback" not in log.read_text()
