"""``GET …?at_seq=N`` equals the state as the mutation that produced seq N left it, for every seq
of a long random history (API.md v2 "Time travel over HTTP"), in-process on a MemoryStore."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.server.inprocess import InProcess, running_app

USERS = ["alice", "bob", "carol", "dave"]

steps = st.lists(
    st.tuples(
        st.sampled_from(["segment", "segment", "pass", "invite", "remove", "role", "archive", "update"]),
        st.sampled_from([None, None, None, *USERS]),  # None: who the rules accept (most succeed)
        st.sampled_from(USERS),
        st.sampled_from(["contributor", "contributor", "viewer"]),
        st.sampled_from([False, False, False, True]),  # archive rarely: it blocks the rest
    ),
    min_size=40,
    max_size=80,
)


def request_of(d: str, action: str, other: str, role: str, flag: bool) -> tuple[str, str, Any]:
    p = f"/v1/collab/drafts/{d}"
    return {
        "segment": ("POST", f"{p}/segments", {"content": f"text {other}"}),
        "pass": ("POST", f"{p}/ring/pass", {"to_user_id": other}),
        "invite": ("POST", f"{p}/collaborators", {"user_id": other, "role": role}),
        "remove": ("DELETE", f"{p}/collaborators/{other}", None),
        "role": ("PATCH", f"{p}/collaborators/{other}", {"role": role}),
        "archive": ("POST", f"{p}/{'archive' if flag else 'unarchive'}", None),
        "update": ("PATCH", p, {"title": f"title {other}"}),
    }[action]


Plan = list[tuple[str, str | None, str, str, bool]]


async def history(srv: InProcess, plan: Plan) -> tuple[str, dict[int, Any]]:
    d = await srv.create("alice")
    _, first, _ = await srv.call("GET", f"/v1/collab/drafts/{d}", "alice")
    after: dict[int, Any] = {1: first["data"]}  # seq -> the state the mutation left
    state = first["data"]
    for action, actor, other, role, flag in plan:
        holder = state["ring_state"]["current_holder_id"]
        user = actor or (holder if action in ("segment", "pass") else "alice")
        method, path, body = request_of(d, action, other, role, flag)
        status, reply, _ = await srv.call(method, path, user, body)
        if status >= 300:
            continue
        _, now, _ = await srv.call("GET", f"/v1/collab/drafts/{d}", "alice")
        state = now["data"]
        if "title" in reply["data"]:  # the mutations that answer with the whole state
            assert reply["data"] == state
        else:
            assert reply["data"]["seq"] == state["seq"]
        after[state["seq"]] = state
    return d, after


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps)
def test_at_seq_is_the_state_each_mutation_returned(plan: Plan) -> None:
    async def scenario() -> None:
        async with running_app() as srv:
            d, after = await history(srv, plan)
            head = max(after)
            for n in range(1, head + 1):
                status, body, headers = await srv.call("GET", f"/v1/collab/drafts/{d}?at_seq={n}", "alice")
                assert status == 200 and headers["ETag"] == f'"{n}"' and body["data"]["seq"] == n
                if n in after:  # seqs in the middle of a two-event append have no mutation of their own
                    assert body["data"] == after[n]

    asyncio.run(scenario())
