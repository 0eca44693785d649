"""API.md v2 "Access that changes live" in-process: the rights table cell by cell, the ring's
return, archive, idempotency and If-Match on each new endpoint, ``?archived``, ``?at_seq``."""

from __future__ import annotations

from typing import Any

import pytest

from tests.server.inprocess import InProcess, running_app

# alice creates; carl and cora contribute; vic and val view; sam is a stranger
TEAM = {"carl": "contributor", "cora": "contributor", "vic": "viewer", "val": "viewer"}


async def team_draft(srv: InProcess) -> str:
    d = await srv.create("alice")
    for user, role in TEAM.items():
        status, body, _ = await srv.call(
            "POST", f"/v1/collab/drafts/{d}/collaborators", "alice", {"user_id": user, "role": role}
        )
        assert status == 201, body
    return d


def code(body: Any) -> str:
    return str(body["error"]["code"]) if body and "error" in body else "ok"


# (caller, target) -> (status, code) for DELETE …/collaborators/{target} (API.md v2 table)
REMOVE_CELLS = {
    ("alice", "alice"): (409, "cannot_remove_creator"),
    ("alice", "carl"): (200, "ok"),
    ("alice", "vic"): (200, "ok"),
    ("alice", "sam"): (409, "not_collaborator"),
    ("carl", "alice"): (409, "cannot_remove_creator"),
    ("carl", "carl"): (200, "ok"),
    ("carl", "cora"): (403, "forbidden"),
    ("carl", "vic"): (200, "ok"),
    ("carl", "sam"): (409, "not_collaborator"),
    ("vic", "alice"): (409, "cannot_remove_creator"),
    ("vic", "vic"): (200, "ok"),
    ("vic", "val"): (403, "forbidden"),
    ("vic", "carl"): (403, "forbidden"),
    ("vic", "sam"): (409, "not_collaborator"),
    ("sam", "alice"): (409, "cannot_remove_creator"),
    ("sam", "carl"): (403, "forbidden"),
    ("sam", "vic"): (403, "forbidden"),
    ("sam", "sam"): (403, "forbidden"),
}


@pytest.mark.parametrize(("caller", "target"), sorted(REMOVE_CELLS))
async def test_remove_rights_cell_by_cell(caller: str, target: str) -> None:
    async with running_app() as srv:
        d = await team_draft(srv)
        status, body, _ = await srv.call("DELETE", f"/v1/collab/drafts/{d}/collaborators/{target}", caller)
        assert (status, code(body)) == REMOVE_CELLS[(caller, target)]
        _, after, _ = await srv.call("GET", f"/v1/collab/drafts/{d}", "alice")
        ids = {c["user_id"] for c in after["data"]["collaborators"]}
        if status == 200:
            assert body["data"] == {"seq": 6, "ring_state": after["data"]["ring_state"]}
            assert target not in ids and after["data"]["seq"] == 6
        else:
            assert ids == set(TEAM) and after["data"]["seq"] == 5  # nothing appended


ROLE_CELLS = {
    ("alice", "carl", "viewer"): (200, "ok"),
    ("alice", "vic", "contributor"): (200, "ok"),
    ("alice", "alice", "viewer"): (409, "not_collaborator"),
    ("alice", "sam", "viewer"): (409, "not_collaborator"),
    ("carl", "vic", "contributor"): (403, "forbidden"),
    ("carl", "carl", "viewer"): (403, "forbidden"),
    ("vic", "vic", "contributor"): (403, "forbidden"),
    ("sam", "carl", "viewer"): (403, "forbidden"),
}


@pytest.mark.parametrize(("caller", "target", "role"), sorted(ROLE_CELLS))
async def test_change_role_rights_cell_by_cell(caller: str, target: str, role: str) -> None:
    async with running_app() as srv:
        d = await team_draft(srv)
        path = f"/v1/collab/drafts/{d}/collaborators/{target}"
        status, body, _ = await srv.call("PATCH", path, caller, {"role": role})
        assert (status, code(body)) == ROLE_CELLS[(caller, target, role)]
        if status == 200:
            assert body["data"]["seq"] == 6
            assert body["data"]["collaborator"]["user_id"] == target
            assert body["data"]["collaborator"]["role"] == role


