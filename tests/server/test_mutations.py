"""The mutation template: the five declared mutations, and a new one added as one declaration."""

from __future__ import annotations

import pytest
from aiohttp import web

from projections.decide import UpdateDraft
from server.routes import MUTATIONS, Mutation, NoBody, Reply, _data
from server.service import Outcome
from tests.server.inprocess import running_app


def test_the_mutations_are_declared_once_each() -> None:
    assert [(m.method, m.path, m.endpoint) for m in MUTATIONS] == [
        ("POST", "/v1/collab/drafts", "create"),
        ("PATCH", "/v1/collab/drafts/{draft_id}", "update"),
        ("POST", "/v1/collab/drafts/{draft_id}/segments", "segment"),
        ("POST", "/v1/collab/drafts/{draft_id}/ring/pass", "ring"),
        ("POST", "/v1/collab/drafts/{draft_id}/collaborators", "collaborator"),
        # API.md v2 "Access that changes live"
        ("DELETE", "/v1/collab/drafts/{draft_id}/collaborators/{user_id}", "remove-collaborator"),
        ("PATCH", "/v1/collab/drafts/{draft_id}/collaborators/{user_id}", "change-role"),
        ("POST", "/v1/collab/drafts/{draft_id}/archive", "archive"),
        ("POST", "/v1/collab/drafts/{draft_id}/unarchive", "unarchive"),
    ]
    assert all(m.summary for m in MUTATIONS)


def _title_reply(outcome: Outcome) -> Reply:
    return Reply(200, _data({"title": outcome.state.title, "seq": outcome.state.seq}))


# two mutations a later issue might add: one without a body, one with a path parameter
SHOUT = Mutation(
    "POST", "/v1/collab/drafts/{draft_id}/shout", "shout", NoBody,
    lambda user, _, __: UpdateDraft(user, title="SHOUT"), _title_reply, "Set the title to SHOUT.",
)  # fmt: skip
TITLE = Mutation(
    "PUT", "/v1/collab/drafts/{draft_id}/title/{title}", "title", NoBody,
    lambda user, path, _: UpdateDraft(user, title=path["title"]), _title_reply, "Set the title from the path.",
)  # fmt: skip


def _add(app: web.Application) -> None:
    for m in (SHOUT, TITLE):
        app.router.add_route(m.method, m.path, m.handle)


async def test_a_bodiless_mutation_gets_the_whole_template() -> None:
    async with running_app(configure=_add) as srv:
        d = await srv.create()
        status, body, headers = await srv.call("POST", f"/v1/collab/drafts/{d}/shout", "alice")
        assert (status, body) == (200, {"data": {"title": "SHOUT", "seq": 2}}) and headers["ETag"] == '"2"'
        # If-Match, Idempotency-Key, roles and the error table apply unchanged
        status, body, _ = await srv.call(
            "POST", f"/v1/collab/drafts/{d}/shout", "alice", headers={"If-Match": '"1"'}
        )
        assert (status, body["error"]["details"]) == (412, {"head_seq": 2})
        status, body, _ = await srv.call("POST", f"/v1/collab/drafts/{d}/shout", "mallory")
        assert (status, body["error"]["code"]) == (403, "forbidden")
        status, body, _ = await srv.call("POST", "/v1/collab/drafts/nope/shout", "alice")
        assert (status, body["error"]["code"]) == (404, "not_found")
        status, body, _ = await srv.call("POST", f"/v1/collab/drafts/{d}/shout", None)
        assert (status, body["error"]["code"]) == (401, "unauthorized")


@pytest.mark.parametrize("second", ["b", "a b"])
async def test_a_path_parameter_is_part_of_the_idempotency_fingerprint(second: str) -> None:
    async with running_app(configure=_add) as srv:
        d = await srv.create()
        key = {"Idempotency-Key": "k"}
        first = await srv.call("PUT", f"/v1/collab/drafts/{d}/title/a", "alice", headers=key)
        assert first[0] == 200 and first[1]["data"]["title"] == "a"
        again = await srv.call("PUT", f"/v1/collab/drafts/{d}/title/a", "alice", headers=key)
        assert (again[0], again[1], again[2]["Idempotent-Replayed"]) == (200, first[1], "true")
        other = await srv.call("PUT", f"/v1/collab/drafts/{d}/title/{second}", "alice", headers=key)
        assert (other[0], other[1]["error"]["code"]) == (422, "idempotency_key_reused")
