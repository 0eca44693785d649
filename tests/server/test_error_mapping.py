"""The one error table: every domain and store error becomes its status, code and body; nothing else does."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from eventstore import errors as store_errors
from projections import errors as domain
from server.errors import ERROR_TABLE, ApiError, error_middleware, to_api_error
from tests.server.inprocess import running_app

# (error as raised, status, code, details) — every row of the contract's error list that is raised
CASES: list[tuple[Callable[[], Exception], int, str, object]] = [
    (lambda: domain.ValidationFailed("bad", {"title": "too long"}), 422, "validation_error", {"title": "too long"}),
    (lambda: domain.NotFound("draft not found"), 404, "not_found", None),
    (lambda: domain.Forbidden("no"), 403, "forbidden", None),
    (lambda: domain.NotRingHolder("no ring"), 409, "not_ring_holder", None),
    (lambda: domain.InvalidRingTarget("no"), 409, "invalid_ring_target", None),
    (lambda: domain.AlreadyCollaborator("again"), 409, "already_collaborator", None),
    (lambda: domain.CannotRemoveCreator("no"), 409, "cannot_remove_creator", None),
    (lambda: domain.NotCollaborator("who?"), 409, "not_collaborator", None),
    (lambda: domain.DraftArchived("archived"), 409, "draft_archived", None),
    (lambda: domain.PreconditionFailed(7, 3), 412, "precondition_failed", {"head_seq": 7}),
    (lambda: domain.PreconditionFailed(9), 412, "precondition_failed", {"head_seq": 9}),
    (lambda: domain.WriteConflict(12, 5.0), 409, "conflict", {"head_seq": 12}),
    (lambda: domain.IdempotencyKeyReused(), 422, "idempotency_key_reused", None),
    (lambda: store_errors.IdempotencyKeyReused("alice", "k"), 422, "idempotency_key_reused", None),
    (lambda: store_errors.ConcurrencyConflict("draft_x", 3, 4), 409, "conflict", {"head_seq": 4}),
    (lambda: store_errors.StoreUnavailable("disk full"), 503, "unavailable", None),
    (lambda: store_errors.LogCorrupted("bad hash"), 503, "unavailable", None),
    (lambda: store_errors.StoreError("?"), 503, "unavailable", None),
    (lambda: ApiError(429, "rate_limited", "slow down", headers={"Retry-After": "2"}), 429, "rate_limited", None),
]  # fmt: skip


def _all_subclasses(cls: type) -> set[type]:
    out = set()
    for sub in cls.__subclasses__():
        out |= {sub, *_all_subclasses(sub)}
    return out


def test_every_domain_error_has_its_own_row() -> None:
    """A new rule must be given its status on purpose, not inherit the fallback."""
    missing = {c.__name__ for c in _all_subclasses(domain.DomainError) if c not in ERROR_TABLE}
    assert missing == set()
    raised = {type(make()) for make, *_ in CASES}
    assert _all_subclasses(domain.DomainError) <= raised, "a domain error without a test case"


@pytest.mark.parametrize(("make", "status", "code", "details"), CASES)
def test_to_api_error_maps_each_error(
    make: Callable[[], Exception], status: int, code: str, details: object
) -> None:
    api = to_api_error(make())
    assert api is not None
    assert (api.status, api.code, api.details) == (status, code, details)
    assert api.message and "Traceback" not in api.message
    if status == 503:
        assert api.headers == {"Retry-After": "1"}


def test_foreign_errors_are_not_ours() -> None:
    for exc in (ValueError("x"), KeyError("k"), RuntimeError(), OSError("disk")):
        assert to_api_error(exc) is None


def test_a_rule_without_a_row_is_still_a_client_error() -> None:
    class NewRule(domain.DomainError):
        code = "new_rule"

    api = to_api_error(NewRule("refused"))
    assert api is not None and (api.status, api.code, api.message) == (400, "new_rule", "refused")


async def _raising_app(exc: Exception) -> TestClient[web.Request, web.Application]:
    async def boom(request: web.Request) -> web.Response:
        raise exc

    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/boom/{anything}", boom)
    return TestClient(TestServer(app))


@pytest.mark.parametrize(("make", "status", "code", "details"), CASES)
async def test_the_middleware_answers_with_the_contract_body(
    make: Callable[[], Exception], status: int, code: str, details: object
) -> None:
    async with await _raising_app(make()) as client, client.get("/boom/x") as r:
        assert r.status == status
        assert r.content_type == "application/json"
        body = await r.json()
        assert set(body) == {"error"}
        assert body["error"]["code"] == code
        assert body["error"].get("details") == details
        assert isinstance(body["error"]["message"], str) and body["error"]["message"]
        assert "Traceback" not in await r.text()
        if status == 503:
            assert r.headers["Retry-After"] == "1"


async def test_an_unexpected_error_is_500_logged_and_without_a_stack_trace(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="server.errors")
    async with await _raising_app(RuntimeError("secret internals")) as client, client.get("/boom/x") as r:
        assert r.status == 500
        text = await r.text()
    assert "secret internals" not in text and "Traceback" not in text
    assert (await _json(text)) == {"error": {"code": "internal_error", "message": "internal error"}}
    assert any(rec.exc_info and "secret internals" in str(rec.exc_info[1]) for rec in caplog.records)


async def _json(text: str) -> object:
    import orjson

    return orjson.loads(text)


async def test_domain_errors_through_the_real_app() -> None:
    """Each refusal as a client meets it: the service raises, only the middleware speaks HTTP."""
    async with running_app() as srv:
        d = await srv.create("alice")
        base = f"/v1/collab/drafts/{d}"
        seen: dict[str, tuple[int, object]] = {}

        async def record(name: str, status: int, body: object) -> None:
            assert isinstance(body, dict) and set(body) == {"error"}, body
            seen[name] = (status, body["error"].get("details"))
            seen[name + ".code"] = (status, body["error"]["code"])

        missing = "draft_" + "0" * 20
        await record("not_found", *(await srv.call("GET", f"/v1/collab/drafts/{missing}", "alice"))[:2])
        await record("forbidden", *(await srv.call("GET", base, "mallory"))[:2])
        await record("stranger", *(await srv.append(d, user="mallory"))[:2])
        s, b, _ = await srv.call(
            "POST", f"{base}/collaborators", "alice", {"user_id": "carol", "role": "contributor"}
        )
        assert s == 201, b
        await record("not_ring_holder", *(await srv.append(d, user="carol"))[:2])
        s, b, _ = await srv.call(
            "POST", f"{base}/collaborators", "alice", {"user_id": "bob", "role": "viewer"}
        )
        assert s == 201, b
        await record(
            "ring", *(await srv.call("POST", f"{base}/ring/pass", "alice", {"to_user_id": "bob"}))[:2]
        )
        await record(
            "already",
            *(await srv.call("POST", f"{base}/collaborators", "alice", {"user_id": "bob", "role": "viewer"}))[
                :2
            ],
        )
        await record("412", *(await srv.append(d, headers={"If-Match": '"1"'}))[:2])
        await record("422", *(await srv.call("PATCH", base, "alice", {"title": ""}))[:2])
        await record("body", *(await srv.call("PATCH", base, "alice", [1, 2]))[:2])
        s, b, _ = await srv.append(d, headers={"Idempotency-Key": "k1"})
        assert s == 201, b
        await record("reuse", *(await srv.append(d, "other", headers={"Idempotency-Key": "k1"}))[:2])
    assert seen["not_found.code"] == (404, "not_found")
    assert seen["forbidden.code"] == (403, "forbidden")
    assert seen["stranger.code"] == (403, "forbidden")  # a stranger: the role comes first
    assert seen["not_ring_holder.code"] == (409, "not_ring_holder")
    assert seen["ring.code"] == (409, "invalid_ring_target")
    assert seen["already.code"] == (409, "already_collaborator")
    assert seen["412"] == (412, {"head_seq": 3})
    assert seen["412.code"] == (412, "precondition_failed")
    assert seen["422.code"][0] == 422 and seen["422.code"][1] == "validation_error"
    assert seen["422"][1] is not None and "title" in seen["422"][1]  # type: ignore[operator]
    assert seen["body"] == (422, {"body": "must be an object"})
    assert seen["reuse.code"] == (422, "idempotency_key_reused")
