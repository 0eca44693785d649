"""ringlog.js against a scripted WebSocket (Playwright's routing) and the real REST API:
duplicates, reordering, gaps, and what each close code makes it do."""

from __future__ import annotations

import asyncio
import json
import re
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.async_api import Browser, Page, WebSocketRoute, expect

from ringlog import RinglogClient
from tests.e2e.scripted_mux import ScriptedMux, route_mux
from tests.e2e.test_browser import WAIT_MS, browser  # noqa: F401  (the Chromium fixture)
from tests.serverproc import ServerProcess, make_token

pytestmark = pytest.mark.browser


def _since(route: WebSocketRoute) -> int:
    return int(parse_qs(urlsplit(route.url).query)["since"][0])


async def _scripted_page(browser: Browser) -> tuple[Page, asyncio.Queue[WebSocketRoute]]:  # noqa: F811
    page = await (await browser.new_context()).new_page()
    page.set_default_timeout(WAIT_MS)
    sockets: asyncio.Queue[WebSocketRoute] = asyncio.Queue()
    await page.route_web_socket(re.compile(r".*/v1/ws/drafts/.*"), sockets.put_nowait)
    return page, sockets


def _connected(route: WebSocketRoute, draft_id: str) -> None:
    route.send(json.dumps({"type": "connected", "draft_id": draft_id, "user_id": "alice",
                           "ts": "2025-01-01T00:00:00.000Z", "head_seq": 0}))  # fmt: skip


async def test_duplicates_reordering_and_gaps_apply_once_in_order(
    browser: Browser,  # noqa: F811
    server: ServerProcess,
) -> None:
    async with RinglogClient(server.url, user_id="alice") as alice:
        draft = await alice.create_draft("Scripted")
        page = await (await browser.new_context()).new_page()
        page.set_default_timeout(WAIT_MS)
        muxes = await route_mux(page)  # the demo page follows drafts over its one /v1/ws
        await page.goto(server.url + "/")
        await page.fill("#dev-user", "alice")
        await page.click("#dev-form button")
        await page.goto(f"{server.url}/#/drafts/{draft.id}")
        first: ScriptedMux = await asyncio.wait_for(muxes.get(), WAIT_MS / 1000)
        first.connected("alice")
        assert await first.accept(draft.id, head_seq=1) == 1  # subscribed from the state it loaded
        badge = page.locator("#badge")
        await expect(badge).to_have_attribute("data-status", "live")

        for i in range(4):  # seq 2..5, in the log but not (yet) on the scripted socket
            await alice.append_segment(draft.id, f"s{i}")
        events, _head = await alice.events(draft.id, since=1)
        by_seq = {e.seq: json.dumps(e.to_dict()) for e in events}
        for seq in (3, 2, 2, 5, 3):  # reordered, repeated, and 4 never sent: a gap
            first.route.send(by_seq[seq])
        segments = page.locator("#segments li .content")
        await expect(segments).to_have_text(["s0", "s1", "s2", "s3"])  # 4 came from /events
        await expect(page.locator("#updated")).to_have_attribute("data-seq", "5")

        await first.route.close(code=1013, reason="too slow")  # resume, from what it has
        second: ScriptedMux = await asyncio.wait_for(muxes.get(), WAIT_MS / 1000)
        second.connected("alice")
        assert await second.accept(draft.id, head_seq=5) == 5
        second.route.send(by_seq[4])  # a late duplicate changes nothing
        await expect(badge).to_have_attribute("data-status", "live")
        second.error("not_found", draft.id, "draft not found")  # no retry after this
        await expect(badge).to_have_attribute("data-status", "stopped")
        await expect(badge).to_have_attribute("title", re.compile("not_found"))
        await expect(segments).to_have_text(["s0", "s1", "s2", "s3"])
        await page.wait_for_timeout(2_000)
        assert len(second.sent_of("subscribe", draft.id)) == 1
        assert muxes.empty()


async def test_expired_token_asks_for_a_fresh_one_and_resumes(
    browser: Browser,  # noqa: F811
    server: ServerProcess,
) -> None:
    alice = RinglogClient(server.url, token=make_token("alice"))
    async with alice:
        draft = await alice.create_draft("Tokens")
        page, sockets = await _scripted_page(browser)
        await page.goto(server.url + "/static/app.css")  # any same-origin page will do
        old, fresh = make_token("alice"), make_token("alice", expires_in=7200)
        await page.evaluate(
            """async ([draftId, old, fresh]) => {
                const { connectDraft } = await import("/static/ringlog.js");
                window.statuses = [];
                window.handle = connectDraft(draftId, {
                    token: old,
                    getToken: async () => fresh,
                    onStatus: (s) => window.statuses.push(s),
                });
            }""",
            [draft.id, old, fresh],
        )
        first = await asyncio.wait_for(sockets.get(), WAIT_MS / 1000)
        assert parse_qs(urlsplit(first.url).query)["access_token"] == [old]
        _connected(first, draft.id)
        first.send(json.dumps({"type": "error", "code": "token_expired", "message": "token expired"}))
        await first.close(code=4401, reason="token_expired")
        second = await asyncio.wait_for(sockets.get(), WAIT_MS / 1000)
        assert parse_qs(urlsplit(second.url).query)["access_token"] == [fresh]
        assert _since(second) == 1
        _connected(second, draft.id)
        await alice.append_segment(draft.id, "after the refresh")
        events, _head = await alice.events(draft.id, since=1)
        second.send(json.dumps(events[0].to_dict()))
        await page.wait_for_function(
            "window.handle.lastSeq === 2 && window.handle.state.segments.length === 1"
        )
        assert await page.evaluate("window.handle.status") == "live"
        assert "stopped" not in await page.evaluate("window.statuses")
        await page.evaluate("window.handle.close()")
