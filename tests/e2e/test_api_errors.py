"""Every REST error code of API.md against a real ``ringlog serve``; never a 500, never a trace."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.apikit import TIMEOUT, Api, assert_error, bearer, users
from tests.serverproc import ServerProcess, make_token


async def head(api: Api, draft_id: str, user: str) -> int:
    _, body, _ = await api.call("GET", f"/v1/collab/drafts/{draft_id}/events?since=0", user)
    return int(body["head_seq"])


async def test_400_invalid_json(api: Api) -> None:
    (alice,) = users("alice")
    d = (await api.create(alice))["id"]
    for path, method in (
        ("/v1/collab/drafts", "POST"),
        (f"/v1/collab/drafts/{d}", "PATCH"),
        (f"/v1/collab/drafts/{d}/segments", "POST"),
        (f"/v1/collab/drafts/{d}/ring/pass", "POST"),
        (f"/v1/collab/drafts/{d}/collaborators", "POST"),
    ):
        for raw in (b"{not json", b"", b'{"title": "x"', b"\xff\xfe"):
            status, body, _ = await api.call(
                method, path, alice, data=raw, headers={"Content-Type": "application/json"}
            )
            assert_error(status, body, 400, "invalid_json")
    assert await head(api, d, alice) == 1


@pytest.mark.parametrize(
    "query",
    [
        "since=-1", "since=abc", "since=1.5", "since=", "since=99999999999999999999999",
        "limit=0", "limit=1001", "limit=-5", "limit=x", "limit=100000",
        "wait=31", "wait=-1", "wait=abc", "wait=nan", "wait=inf", "wait=1e9",
    ],
)  # fmt: skip
async def test_400_invalid_parameter_on_events(api: Api, query: str) -> None:
    (alice,) = users("alice")
    d = (await api.create(alice))["id"]
    status, body, _ = await api.call("GET", f"/v1/collab/drafts/{d}/events?{query}", alice)
    assert_error(status, body, 400, "invalid_parameter")


async def test_400_invalid_idempotency_key_and_if_match(api: Api) -> None:
    (alice,) = users("alice")
    d = (await api.create(alice))["id"]
    path = f"/v1/collab/drafts/{d}/segments"
    for key in ("", "k" * 256, "tab\there", "caf\u00e9", "\u2603"):
        status, body, _ = await api.call("POST", path, alice, {"content": "x"}, {"Idempotency-Key": key})
        assert_error(status, body, 400, "invalid_parameter")
    # 255 printable ASCII characters are fine
    status, _, _ = await api.call("POST", path, alice, {"content": "x"}, {"Idempotency-Key": "k" * 255})
    assert status == 201
    for tag in ("abc", '"x"', '"-1"', '"1.0"', '""', "W/"):
        status, body, _ = await api.call("POST", path, alice, {"content": "x"}, {"If-Match": tag})
        assert_error(status, body, 400, "invalid_parameter")
    assert await head(api, d, alice) == 2


async def test_401_without_or_with_bad_credentials(api: Api) -> None:
    (alice,) = users("alice")
    d = (await api.create(alice))["id"]
    bad_headers: list[dict[str, str]] = [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic YWxpY2U6eA=="},
        {"Authorization": "Bearer not.a.jwt"},
        {"Authorization": f"Bearer {make_token(alice, secret='another-secret-that-is-long-enough-32b')}"},
        {"Authorization": f"Bearer {make_token(alice, expires_in=-120)}"},
        {"X-User-Id": "has space"},
        {"X-User-Id": "x" * 129},
    ]
    for headers in bad_headers:
        for method, path, payload in (
            ("GET", "/v1/collab/drafts", None),
            ("GET", f"/v1/collab/drafts/{d}", None),
            ("GET", f"/v1/collab/drafts/{d}/events", None),
            ("POST", "/v1/collab/drafts", {"title": "t"}),
            ("POST", f"/v1/collab/drafts/{d}/segments", {"content": "x"}),
        ):
            status, body, _ = await api.call(method, path, None, payload, headers)
            assert_error(status, body, 401, "unauthorized")
    assert await head(api, d, alice) == 1
    # the dev header works on this server
    status, _, _ = await api.call("GET", f"/v1/collab/drafts/{d}", None, headers={"X-User-Id": alice})
    assert status == 200


async def test_403_and_404(api: Api) -> None:
    alice, viewer, stranger = users("alice", "viewer", "stranger")
    d = (await api.create(alice))["id"]
    await api.add(d, alice, viewer, "viewer")
    status, body, _ = await api.call("GET", f"/v1/collab/drafts/{d}", stranger)
    assert_error(status, body, 403, "forbidden")
    status, body, _ = await api.segment(d, viewer)
    assert_error(status, body, 403, "forbidden")
    for path in ("/v1/collab/drafts/draft_nope", "/v1/collab/drafts/draft_nope/events"):
        status, body, _ = await api.call("GET", path, alice)
        assert_error(status, body, 404, "not_found")
    status, body, _ = await api.segment("draft_nope", alice)
    assert_error(status, body, 404, "not_found")
    status, body, _ = await api.call("GET", "/v1/no/such/route", alice)
    assert_error(status, body, 404, "not_found")
    status, body, _ = await api.call("DELETE", f"/v1/collab/drafts/{d}", alice)
    assert status == 405 and "error" in body


async def test_409_codes(api: Api) -> None:
    alice, bob, viewer, stranger = users("alice", "bob", "viewer", "stranger")
    d = (await api.create(alice))["id"]
    await api.add(d, alice, bob)
    await api.add(d, alice, viewer, "viewer")
    status, body, _ = await api.segment(d, bob)
    assert_error(status, body, 409, "not_ring_holder")
    status, body, _ = await api.pass_ring(d, bob, alice)
    assert_error(status, body, 409, "not_ring_holder")
    for target in (alice, viewer, stranger):
        status, body, _ = await api.pass_ring(d, alice, target)
        assert_error(status, body, 409, "invalid_ring_target")
    for who, role in ((alice, "contributor"), (bob, "viewer"), (viewer, "contributor")):
        status, body, _ = await api.call(
            "POST", f"/v1/collab/drafts/{d}/collaborators", alice, {"user_id": who, "role": role}
        )
        assert_error(status, body, 409, "already_collaborator")
    assert await head(api, d, alice) == 3


async def test_412_precondition_failed_appends_nothing(api: Api) -> None:
    alice, bob = users("alice", "bob")
    d = (await api.create(alice))["id"]
    base = f"/v1/collab/drafts/{d}"
    status, body, headers = await api.call(
        "POST", base + "/segments", alice, {"content": "a"}, {"If-Match": '"1"'}
    )
    assert status == 201 and headers["ETag"] == '"2"'
    attempts: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", base + "/segments", {"content": "b"}),
        ("PATCH", base, {"title": "changed"}),
        ("POST", base + "/collaborators", {"user_id": bob, "role": "viewer"}),
    ]
    for method, path, payload in attempts:
        for tag in ('"1"', '"3"', "1"):
            status, body, _ = await api.call(method, path, alice, payload, {"If-Match": tag})
            assert_error(status, body, 412, "precondition_failed")
    assert await head(api, d, alice) == 2
    # unquoted current seq is accepted too
    status, _, _ = await api.call("PATCH", base, alice, {"title": "ok"}, {"If-Match": "2"})
    assert status == 200


async def test_413_payload_too_large(api: Api) -> None:
    (alice,) = users("alice")
    d = (await api.create(alice))["id"]
    big = b'{"content": "' + b"x" * (64 * 1024) + b'"}'
    status, body, _ = await api.call(
        "POST",
        f"/v1/collab/drafts/{d}/segments",
        alice,
        data=big,
        headers={"Content-Type": "application/json"},
    )
    assert_error(status, body, 413, "payload_too_large")

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"content": "'
        for _ in range(80):
            yield b"y" * 1024
        yield b'"}'

    status, body, _ = await api.call(
        "POST",
        f"/v1/collab/drafts/{d}/segments",
        alice,
        data=chunks(),
        headers={"Content-Type": "application/json"},
    )
    assert_error(status, body, 413, "payload_too_large")
    status, body, _ = await api.call(
        "POST", "/v1/collab/drafts", alice, data=b'{"title": "' + b"t" * 70000 + b'"}',
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    assert_error(status, body, 413, "payload_too_large")
    assert await head(api, d, alice) == 1


async def test_415_unsupported_media_type(api: Api) -> None:
    (alice,) = users("alice")
    d = (await api.create(alice))["id"]
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "application/xml"):
        status, body, _ = await api.call(
            "POST", f"/v1/collab/drafts/{d}/segments", alice, data=b'{"content": "x"}',
            headers={"Content-Type": ctype},
        )  # fmt: skip
        assert_error(status, body, 415, "unsupported_media_type")
    status, body, _ = await api.call("POST", "/v1/collab/drafts", alice, data=b'{"title": "x"}')
    assert_error(status, body, 415, "unsupported_media_type")
    assert await head(api, d, alice) == 1


async def test_422_validation_error_names_the_fields(api: Api) -> None:
    alice, bob = users("alice", "bob")
    d = (await api.create(alice))["id"]
    cases: list[tuple[str, str, Any, set[str]]] = [
        ("POST", "/v1/collab/drafts", {}, {"title"}),
        ("POST", "/v1/collab/drafts", {"title": ""}, {"title"}),
        ("POST", "/v1/collab/drafts", {"title": "t" * 201}, {"title"}),
        ("POST", "/v1/collab/drafts", {"title": "   "}, {"title"}),
        ("POST", "/v1/collab/drafts", {"title": 5}, {"title"}),
        ("POST", "/v1/collab/drafts", {"title": "t", "description": "d" * 2001}, {"description"}),
        ("POST", "/v1/collab/drafts", {"title": "t", "extra": 1}, {"extra"}),
        ("POST", "/v1/collab/drafts", [1, 2], {"body"}),
        ("POST", "/v1/collab/drafts", "title", {"body"}),
        ("PATCH", f"/v1/collab/drafts/{d}", {}, {"title"}),
        ("PATCH", f"/v1/collab/drafts/{d}", {"title": ""}, {"title"}),
        ("PATCH", f"/v1/collab/drafts/{d}", {"description": "d" * 2001}, {"description"}),
        ("POST", f"/v1/collab/drafts/{d}/segments", {}, {"content"}),
        ("POST", f"/v1/collab/drafts/{d}/segments", {"content": ""}, {"content"}),
        ("POST", f"/v1/collab/drafts/{d}/segments", {"content": "c" * 10_001}, {"content"}),
        ("POST", f"/v1/collab/drafts/{d}/segments", {"content": ["x"]}, {"content"}),
        ("POST", f"/v1/collab/drafts/{d}/ring/pass", {}, {"to_user_id"}),
        ("POST", f"/v1/collab/drafts/{d}/ring/pass", {"to_user_id": "a b"}, {"to_user_id"}),
        ("POST", f"/v1/collab/drafts/{d}/ring/pass", {"to_user_id": "u" * 129}, {"to_user_id"}),
        ("POST", f"/v1/collab/drafts/{d}/collaborators", {"user_id": bob}, {"role"}),
        ("POST", f"/v1/collab/drafts/{d}/collaborators", {"user_id": bob, "role": "owner"}, {"role"}),
        ("POST", f"/v1/collab/drafts/{d}/collaborators", {"user_id": "x\ny", "role": "viewer"}, {"user_id"}),
        ("POST", f"/v1/collab/drafts/{d}/collaborators", {"role": "viewer"}, {"user_id"}),
    ]
    for method, path, payload, fields in cases:
        status, body, _ = await api.call(method, path, alice, payload)
        assert_error(status, body, 422, "validation_error")
        details = body["error"]["details"]
        assert isinstance(details, dict) and fields <= set(details), (payload, details)
    # 10,000 characters is still fine
    status, _, _ = await api.segment(d, alice, "c" * 10_000)
    assert status == 201
    assert await head(api, d, alice) == 2


async def test_422_idempotency_key_reused(api: Api) -> None:
    alice, bob = users("alice", "bob")
    d = (await api.create(alice))["id"]
    key = {"Idempotency-Key": "key-" + uuid.uuid4().hex}
    status, first, _ = await api.call("POST", f"/v1/collab/drafts/{d}/segments", alice, {"content": "a"}, key)
    assert status == 201
    attempts: list[tuple[str, str, Any]] = [
        ("POST", f"/v1/collab/drafts/{d}/segments", {"content": "b"}),  # other body
        ("PATCH", f"/v1/collab/drafts/{d}", {"title": "a"}),  # other endpoint
        ("POST", "/v1/collab/drafts", {"title": "a"}),
        ("POST", f"/v1/collab/drafts/{d}/collaborators", {"user_id": bob, "role": "viewer"}),
    ]
    for method, path, payload in attempts:
        status, body, _ = await api.call(method, path, alice, payload, key)
        assert_error(status, body, 422, "idempotency_key_reused")
    d2 = (await api.create(alice))["id"]
    status, body, _ = await api.call("POST", f"/v1/collab/drafts/{d2}/segments", alice, {"content": "a"}, key)
    assert_error(status, body, 422, "idempotency_key_reused")  # same body, another draft
    assert await head(api, d, alice) == 2 and await head(api, d2, alice) == 1
    status, again, _ = await api.call("POST", f"/v1/collab/drafts/{d}/segments", alice, {"content": "a"}, key)
    assert status == 201 and again == first


async def test_429_rate_limited_with_retry_after(tmp_path: Path) -> None:
    with ServerProcess(str(tmp_path / "rl.db"), "--rate-limit", "1", log_path=tmp_path / "server.log") as srv:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
            api = Api(srv, http)
            statuses: list[int] = []
            limited: tuple[int, Any, Any] | None = None
            for _ in range(6):  # a burst of 2 is allowed, then 1 a second
                result = await api.call("POST", "/v1/collab/drafts", "alice", {"title": "t"})
                statuses.append(result[0])
                if result[0] == 429:
                    limited = result
                    break
            assert limited is not None, statuses
            assert statuses.count(201) >= 2
            status, body, headers = limited
            assert_error(status, body, 429, "rate_limited")
            assert int(headers["Retry-After"]) >= 1
            # the message names the same wait as the header (never "retry in 0.0s")
            assert f"retry in {headers['Retry-After']} s" in body["error"]["message"], body
            # another user has their own bucket; reads are not limited
            status, _, _ = await api.call("POST", "/v1/collab/drafts", "bob", {"title": "t"})
            assert status == 201
            status, _, _ = await api.call("GET", "/v1/collab/drafts", "alice")
            assert status == 200
        assert srv.stop() == 0


async def test_never_a_500_for_garbage(api: Api) -> None:
    (alice,) = users("alice")
    d = (await api.create(alice))["id"]
    garbage: list[tuple[str, str, dict[str, str], bytes]] = []
    paths = [
        "/v1/collab/drafts", f"/v1/collab/drafts/{d}", f"/v1/collab/drafts/{d}/segments",
        f"/v1/collab/drafts/{d}/ring/pass", f"/v1/collab/drafts/{d}/collaborators",
        f"/v1/collab/drafts/{d}/events", "/v1/collab/drafts/%00", "/v1/collab/drafts/" + "x" * 3000,
    ]  # fmt: skip
    bodies = [b"null", b"[]", b"1e999999", b'{"title": null}', b'{"content": {"a": 1}}', b'{"\\ud800": 1}',
              b'{"title": "\\u0000"}', b'{"to_user_id": 12}', b'{"role": []}', b"\x00\x01"]  # fmt: skip
    headers_variants = [
        {"Content-Type": "application/json"},
        {"Content-Type": "application/json", "If-Match": '"99999999999999999999999"'},
        {"Content-Type": "application/json; charset=latin-1"},
        {"Content-Type": "application/json", "If-None-Match": "garbage"},
    ]
    for path in paths:
        for method in ("GET", "POST", "PATCH", "PUT"):
            for hv in headers_variants:
                for raw in bodies[:3] if method == "GET" else bodies:
                    garbage.append((method, path, hv, raw))
    for method, path, hv, raw in garbage:
        status, body, _ = await api.call(method, path, alice, data=raw, headers=hv)
        assert status < 500, (method, path, hv, raw, status, body)
        assert "Traceback" not in str(body) and 'File "' not in str(body)
    status, _, _ = await api.call("GET", "/healthz", None, headers=bearer(alice))
    assert status == 200
