"""The web package (server/static/ringlog.js, built from web/src) against a real ``ringlog serve``:
an optimistic append is confirmed by its own event, a write that lost the race to another user's
change is rolled back with who won (its If-Match refused by the server), and the multiplexed
socket client follows a draft over ``/v1/ws`` exactly as the server folds it."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.async_api import Browser, WebSocketRoute

from ringlog import RinglogClient
from tests.e2e.test_browser import WAIT_MS, browser  # noqa: F401  (the Chromium fixture)
from tests.serverproc import ServerProcess

pytestmark = pytest.mark.browser


async def test_an_optimistic_append_is_confirmed_by_its_own_event(
    browser: Browser,  # noqa: F811
    server: ServerProcess,
) -> None:
    async with RinglogClient(server.url, user_id="alice") as alice:
        draft = await alice.create_draft("Optimistic")
        page = await (await browser.new_context()).new_page()
        page.set_default_timeout(WAIT_MS)
        await page.goto(server.url + "/static/app.css")  # any same-origin page will do
        result: dict[str, Any] = await page.evaluate(
            """async (draftId) => {
                const { connectDraft } = await import("/static/ringlog.js");
                const conn = connectDraft(draftId, { userId: "alice" });
                for (let i = 0; i < 300 && conn.status !== "live"; i++) await new Promise((r) => setTimeout(r, 50));
                const outcome = conn.append("hello");
                const shownAtOnce = conn.view.segments.map((s) => [s.content, !!s.pending]);
                const settled = await outcome;
                const after = conn.view.segments.map((s) => [s.content, !!s.pending]);
                conn.close();
                return { status: conn.status, shownAtOnce, ok: settled.ok, seq: settled.seq, after };
            }""",
            draft.id,
        )
        assert result["shownAtOnce"] == [["hello", True]]
        assert result["ok"] is True and result["seq"] == 2
        assert result["after"] == [["hello", False]]
        state = await alice.get_draft(draft.id)
        assert [s.content for s in state.segments] == ["hello"]


async def test_a_write_that_lost_the_race_is_rolled_back_naming_the_winner(
    browser: Browser,  # noqa: F811
    server: ServerProcess,
) -> None:
    async with (
        RinglogClient(server.url, user_id="alice") as alice,
        RinglogClient(server.url, user_id="bob") as bob,
    ):
        draft = await alice.create_draft("Race")
        await alice.add_collaborator(draft.id, "bob", role="contributor")
        page = await (await browser.new_context()).new_page()
        page.set_default_timeout(WAIT_MS)
        held: list[WebSocketRoute] = []
        # the page's socket is held silent, so it cannot learn of bob's change before it writes

        def hold(route: WebSocketRoute) -> None:
            held.append(route)

        await page.route_web_socket(re.compile(r".*/v1/ws/drafts/.*"), hold)
        await page.goto(server.url + "/static/app.css")
        await page.evaluate(
            """async (draftId) => {
                const { connectDraft } = await import("/static/ringlog.js");
                window.conflicts = [];
                window.conn = connectDraft(draftId, { userId: "alice", onConflict: (c) => window.conflicts.push(c.reason) });
                for (let i = 0; i < 300 && !(window.conn.state && window.conn.state.seq === 2); i++) await new Promise((r) => setTimeout(r, 50));
            }""",
            draft.id,
        )
        await bob.update_draft(draft.id, title="bob's title")  # seq 3: the page still sees seq 2
        result: dict[str, Any] = await page.evaluate(
            """async () => {
                const outcome = window.conn.append("too late");
                const shownAtOnce = window.conn.view.segments.map((s) => s.content);
                const settled = await outcome;
                return { shownAtOnce, ok: settled.ok, reason: settled.ok ? null : settled.conflict.reason,
                         code: settled.ok ? null : settled.conflict.code, conflicts: window.conflicts,
                         after: window.conn.view.segments.length, pending: window.conn.pending.length };
            }"""
        )
        assert result["shownAtOnce"] == ["too late"]
        assert result["ok"] is False
        assert result["code"] == "precondition_failed"  # the server refused its If-Match: "2"
        assert result["reason"] == "bob changed the draft first"
        assert result["conflicts"] == ["bob changed the draft first"]
        assert result["after"] == 0 and result["pending"] == 0
        state = await alice.get_draft(draft.id)
        assert state.segments == () and state.seq == 3
        assert held  # the page did try its socket


async def test_the_multiplexed_socket_client_follows_a_draft_like_the_server_folds_it(
    browser: Browser,  # noqa: F811
    server: ServerProcess,
) -> None:
    """connectMultiplex over the real ``/v1/ws``: subscribe from seq 1, events folded once, in order."""
    async with RinglogClient(server.url, user_id="alice") as alice:
        draft = await alice.create_draft("Many drafts, one socket")
        page = await (await browser.new_context()).new_page()
        page.set_default_timeout(WAIT_MS)
        await page.goto(server.url + "/static/app.css")
        await page.evaluate(
            """async (draftId) => {
                const { connectMultiplex } = await import("/static/ringlog.js");
                const r = await fetch(`/v1/collab/drafts/${draftId}`, { headers: { "X-User-Id": "alice" } });
                const state = (await r.json()).data;
                window.seqs = [];
                window.mux = connectMultiplex({ userId: "alice" });
                window.sub = window.mux.subscribe(draftId, { onEvent: (e) => window.seqs.push(e.seq) }, { since: state.seq, state });
                for (let i = 0; i < 300 && window.mux.status !== "live"; i++) await new Promise((r) => setTimeout(r, 50));
            }""",
            draft.id,
        )
        for text in ("one", "two", "three"):
            await alice.append_segment(draft.id, text)
        await page.wait_for_function("window.seqs.length === 3")
        folded: dict[str, Any] = await page.evaluate("window.sub.state")
        await page.evaluate("window.mux.close()")
        assert await page.evaluate("window.seqs") == [2, 3, 4]
        state = await alice.get_draft(draft.id)
        assert folded == state.to_dict()