@pytest.mark.parametrize("caller", ["alice", "carl", "vic", "sam"])
@pytest.mark.parametrize("action", ["archive", "unarchive"])
async def test_archive_rights(caller: str, action: str) -> None:
    async with running_app() as srv:
        d = await team_draft(srv)
        if action == "unarchive":
            assert (await srv.call("POST", f"/v1/collab/drafts/{d}/archive", "alice"))[0] == 200
        status, body, _ = await srv.call("POST", f"/v1/collab/drafts/{d}/{action}", caller)
        expected = (200, "ok") if caller == "alice" else (403, "forbidden")
        assert (status, code(body)) == expected
        if status == 200:
            assert body["data"]["archived"] is (action == "archive") and body["data"]["seq"] == 6 + (
                action == "unarchive"
            )


async def _events(srv: InProcess, d: str, since: int) -> list[dict[str, Any]]:
    _, body, _ = await srv.call("GET", f"/v1/collab/drafts/{d}/events?since={since}", "alice")
    events: list[dict[str, Any]] = body["data"]
    return events


async def _give_ring(srv: InProcess, d: str, to: str) -> None:
    status, body, _ = await srv.call("POST", f"/v1/collab/drafts/{d}/ring/pass", "alice", {"to_user_id": to})
    assert status == 200, body


@pytest.mark.parametrize(
    ("caller", "method", "body"),
    [("alice", "DELETE", None), ("carl", "DELETE", None), ("alice", "PATCH", {"role": "viewer"})],
    ids=["removed-by-creator", "contributor-leaves", "demoted"],
)
async def test_the_ring_returns_to_the_creator_in_the_same_append(
    caller: str, method: str, body: Any
) -> None:
    async with running_app() as srv:
        d = await team_draft(srv)
        await _give_ring(srv, d, "carl")  # seq 6; history [alice, carl]
        status, reply, _ = await srv.call(method, f"/v1/collab/drafts/{d}/collaborators/carl", caller, body)
        assert status == 200, reply
        assert reply["data"]["seq"] == 8
        first, second = await _events(srv, d, 6)
        if method == "DELETE":
            assert (first["type"], first["data"]) == (
                "collab.collaborator_removed",
                {"collaborator_id": "carl", "role": "contributor"},
            )
            assert reply["data"]["ring_state"] == {
                "current_holder_id": "alice",
                "holders_history": ["alice", "carl", "alice"],
            }
        else:
            assert (first["type"], first["data"]) == (
                "collab.role_changed",
                {"collaborator_id": "carl", "from_role": "contributor", "to_role": "viewer"},
            )
        assert (first["seq"], second["seq"]) == (7, 8)
        assert first["user_id"] == second["user_id"] == caller
        assert second["type"] == "collab.ring_passed"
        assert second["data"] == {
            "from_user_id": "carl",
            "to_user_id": "alice",
            "current_holder_id": "alice",
            "holders_history": ["alice", "carl", "alice"],
        }


async def test_no_ring_event_when_someone_else_holds_it_and_promotion_keeps_it() -> None:
    async with running_app() as srv:
        d = await team_draft(srv)
        await _give_ring(srv, d, "cora")
        status, _, _ = await srv.call("DELETE", f"/v1/collab/drafts/{d}/collaborators/carl", "alice")
        assert status == 200
        status, _, _ = await srv.call(
            "PATCH", f"/v1/collab/drafts/{d}/collaborators/vic", "alice", {"role": "contributor"}
        )
        assert status == 200
        assert [e["type"] for e in await _events(srv, d, 6)] == [
            "collab.collaborator_removed",
            "collab.role_changed",
        ]


async def test_same_role_and_same_archive_state_append_nothing() -> None:
    async with running_app() as srv:
        d = await team_draft(srv)
        status, body, headers = await srv.call(
            "PATCH", f"/v1/collab/drafts/{d}/collaborators/carl", "alice", {"role": "contributor"}
        )
        assert status == 200 and headers["ETag"] == '"5"'
        assert body["data"]["seq"] == 5 and body["data"]["collaborator"]["role"] == "contributor"
        status, body, _ = await srv.call("POST", f"/v1/collab/drafts/{d}/unarchive", "alice")
        assert status == 200 and body["data"]["seq"] == 5 and body["data"]["archived"] is False
        await srv.call("POST", f"/v1/collab/drafts/{d}/archive", "alice")
        status, body, _ = await srv.call("POST", f"/v1/collab/drafts/{d}/archive", "alice")
        assert status == 200 and body["data"]["seq"] == 6 and body["data"]["archived"] is True
        assert len(await _events(srv, d, 0)) == 6


