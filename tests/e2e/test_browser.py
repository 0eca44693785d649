"""The browser client in Debian's Chromium, driven by Playwright: live, restart, polling, screenshot."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from ringlog import RinglogClient
from tests.serverproc import ServerProcess

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run",
]  # fmt: skip
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
WAIT_MS = 15_000


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Debian's Chromium (never a downloaded one); each test uses fresh contexts (empty profiles)."""
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: CI installs Debian's chromium package (.ci/run)")
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium to run the browser tests")
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


async def _signed_in(browser: Browser, server: ServerProcess, user: str, **context: Any) -> Page:
    page = await (await browser.new_context(**context)).new_page()
    page.set_default_timeout(WAIT_MS)
    await page.goto(server.url + "/")
    await page.fill("#dev-user", user)
    await page.click("#dev-form button")
    await expect(page.locator("#home-view")).to_be_visible()
    return page


async def _create_draft(page: Page, title: str) -> str:
    await page.fill("#new-title", title)
    await page.click("#create-form button")
    await expect(page.locator("#draft-title")).to_have_text(title)
    match = re.search(r"#/drafts/(.+)$", page.url)
    assert match is not None
    return match.group(1)


async def _append(page: Page, text: str) -> None:
    await page.fill("#segment-content", text)
    await page.click("#append-button")


def _segments(page: Page) -> Any:
    return page.locator("#segments li .content")


def _badge(page: Page) -> Any:
    return page.locator("#badge")


async def test_two_users_see_each_other_live(browser: Browser, server: ServerProcess) -> None:
    alice = await _signed_in(browser, server, "alice")
    draft_id = await _create_draft(alice, "Shared story")
    await expect(_badge(alice)).to_have_attribute("data-status", "live")
    await alice.fill("#invite-user", "bob")
    await alice.click("#invite-button")
    await _append(alice, "Once upon a time")
    await expect(_segments(alice)).to_have_text(["Once upon a time"])

    # bob, in his own context (own storage), finds the draft in his list
    bob = await _signed_in(browser, server, "bob", viewport={"width": 390, "height": 844})
    await bob.click(f'a[data-draft-id="{draft_id}"]')
    await expect(_badge(bob)).to_have_attribute("data-status", "live")
    await expect(_badge(bob)).to_have_text("🟢 Live")
    await expect(_segments(bob)).to_have_text(["Once upon a time"])
    await expect(bob.locator("#append-button")).to_be_disabled()  # alice holds the ring

    await alice.select_option("#pass-to", "bob")
    await alice.click("#pass-button")
    await expect(bob.locator("#holder")).to_have_text("bob")
    await expect(bob.locator("#append-button")).to_be_enabled()
    await expect(alice.locator("#append-button")).to_be_disabled()
    await _append(bob, "there was a ring.")
    await expect(_segments(alice)).to_have_text(["Once upon a time", "there was a ring."])
    await expect(_segments(bob)).to_have_text(["Once upon a time", "there was a ring."])
    await expect(bob.locator("#updated")).to_have_text(re.compile(r"^Updated \d"))
    for page in (alice, bob):
        await expect(_badge(page)).to_have_attribute("data-status", "live")

    # the page's fold (ringlog.js) gives exactly the server's state, from the events alone
    folded = await bob.evaluate(
        """async (draftId) => {
            const { foldEvent } = await import("/static/ringlog.js");
            const r = await fetch(`/v1/collab/drafts/${draftId}/events?since=0`, {headers: {"X-User-Id": "bob"}});
            return (await r.json()).data.reduce(foldEvent, null);
        }""",
        draft_id,
    )
    async with RinglogClient(server.url, user_id="bob") as client:
        served = (await client.request("GET", f"/v1/collab/drafts/{draft_id}"))["data"]
    assert folded == served

    # (d) the demo page on a phone-sized screen, kept as a test artifact
    ARTIFACTS.mkdir(exist_ok=True)
    await bob.screenshot(path=str(ARTIFACTS / "demo-draft-phone.png"), full_page=True)
    await alice.screenshot(path=str(ARTIFACTS / "demo-draft-desktop.png"), full_page=True)


async def test_restart_goes_offline_then_live_without_duplicates(
    browser: Browser, server: ServerProcess
) -> None:
    page = await _signed_in(browser, server, "alice")
    draft_id = await _create_draft(page, "Survives restarts")
    await expect(_badge(page)).to_have_attribute("data-status", "live")
    await _append(page, "before")
    await expect(_segments(page)).to_have_text(["before"])

    assert await asyncio.to_thread(server.stop) == 0
    await expect(_badge(page)).to_have_attribute("data-status", re.compile("^(offline|syncing)$"))
    await expect(_badge(page)).to_have_attribute("data-status", "offline")
    await asyncio.to_thread(server.start)
    async with RinglogClient(server.url, user_id="alice") as alice:
        for text in ("while away 1", "while away 2"):
            await alice.append_segment(draft_id, text)
        await expect(_badge(page)).to_have_attribute("data-status", "live")
        await alice.append_segment(draft_id, "live again")
    expected = ["before", "while away 1", "while away 2", "live again"]
    await expect(_segments(page)).to_have_text(expected)
    await expect(page.locator("#updated")).to_have_attribute("data-seq", "5")
    ids = await page.locator("#segments li").evaluate_all("lis => lis.map(li => li.dataset.segmentId)")
    assert len(ids) == len(set(ids)) == 4


async def test_without_websockets_the_page_syncs_by_polling(browser: Browser, tmp_path: Path) -> None:
    args = ("--dev-auth", "--rate-limit", "0", "--no-ws-enabled")
    with ServerProcess(str(tmp_path / "nows.db"), *args, log_path=tmp_path / "server.log") as server:
        page = await _signed_in(browser, server, "alice")
        draft_id = await _create_draft(page, "Polled")
        await expect(_badge(page)).to_have_attribute("data-status", "syncing")
        await expect(_badge(page)).to_have_text("🟡 Syncing")
        await _append(page, "from the page")
        # the page's own append lands first (else the two POSTs race and either order is right)
        await expect(_segments(page)).to_have_text(["from the page"])
        async with RinglogClient(server.url, user_id="alice") as alice:
            await alice.append_segment(draft_id, "from elsewhere")
        await expect(_segments(page)).to_have_text(["from the page", "from elsewhere"])
        assert await _badge(page).get_attribute("data-status") == "syncing"


async def test_sign_in_page_screenshot_and_csp(browser: Browser, server: ServerProcess) -> None:
    context = await browser.new_context(viewport={"width": 390, "height": 700})
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    response = await page.goto(server.url + "/")
    assert response is not None and response.status == 200
    assert "script-src 'self'" in (await response.header_value("content-security-policy") or "")
    await expect(page.locator("#signin-view")).to_be_visible()
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "demo-signin-phone.png"), full_page=True)
    assert errors == []


async def test_the_page_loads_with_no_failed_request(browser: Browser, server: ServerProcess) -> None:
    """No 404 in the console: not for /favicon.ico, nor for anything else the page loads."""
    page = await (await browser.new_context()).new_page()
    failed: list[str] = []
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.on("requestfailed", lambda r: failed.append(f"failed {r.url}"))
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    await page.goto(server.url + "/", wait_until="networkidle")
    await expect(page.locator("#signin-view")).to_be_visible()
    await page.goto(server.url + "/static/ringlog.js", wait_until="networkidle")  # no <link rel=icon> here
    assert failed == [] and errors == []
