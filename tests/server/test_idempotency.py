"""Idempotency-Key and If-Match in process, on every mutation (API.md "HTTP API")."""

from __future__ import annotations

from typing import Any

import pytest

from tests.server.inprocess import InProcess, running_app


async def _mutations(srv: InProcess, d: str) -> list[tuple[str, str, dict[str, Any], str]]:
    """(method, path, body, acting user) of every mutation, each valid against ``d``'s state."""
    status, body, _ = await srv.call(
        "POST", f"/v1/collab/drafts/{d}/collaborators", "alice", {"user_id": "bob", "role": "contributor"}
    )
    assert status == 201, body
    return [
        ("POST", "/v1/collab/drafts", {"title": "new"}, "alice"),
        ("PATCH", f"/v1/collab/drafts/{d}", {"title": "renamed"}, "alice"),
        ("POST", f"/v1/collab/drafts/{d}/segments", {"content": "words"}, "alice"),
        ("POST", f"/v1/collab/drafts/{d}/collaborators", {"user_id": "carol", "role": "viewer"}, "alice"),
        ("POST", f"/v1/collab/drafts/{d}/ring/pass", {"to_user_id": "bob"}, "alice"),
    ]


async def _head(srv: InProcess, d: str) -> int:
    status, body, _ = await srv.call("GET", f"/v1/collab/drafts/{d}", "alice")
    assert status == 200, body
    seq: int = body["data"]["seq"]
    return seq


async def test_a_retry_returns_the_first_response_and_appends_nothing() -> None:
    async with running_app() as srv:
        d = await srv.create()
        for n, (method, path, body, user) in enumerate(await _mutations(srv, d)):
            key = {"Idempotency-Key": f"key-{n}"}
            first = await srv.call(method, path, user, body, key)
            assert first[0] in (200, 201), first
            head = await _head(srv, d)
            positions = await srv.store.last_position()
            again = await srv.call(method, path, user, body, key)
            assert (again[0], again[1]) == (first[0], first[1])
            assert again[2]["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first[2]
            assert again[2]["ETag"] == first[2]["ETag"]
            assert await _head(srv, d) == head and await srv.store.last_position() == positions


async def test_the_first_response_comes_back_after_the_ring_moved_on() -> None:
    async with running_app() as srv:
        d = await srv.create()
        await srv.call(
            "POST", f"/v1/collab/drafts/{d}/collaborators", "alice", {"user_id": "bob", "role": "contributor"}
        )
        first = await srv.append(d, "mine", headers={"Idempotency-Key": "seg"})
        passed = await srv.call("POST", f"/v1/collab/drafts/{d}/ring/pass", "alice", {"to_user_id": "bob"})
        assert first[0] == 201 and passed[0] == 200
        again = await srv.append(d, "mine", headers={"Idempotency-Key": "seg"})  # alice no longer holds it
    assert (again[0], again[1]) == (first[0], first[1])


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/segments", {"content": "another body"}),
        ("PATCH", "", {"title": "same key, other endpoint"}),
        ("POST", "/collaborators", {"user_id": "dave", "role": "viewer"}),
        ("POST", "", {"title": "a create"}),
    ],
)
async def test_one_key_for_another_request_is_422(method: str, path: str, body: dict[str, Any]) -> None:
    async with running_app() as srv:
        d = await srv.create()
        first = await srv.append(d, "original", headers={"Idempotency-Key": "k"})
        assert first[0] == 201
        positions = await srv.store.last_position()
        url = "/v1/collab/drafts" if (method, path) == ("POST", "") else f"/v1/collab/drafts/{d}{path}"
        status, reply, _ = await srv.call(method, url, "alice", body, {"Idempotency-Key": "k"})
        assert (status, reply["error"]["code"]) == (422, "idempotency_key_reused")
        assert "details" not in reply["error"] or reply["error"]["details"] is None
        assert await srv.store.last_position() == positions


async def test_keys_belong_to_one_user() -> None:
    async with running_app() as srv:
        d = await srv.create()
        await srv.call(
            "POST", f"/v1/collab/drafts/{d}/collaborators", "alice", {"user_id": "bob", "role": "contributor"}
        )
        assert (await srv.append(d, "a", headers={"Idempotency-Key": "shared"}))[0] == 201
        await srv.call("POST", f"/v1/collab/drafts/{d}/ring/pass", "alice", {"to_user_id": "bob"})
        status, body, headers = await srv.append(d, "b", user="bob", headers={"Idempotency-Key": "shared"})
    assert status == 201 and "Idempotent-Replayed" not in headers
    assert body["data"]["segment"]["content"] == "b"


@pytest.mark.parametrize("key", ["", "x" * 256, "ключ", "tab\there", "caf\u00e9"])
async def test_a_malformed_key_is_400(key: str) -> None:
    async with running_app() as srv:
        d = await srv.create()
        status, body, _ = await _post_raw(srv, d, key)
    assert (status, body["error"]["code"]) == (400, "invalid_parameter")


async def _post_raw(srv: InProcess, d: str, key: str) -> tuple[int, Any, Any]:
    return await srv.append(d, headers={"Idempotency-Key": key.encode("utf-8").decode("latin-1")})


# -- If-Match -------------------------------------------------------------------------------


@pytest.mark.parametrize("stale", ['"1"', '"2"', "1", '"0"', '"999"'])
async def test_if_match_on_another_head_is_412_with_the_head(stale: str) -> None:
    async with running_app() as srv:
        d = await srv.create()
        assert (await srv.append(d, "one"))[0] == 201
        for method, path, body, user in (await _mutations(srv, d))[1:]:
            head = await _head(srv, d)
            status, reply, _ = await srv.call(method, path, user, body, {"If-Match": stale})
            assert (status, reply["error"]["code"]) == (412, "precondition_failed"), (path, reply)
            assert reply["error"]["details"] == {"head_seq": head}
            assert await _head(srv, d) == head


async def test_if_match_on_the_head_succeeds_quoted_or_not() -> None:
    async with running_app() as srv:
        d = await srv.create()
        for tag in ('"1"', "2", '"3"'):
            status, body, headers = await srv.append(d, tag, headers={"If-Match": tag})
            assert status == 201, body
            assert headers["ETag"] == f'"{int(tag.strip(chr(34))) + 1}"'


async def test_if_match_checks_come_in_the_documented_order() -> None:
    """An invalid field is 422 whatever the head; a viewer's If-Match is 403 before 412."""
    async with running_app() as srv:
        d = await srv.create()
        await srv.call(
            "POST", f"/v1/collab/drafts/{d}/collaborators", "alice", {"user_id": "vic", "role": "viewer"}
        )
        status, body, _ = await srv.call(
            "PATCH", f"/v1/collab/drafts/{d}", "alice", {"title": ""}, {"If-Match": '"1"'}
        )
        assert (status, body["error"]["code"]) == (422, "validation_error")
        status, body, _ = await srv.append(d, user="vic", headers={"If-Match": '"1"'})
        assert (status, body["error"]["code"]) == (403, "forbidden")
        status, body, _ = await srv.append(d, user="alice", headers={"If-Match": '"1"'})
        assert (status, body["error"]["code"]) == (412, "precondition_failed")


@pytest.mark.parametrize("tag", ['"abc"', 'W/"1"', "-1", "1.0", '""', "٣"])
async def test_a_malformed_if_match_is_400(tag: str) -> None:
    async with running_app() as srv:
        d = await srv.create()
        status, body, _ = await srv.append(d, headers={"If-Match": tag.encode().decode("latin-1")})
    assert (status, body["error"]["code"]) == (400, "invalid_parameter")