async def test_archive_blocks_every_other_mutation_but_not_reads() -> None:
    async with running_app() as srv:
        d = await team_draft(srv)
        await srv.call("POST", f"/v1/collab/drafts/{d}/archive", "alice")
        p = f"/v1/collab/drafts/{d}"
        attempts = [
            ("PATCH", p, {"title": "new"}),
            ("POST", f"{p}/segments", {"content": "x"}),
            ("POST", f"{p}/ring/pass", {"to_user_id": "carl"}),
            ("POST", f"{p}/collaborators", {"user_id": "zed", "role": "viewer"}),
            ("DELETE", f"{p}/collaborators/vic", None),
            ("PATCH", f"{p}/collaborators/vic", {"role": "contributor"}),
        ]
        for method, path, body in attempts:
            status, reply, _ = await srv.call(method, path, "alice", body)
            assert (status, code(reply)) == (409, "draft_archived"), (method, path)
        assert (await srv.call("GET", p, "vic"))[0] == 200
        assert len(await _events(srv, d, 0)) == 6
        status, reply, _ = await srv.call("POST", f"{p}/unarchive", "alice")
        assert status == 200 and reply["data"]["archived"] is False
        assert (await srv.call("POST", f"{p}/segments", "alice", {"content": "x"}))[0] == 201


async def test_drafts_list_hides_archived_unless_asked() -> None:
    async with running_app() as srv:
        kept = await team_draft(srv)
        put_away = await team_draft(srv)
        await srv.call("POST", f"/v1/collab/drafts/{put_away}/archive", "alice")
        for user in ("alice", "vic"):
            _, default, _ = await srv.call("GET", "/v1/collab/drafts", user)
            _, active, _ = await srv.call("GET", "/v1/collab/drafts?archived=false", user)
            _, archived, _ = await srv.call("GET", "/v1/collab/drafts?archived=true", user)
            assert [r["id"] for r in default["data"]] == [r["id"] for r in active["data"]] == [kept]
            assert [r["id"] for r in archived["data"]] == [put_away]
        await srv.call("DELETE", f"/v1/collab/drafts/{kept}/collaborators/vic", "vic")
        _, mine, _ = await srv.call("GET", "/v1/collab/drafts", "vic")
        assert mine["data"] == []  # a removed user no longer lists the draft


@pytest.mark.parametrize(
    "value",
    ["", "True", "TRUE", "1", "0", "yes", "no", "false ", " true", "tru", "null", "truefalse", "\u0442rue"],
)
async def test_archived_accepts_only_true_and_false(value: str) -> None:
    async with running_app() as srv:
        status, body, _ = await srv.call("GET", "/v1/collab/drafts", "alice", params={"archived": value})
        assert (status, code(body)) == (400, "invalid_parameter")


async def test_archived_given_twice_is_refused() -> None:
    async with running_app() as srv:
        status, body, _ = await srv.call("GET", "/v1/collab/drafts?archived=true&archived=false", "alice")
        assert (status, code(body)) == (400, "invalid_parameter")


NEW_ENDPOINTS = [
    ("DELETE", "collaborators/vic", None),
    ("PATCH", "collaborators/carl", {"role": "viewer"}),
    ("POST", "archive", None),
]


@pytest.mark.parametrize(("method", "tail", "body"), NEW_ENDPOINTS)
async def test_idempotent_retry_replays_the_first_response(method: str, tail: str, body: Any) -> None:
    async with running_app() as srv:
        d = await team_draft(srv)
        path = f"/v1/collab/drafts/{d}/{tail}"
        key = {"Idempotency-Key": "k-1"}
        first = await srv.call(method, path, "alice", body, key)
        assert first[0] == 200
        again = await srv.call(method, path, "alice", body, key)
        assert (again[0], again[1], again[2]["Idempotent-Replayed"]) == (200, first[1], "true")
        assert len(await _events(srv, d, 0)) == 6
        # the same key for another target or endpoint is refused
        other = await srv.call("DELETE", f"/v1/collab/drafts/{d}/collaborators/val", "alice", None, key)
        assert (other[0], code(other[1])) == (422, "idempotency_key_reused")


