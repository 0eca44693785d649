"""Kind: a body where none is expected (found by a new user trying API.md v2's mutations).

``POST …/archive``, ``POST …/unarchive`` and ``DELETE …/collaborators/{user_id}`` take no fields.
They used to ignore whatever body came with them, so a 5 MB body, invalid JSON or a text body got
200 — where every other route answers 413, 400 ``invalid_json`` and 415 (API.md "HTTP API"), and an
Idempotency-Key reused with another body replayed the first answer. Now such a request may carry
no body or ``{}``; any other body gets the answers every body gets, and nothing is appended.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.server.inprocess import InProcess, running_app

BODILESS = [
    ("POST", "/v1/collab/drafts/{d}/archive"),
    ("POST", "/v1/collab/drafts/{d}/unarchive"),
    ("DELETE", "/v1/collab/drafts/{d}/collaborators/bob"),
]

# (raw body, content type) -> (status, code)
BAD_BODIES: list[tuple[bytes, str, int, str]] = [
    (b"{", "application/json", 400, "invalid_json"),
    (b"not json", "application/json", 400, "invalid_json"),
    (b"\xff\xfe", "application/json", 400, "invalid_json"),
    (b"{}", "text/plain", 415, "unsupported_media_type"),
    (b"archive", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
    (b'{"archived": true}', "application/json", 422, "validation_error"),
    (b'{"x": 1}', "application/json", 422, "validation_error"),
    (b"[]", "application/json", 422, "validation_error"),
    (b"null", "application/json", 422, "validation_error"),
    (b'"archive"', "application/json", 422, "validation_error"),
    (b"1", "application/json", 422, "validation_error"),
    (b'{"a": "' + b"x" * 70_000 + b'"}', "application/json", 413, "payload_too_large"),
]


async def _draft(srv: InProcess) -> str:
    d = await srv.create("alice")
    status, body, _ = await srv.call(
        "POST", f"/v1/collab/drafts/{d}/collaborators", "alice", {"user_id": "bob", "role": "viewer"}
    )
    assert status == 201, body
    return d


async def _raw(
    srv: InProcess, method: str, path: str, data: bytes, content_type: str, key: str | None = None
) -> tuple[int, Any]:
    headers = {"X-User-Id": "alice", "Content-Type": content_type}
    if key is not None:
        headers["Idempotency-Key"] = key
    async with srv.client.request(method, path, data=data, headers=headers) as r:
        return r.status, await r.json(content_type=None)


@pytest.mark.parametrize(("method", "template"), BODILESS)
@pytest.mark.parametrize(("data", "content_type", "status", "code"), BAD_BODIES)
async def test_a_body_where_none_is_expected_is_judged_like_any_body(
    method: str, template: str, data: bytes, content_type: str, status: int, code: str
) -> None:
    async with running_app() as srv:
        d = await _draft(srv)
        head = await srv.store.head(d)
        got = await _raw(srv, method, template.format(d=d), data, content_type)
        assert (got[0], got[1]["error"]["code"]) == (status, code), got
        assert await srv.store.head(d) == head, "nothing is appended"


@pytest.mark.parametrize(("method", "template"), BODILESS)
@pytest.mark.parametrize("body", [None, b"{}", b" { } "])
async def test_no_body_or_an_empty_object_is_the_same_request(
    method: str, template: str, body: bytes | None
) -> None:
    async with running_app() as srv:
        d = await _draft(srv)
        path = template.format(d=d)
        if path.endswith("/unarchive"):  # so that it appends, and its key is kept in the log
            assert (await srv.call("POST", f"/v1/collab/drafts/{d}/archive", "alice"))[0] == 200
        if body is None:
            status, payload, _ = await srv.call(method, path, "alice", headers={"Idempotency-Key": "k1"})
        else:
            status, payload = await _raw(srv, method, path, body, "application/json", key="k1")
        assert status == 200, payload
        # a retry of the same key without a body is the same request: replayed, not 422
        again, replay, headers = await srv.call(method, path, "alice", headers={"Idempotency-Key": "k1"})
        assert again == 200 and headers.get("Idempotent-Replayed") == "true", replay
