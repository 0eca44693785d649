"""The demo page's one socket (issue 14, browser part), in Debian's Chromium against a real
``ringlog serve``: every draft the page opens and the user's inbox ride one ``/v1/ws``;
presence with the "typing…" state; the inbox in words; a restart resumes both without repeats."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, Page, expect

from ringlog import RinglogClient
from tests.e2e.test_browser import (  # noqa: F401  (browser: the Chromium fixture)
    ARTIFACTS,
    _append,
    _badge,
    _segments,
    _signed_in,
    browser,
)
from tests.serverproc import ServerProcess

pytestmark = pytest.mark.browser


def _count_sockets(page: Page) -> list[str]:
    """The URL of every WebSocket the page opens from now on."""
    urls: list[str] = []
    page.on("websocket", lambda ws: urls.append(ws.url))
    return urls


def _inbox(page: Page) -> Any:
    return page.locator("#inbox-items li a")


def _present(page: Page, user: str) -> Any:
    return page.locator(f'#presence-list li[data-user-id="{user}"]')


async def _shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / name), full_page=True)


async def test_one_socket_for_every_draft_opened_and_the_inbox(
    browser: Browser,  # noqa: F811
    server: ServerProcess,
) -> None:
    async with RinglogClient(server.url, user_id="alice") as alice_api:
        drafts = [await alice_api.create_draft(f"Story {i}") for i in range(3)]
        page = await (await browser.new_context()).new_page()
        sockets = _count_sockets(page)
        page.set_default_timeout(15_000)
        await page.goto(server.url + "/")
        await page.fill("#dev-user", "alice")
        await page.click("#dev-form button")
        await expect(page.locator("#draft-list a")).to_have_count(3)
        await page.wait_for_function("window.ringlogHub && window.ringlogHub.status === 'live'")
        # an invitation reaches the list through the inbox on the page's socket: no Refresh
        async with RinglogClient(server.url, user_id="bob") as bob_api:
            invited = await bob_api.create_draft("Bob's story")
            await bob_api.add_collaborator(invited.id, "alice", "viewer")
        await expect(page.locator("#draft-list a")).to_have_count(4)
        await expect(page.locator(f'a[data-draft-id="{invited.id}"]')).to_have_text("Bob's story")

        for draft in (drafts[0], drafts[2], drafts[1]):  # open several drafts in turn
            await page.click(f'a[data-draft-id="{draft.id}"]')
            await expect(_badge(page)).to_have_attribute("data-status", "live")
            await alice_api.append_segment(draft.id, f"live in {draft.id}")
            await expect(_segments(page).last).to_have_text(f"live in {draft.id}")
            await page.click("a.back")
            await expect(page.locator("#draft-list a")).to_have_count(4)
        assert len(sockets) == 1, sockets
        assert re.search(r"/v1/ws\?", sockets[0]), sockets
        assert await page.evaluate("window.ringlogHub.socketsOpened") == 1
        await _shot(page, "multiplex-list.png")


async def test_presence_shows_who_is_here_and_who_is_typing(
    browser: Browser,  # noqa: F811
    server: ServerProcess,
) -> None:
    async with RinglogClient(server.url, user_id="alice") as alice_api:
        draft = await alice_api.create_draft("Our story")
        await alice_api.add_collaborator(draft.id, "bob", "contributor")
    alice = await _signed_in(browser, server, "alice")
    await alice.goto(f"{server.url}/#/drafts/{draft.id}")
    await expect(_badge(alice)).to_have_attribute("data-status", "live")
    await expect(_present(alice, "alice").locator(".name")).to_have_text("you")

    bob = await _signed_in(browser, server, "bob")
    await bob.goto(f"{server.url}/#/drafts/{draft.id}")
    await expect(_badge(bob)).to_have_attribute("data-status", "live")
    await expect(_present(alice, "bob").locator(".name")).to_have_text("bob")  # a join, live
    await expect(_present(bob, "alice").locator(".name")).to_have_text("alice")
    await expect(_present(bob, "bob").locator(".name")).to_have_text("you")
    await expect(_present(alice, "bob").locator(".avatar")).to_have_text("B")

    # alice holds the ring and writes: bob sees "typing…"; sending clears it
    await alice.locator("#segment-content").press_sequentially("Once upon")
    await expect(_present(bob, "alice").locator(".typing")).to_have_text("typing…")
    await _shot(bob, "multiplex-presence-typing.png")
    await alice.click("#append-button")
    await expect(_segments(bob)).to_have_text(["Once upon"])
    await expect(_present(bob, "alice").locator(".typing")).to_have_count(0)
    # typing stops by itself after ~3 s without input
    await alice.locator("#segment-content").press_sequentially("a")
    await expect(_present(bob, "alice").locator(".typing")).to_have_count(1)
    await expect(_present(bob, "alice").locator(".typing")).to_have_count(0, timeout=10_000)

    await bob.click("a.back")  # bob leaves the draft (the list subscribes to nothing): a leave
    await expect(bob.locator("#draft-list a")).to_have_count(1)
    await expect(_present(alice, "bob")).to_have_count(0)
    await alice.wait_for_timeout(1_000)
    await expect(_present(alice, "bob")).to_have_count(0)


async def test_inbox_names_passes_and_invites_and_survives_a_restart(
    browser: Browser,  # noqa: F811
    server: ServerProcess,
) -> None:
    bob = await _signed_in(browser, server, "bob")
    sockets = _count_sockets(bob)
    await expect(bob.locator("#inbox")).to_be_visible()
    await expect(bob.locator("#inbox-count")).to_be_hidden()
    async with RinglogClient(server.url, user_id="alice") as alice_api:
        draft = await alice_api.create_draft("Our story")
        await alice_api.add_collaborator(draft.id, "bob", "contributor")
        await expect(bob.locator("#inbox-count")).to_have_text("1")
        await bob.click("#inbox summary")
        await expect(_inbox(bob)).to_have_text(["alice added you to ‘Our story’ as contributor"])
        await expect(bob.locator("#inbox-count")).to_be_hidden()  # opened: read
        await bob.click("#inbox summary")

        await alice_api.pass_ring(draft.id, "bob")
        await expect(bob.locator("#inbox-count")).to_have_text("1")
        await bob.click("#inbox summary")
        await expect(_inbox(bob)).to_have_text([
            "alice passed you the ring on ‘Our story’",
            "alice added you to ‘Our story’ as contributor",
        ])  # fmt: skip
        await _shot(bob, "multiplex-inbox.png")
        await _inbox(bob).first.click()  # opens the draft
        await expect(bob.locator("#draft-title")).to_have_text("Our story")
        await expect(_badge(bob)).to_have_attribute("data-status", "live")
        await expect(bob.locator("#your-turn")).to_be_visible()
        await _append(bob, "bob's line")
        await expect(_segments(bob)).to_have_text(["bob's line"])

    # a restart: the one socket comes back; the draft and the inbox resume without repeats
    assert await asyncio.to_thread(server.stop) == 0
    await expect(_badge(bob)).to_have_attribute("data-status", "offline")
    await asyncio.to_thread(server.start)
    async with RinglogClient(server.url, user_id="alice") as alice_api:
        await expect(_badge(bob)).to_have_attribute("data-status", "live", timeout=30_000)
        await bob.wait_for_function("window.ringlogHub.status === 'live'", timeout=30_000)
        await alice_api.add_collaborator(draft.id, "carol", "viewer")  # not for bob's inbox
        other = await alice_api.create_draft("Another one")
        await alice_api.add_collaborator(other.id, "bob", "viewer")
        await expect(bob.locator("#inbox-count")).to_have_text("1")
        await bob.click("#inbox summary")
        await expect(_inbox(bob)).to_have_text([
            "alice added you to ‘Another one’ as viewer",
            "alice passed you the ring on ‘Our story’",
            "alice added you to ‘Our story’ as contributor",
        ])  # fmt: skip
        positions = await bob.locator("#inbox-items li").evaluate_all(
            "lis => lis.map(li => li.dataset.position)"
        )
        assert len(positions) == len(set(positions)) == 3
    await expect(_segments(bob)).to_have_text(["bob's line"])
    ids = await bob.locator("#segments li").evaluate_all("lis => lis.map(li => li.dataset.segmentId)")
    assert len(ids) == len(set(ids)) == 1
    # one socket before the restart, and the hub's reconnects after it: never one per draft
    assert all(re.search(r"/v1/ws\?", url) for url in sockets), sockets


@pytest.mark.parametrize("leave_by", ["back to the list", "closing the tab"])
async def test_typing_ends_when_the_tab_that_typed_leaves(
    browser: Browser,  # noqa: F811
    server: ServerProcess,
    leave_by: str,
) -> None:
    """alice has the draft open in two tabs and types in one, then leaves with it within the
    idle time: she stays present through the other tab, and her "typing…" must end (a fresh-user
    trial saw it stay for good: the state set last by any of her sockets said so)."""
    async with RinglogClient(server.url, user_id="alice") as alice_api:
        draft = await alice_api.create_draft("Two tabs")
        await alice_api.add_collaborator(draft.id, "bob", "contributor")
    tabs = []
    for _ in range(2):
        tab = await _signed_in(browser, server, "alice")
        await tab.goto(f"{server.url}/#/drafts/{draft.id}")
        await expect(_badge(tab)).to_have_attribute("data-status", "live")
        tabs.append(tab)
    bob = await _signed_in(browser, server, "bob")
    await bob.goto(f"{server.url}/#/drafts/{draft.id}")
    await expect(_present(bob, "alice").locator(".name")).to_have_text("alice")

    await tabs[1].locator("#segment-content").press_sequentially("abc")
    await expect(_present(bob, "alice").locator(".typing")).to_have_count(1)
    if leave_by == "back to the list":
        await tabs[1].click("a.back")
    else:
        await tabs[1].close(run_before_unload=True)
    await expect(_present(bob, "alice").locator(".typing")).to_have_count(0, timeout=10_000)
    await expect(_present(bob, "alice")).to_have_count(1)  # still here, through the first tab
    async with aiohttp.ClientSession() as http:
        url = f"{server.url}/v1/collab/drafts/{draft.id}/presence"
        async with http.get(url, headers={"X-User-Id": "bob"}) as r:
            members = {m["user_id"]: m["state"] for m in (await r.json())["data"]}
    assert members["alice"].get("typing") is not True, members