@pytest.mark.parametrize(("method", "tail", "body"), [*NEW_ENDPOINTS, ("POST", "unarchive", None)])
async def test_stale_if_match_appends_nothing(method: str, tail: str, body: Any) -> None:
    async with running_app() as srv:
        d = await team_draft(srv)
        if tail == "unarchive":
            await srv.call("POST", f"/v1/collab/drafts/{d}/archive", "alice")
        head = len(await _events(srv, d, 0))
        path = f"/v1/collab/drafts/{d}/{tail}"
        status, reply, _ = await srv.call(method, path, "alice", body, {"If-Match": f'"{head - 1}"'})
        assert (status, reply["error"]["details"]) == (412, {"head_seq": head})
        assert len(await _events(srv, d, 0)) == head
        status, reply, _ = await srv.call(method, path, "alice", body, {"If-Match": f'"{head}"'})
        assert status == 200


async def test_a_viewer_may_leave_with_if_match() -> None:
    async with running_app() as srv:
        d = await team_draft(srv)
        path = f"/v1/collab/drafts/{d}/collaborators/vic"
        status, reply, _ = await srv.call("DELETE", path, "vic", None, {"If-Match": '"4"'})
        assert (status, code(reply)) == (412, "precondition_failed")
        status, reply, _ = await srv.call("DELETE", path, "vic", None, {"If-Match": '"5"'})
        assert status == 200
        # a viewer's If-Match on what the table forbids stays 403 before 412
        status, reply, _ = await srv.call(
            "DELETE", f"/v1/collab/drafts/{d}/collaborators/carl", "val", None, {"If-Match": '"1"'}
        )
        assert (status, code(reply)) == (403, "forbidden")


async def test_removed_user_gets_403_next() -> None:
    async with running_app() as srv:
        d = await team_draft(srv)
        await srv.call("DELETE", f"/v1/collab/drafts/{d}/collaborators/carl", "alice")
        for method, path, body in [
            ("GET", f"/v1/collab/drafts/{d}", None),
            ("GET", f"/v1/collab/drafts/{d}/events", None),
            ("GET", f"/v1/collab/drafts/{d}?at_seq=2", None),
            ("POST", f"/v1/collab/drafts/{d}/segments", {"content": "x"}),
        ]:
            status, reply, _ = await srv.call(method, path, "carl", body)
            assert (status, code(reply)) == (403, "forbidden"), path
        # and may be invited again
        status, _, _ = await srv.call(
            "POST", f"/v1/collab/drafts/{d}/collaborators", "alice", {"user_id": "carl", "role": "viewer"}
        )
        assert status == 201


@pytest.mark.parametrize(
    ("target", "body"),
    [
        ("%20", None),
        ("a%09b", None),
        ("%00", None),
        ("x" * 129, None),
        ("%C2%85", None),
    ],
)
async def test_user_ids_in_the_path_that_no_user_can_have(target: str, body: Any) -> None:
    async with running_app() as srv:
        d = await team_draft(srv)
        for method, payload in (("DELETE", None), ("PATCH", {"role": "viewer"})):
            status, reply, _ = await srv.call(
                method, f"/v1/collab/drafts/{d}/collaborators/{target}", "alice", payload
            )
            assert (status, code(reply)) == (422, "validation_error"), (method, target)
            assert "user_id" in reply["error"]["details"]


@pytest.mark.parametrize(
    "role", ["creator", "owner", "Viewer", "", None, 1, ["viewer"], {"r": 1}, "viewer ", "contributor\u0000"]
)
async def test_role_values_outside_the_two_are_422(role: Any) -> None:
    async with running_app() as srv:
        d = await team_draft(srv)
        status, reply, _ = await srv.call(
            "PATCH", f"/v1/collab/drafts/{d}/collaborators/carl", "alice", {"role": role}
        )
        assert (status, code(reply)) == (422, "validation_error")
        assert "role" in reply["error"]["details"]
    async with running_app() as srv:
        d = await team_draft(srv)
        for body in ({}, {"role": "viewer", "extra": 1}, [], "viewer"):
            status, reply, _ = await srv.call(
                "PATCH", f"/v1/collab/drafts/{d}/collaborators/carl", "alice", body
            )
            assert (status, code(reply)) == (422, "validation_error"), body


async def test_at_seq_serves_past_states_with_immutable_headers() -> None:
    async with running_app() as srv:
        d = await team_draft(srv)
        status, now, _ = await srv.call("GET", f"/v1/collab/drafts/{d}", "vic")
        for n in range(1, 6):
            status, body, headers = await srv.call("GET", f"/v1/collab/drafts/{d}?at_seq={n}", "vic")
            assert status == 200 and body["data"]["seq"] == n
            assert headers["ETag"] == f'"{n}"'
            assert headers["Cache-Control"] == "private, max-age=31536000, immutable"
            assert len(body["data"]["collaborators"]) == n - 1
        assert body["data"] == now["data"]
        status, _, headers = await srv.call(
            "GET", f"/v1/collab/drafts/{d}?at_seq=2", "vic", headers={"If-None-Match": '"2"'}
        )
        assert status == 304 and headers["ETag"] == '"2"'


@pytest.mark.parametrize(
    "value", ["0", "6", "-1", "", "1.0", "1e0", "+1", " 1", "1 ", "0x1", "١", "abc", "99999999999999999999"]
)
async def test_at_seq_outside_one_to_head_is_400(value: str) -> None:
    async with running_app() as srv:
        d = await team_draft(srv)
        status, body, _ = await srv.call("GET", f"/v1/collab/drafts/{d}", "alice", params={"at_seq": value})
        assert (status, code(body)) == (400, "invalid_parameter"), value


async def test_at_seq_keeps_the_access_rule_of_now() -> None:
    async with running_app() as srv:
        d = await team_draft(srv)
        await srv.call("DELETE", f"/v1/collab/drafts/{d}/collaborators/vic", "alice")
        status, body, _ = await srv.call("GET", f"/v1/collab/drafts/{d}?at_seq=5", "vic")
        assert (status, code(body)) == (403, "forbidden")
        status, body, _ = await srv.call("GET", f"/v1/collab/drafts/{d}?at_seq=5", "sam")
        assert (status, code(body)) == (403, "forbidden")
        status, body, _ = await srv.call("GET", "/v1/collab/drafts/draft_nope?at_seq=1", "alice")
        assert (status, code(body)) == (404, "not_found")


async def test_an_invalid_field_is_422_before_archived_and_before_a_stale_if_match() -> None:
    async with running_app() as srv:
        d = await team_draft(srv)
        await srv.call("POST", f"/v1/collab/drafts/{d}/archive", "alice")
        p = f"/v1/collab/drafts/{d}"
        for method, path, body in [
            ("POST", f"{p}/ring/pass", {"to_user_id": "a\fb"}),
            ("POST", f"{p}/segments", {"content": "x" * 10_001}),
            ("POST", f"{p}/collaborators", {"user_id": "zed", "role": "owner"}),
            ("PATCH", p, {"title": "\t"}),
        ]:
            for headers in ({}, {"If-Match": '"1"'}):
                status, reply, _ = await srv.call(method, path, "alice", body, headers)
                assert (status, code(reply)) == (422, "validation_error"), (path, headers)


@pytest.mark.parametrize(
    ("caller", "method", "body"),
    [("alice", "DELETE", None), ("bob", "DELETE", None), ("alice", "PATCH", {"role": "viewer"})],
)
async def test_a_retry_of_a_two_event_append_replays_its_whole_response(
    caller: str, method: str, body: Any
) -> None:
    """The key is kept on the append's first record; the replay still answers the state after
    the ring's return (the second event), exactly as the first response did."""
    async with running_app() as srv:
        d = await srv.create("alice")
        await srv.call(
            "POST", f"/v1/collab/drafts/{d}/collaborators", "alice", {"user_id": "bob", "role": "contributor"}
        )
        await _give_ring(srv, d, "bob")
        key = {"Idempotency-Key": "two-events"}
        path = f"/v1/collab/drafts/{d}/collaborators/bob"
        first = await srv.call(method, path, caller, body, key)
        assert first[0] == 200 and first[1]["data"]["seq"] == 5 and first[2]["ETag"] == '"5"'
        await srv.append(d, "later")  # the draft moves on; the replay is still the first answer
        again = await srv.call(method, path, caller, body, key)
        assert (again[0], again[1], again[2]["ETag"], again[2]["Idempotent-Replayed"]) == (
            200,
            first[1],
            '"5"',
            "true",
        )
