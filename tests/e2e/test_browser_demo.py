"""The demo page as a new user meets it, in Debian's Chromium against a real ``ringlog serve``:
recovery after a restart, failed loads, errors next to their cause, the auth mode, the draft id,
the empty ring list and accessibility basics (issue 15's demo-page part)."""

from __future__ import annotations

import asyncio
import itertools
import re
import socket
import threading
import time
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, Route, expect

from ringlog import RinglogClient
from tests.e2e.test_browser import (  # noqa: F401  (browser: the Chromium fixture)
    ARTIFACTS,
    WAIT_MS,
    _append,
    _badge,
    _create_draft,
    _segments,
    _signed_in,
    browser,
)
from tests.serverproc import ServerProcess, make_token

pytestmark = pytest.mark.browser

STOPPED_FOR_S = 10.0
"""How long the server stays down in the restart test (issue 15)."""
LIVE_AFTER_RESTART_S = 6.0
"""Bound on restart → Live: the page promises ~3 s (a GET every ~3 s), the old one took ~18 s."""
SOCKET_RETRY_CAP_S = 5.0
"""While the page is visible the socket is retried at least this often (ringlog.js)."""


def _shot(page: Page, name: str) -> object:
    ARTIFACTS.mkdir(exist_ok=True)
    return page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def _first_accept(port: int, stop: threading.Event, limit_s: float = 60.0) -> float | None:
    """The monotonic time at which 127.0.0.1:port first accepts a connection (polled every 10 ms)."""
    deadline = time.monotonic() + limit_s
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return time.monotonic()
        except OSError:
            time.sleep(0.01)
    return None


async def test_restart_after_10_s_down_is_live_within_3_s(browser: Browser, server: ServerProcess) -> None:  # noqa: F811
    page = await _signed_in(browser, server, "alice")
    draft_id = await _create_draft(page, "Comes back")
    await expect(_badge(page)).to_have_attribute("data-status", "live")
    await _append(page, "before")
    await expect(_segments(page)).to_have_text(["before"])

    assert await asyncio.to_thread(server.stop) == 0
    await expect(_badge(page)).to_have_attribute("data-status", "offline")
    await asyncio.sleep(STOPPED_FOR_S)  # the scenario itself: ten seconds without a server
    assert await _badge(page).get_attribute("data-status") == "offline"

    stop = threading.Event()
    accepted = asyncio.ensure_future(asyncio.to_thread(_first_accept, server.port, stop))
    try:
        await asyncio.to_thread(server.start)
        accepted_at = await asyncio.wait_for(accepted, 30)
    finally:
        stop.set()
    assert accepted_at is not None
    await expect(_badge(page)).to_have_attribute("data-status", "live", timeout=30_000)
    took = time.monotonic() - accepted_at
    print(f"\nrestart → Live: {took:.2f} s after the restarted server's port accepted")
    assert took < LIVE_AFTER_RESTART_S, f"the page took {took:.2f} s to be Live again"
    await expect(_badge(page)).to_have_text("🟢 Live")
    async with RinglogClient(server.url, user_id="alice") as alice:
        await alice.append_segment(draft_id, "after")
    await expect(_segments(page)).to_have_text(["before", "after"])
    await _shot(page, "demo-live-after-restart.png")


async def test_the_socket_is_retried_at_least_every_5_s(browser: Browser, tmp_path: Path) -> None:  # noqa: F811
    """A server that refuses sockets (503): the page polls and retries the socket, never waiting
    longer than the visible-page cap (jittered backoff, capped at 5 s instead of 30 s)."""
    args = ("--dev-auth", "--rate-limit", "0", "--no-ws-enabled")
    with ServerProcess(str(tmp_path / "nows.db"), *args, log_path=tmp_path / "server.log") as server:
        page = await _signed_in(browser, server, "alice")
        attempts: list[float] = []
        page.on("websocket", lambda ws: attempts.append(time.monotonic()))
        await _create_draft(page, "No sockets")
        await expect(_badge(page)).to_have_attribute("data-status", "syncing")
        # 0.5 + 1 + 2 + 4 s of backoff reach the cap; then watch several capped retries
        await page.wait_for_timeout(24_000)
        gaps = [b - a for a, b in itertools.pairwise(attempts)]
        print(f"\nsocket attempts: {len(attempts)}, longest gap {max(gaps):.2f} s")
        assert len(attempts) >= 5
        # The slack is for the browser's timers, not the client's cap: alone this page's longest
        # gap is 3.2-4.3 s, but after the suite's ~40 earlier pages in the same Chromium one gap
        # of 7.7 s was seen (2026-11-30). What this test exists to catch is the 30 s cap.
        assert max(gaps) < SOCKET_RETRY_CAP_S + 3.5, gaps


async def test_a_bad_or_foreign_draft_id_shows_only_an_error(browser: Browser, server: ServerProcess) -> None:  # noqa: F811
    page = await _signed_in(browser, server, "alice")
    await _create_draft(page, "Alice's story")
    await _append(page, "a segment of alice's")
    await expect(_segments(page)).to_have_text(["a segment of alice's"])

    # straight from a loaded draft to a bad id: nothing of the first draft stays
    await page.evaluate("window.location.hash = '#/drafts/draft_doesnotexist'")
    error = page.locator("#draft-error")
    await expect(error).to_be_visible()
    await expect(error).to_contain_text("draft_doesnotexist")
    await expect(error).to_contain_text(re.compile("no draft with the id", re.IGNORECASE))
    for hidden in ("#draft-body", "#draft-status", "#segments", "#append-button", "#pass-form", "#people"):
        await expect(page.locator(hidden)).to_be_hidden()
    # (the inbox in the top bar may name it: "You created ‘Alice's story’"; the page may not)
    await expect(page.locator("main").get_by_text("Alice's story")).to_have_count(0)
    await _shot(page, "demo-bad-draft-id.png")

    # bob opens alice's draft by id from his home page: not shared with him
    foreign_id = (await _list_ids(page))[0]
    bob = await _signed_in(browser, server, "bob")
    await bob.fill("#open-id", foreign_id)
    await bob.click("#open-form button")
    await expect(bob.locator("#draft-error")).to_contain_text(re.compile("not a collaborator", re.IGNORECASE))
    await expect(bob.locator("#draft-body")).to_be_hidden()
    await expect(bob.locator("#append-button")).to_be_hidden()

    # back to a good draft: the error goes, the draft shows
    await page.goto(f"{server.url}/#/drafts/{foreign_id}")
    await expect(page.locator("#draft-title")).to_have_text("Alice's story")
    await expect(page.locator("#draft-error")).to_be_hidden()
    await expect(_badge(page)).to_have_attribute("data-status", "live")


async def _list_ids(page: Page) -> list[str]:
    await page.goto(page.url.split("#", 1)[0] + "#/")
    await expect(page.locator("#draft-list a").first).to_be_visible()
    ids: list[str] = await page.locator("#draft-list a").evaluate_all("as => as.map(a => a.dataset.draftId)")
    return ids


async def _below(page: Page, lower: str, upper: str) -> bool:
    a = await page.locator(lower).bounding_box()
    b = await page.locator(upper).bounding_box()
    assert a is not None and b is not None
    return a["y"] >= b["y"] + b["height"] - 1


async def test_errors_and_notices_appear_next_to_their_cause(browser: Browser, server: ServerProcess) -> None:  # noqa: F811
    page = await _signed_in(browser, server, "alice")
    draft_id = await _create_draft(page, "Errors in place")

    await page.fill("#invite-user", "bob")
    await page.click("#invite-button")
    done = page.locator("#invite-form #invite-done")
    await expect(done).to_have_text("Invited bob as a contributor.")
    assert await _below(page, "#invite-done", "#invite-button")

    # the pass: the real server refuses a pass to someone who is no collaborator
    async def to_nobody(route: Route) -> None:
        await route.continue_(post_data='{"to_user_id": "nobody"}')

    await page.route(re.compile(r".*/ring/pass$"), to_nobody)
    await page.select_option("#pass-to", "bob")
    await page.click("#pass-button")
    pass_error = page.locator("#pass-form .error")
    await expect(pass_error).to_be_visible()
    await expect(pass_error).to_contain_text(re.compile(r"\S"))
    assert await _below(page, "#pass-form .error", "#pass-button")
    await page.unroute(re.compile(r".*/ring/pass$"))

    # the append box: the real server refuses an empty segment (422), its error under the box
    async def emptied(route: Route) -> None:
        await route.continue_(post_data='{"content": ""}')

    await page.route(re.compile(r".*/segments$"), emptied)
    await _append(page, "will arrive empty")
    append_error = page.locator("#append-form .error")
    await expect(append_error).to_be_visible()
    await expect(append_error).to_contain_text(re.compile(r"\S"))
    assert await _below(page, "#append-form .error", "#segment-content")
    await expect(page.locator("#segment-content")).to_have_value("will arrive empty")  # kept to retry
    await expect(_segments(page)).to_have_count(0)
    async with RinglogClient(server.url, user_id="alice") as alice:
        events, _head = await alice.events(draft_id, since=0)
    assert [e.type for e in events][-1] != "collab.segment_added"
    assert await page.locator("#message").count() == 0  # no page-wide banner far from the cause
    await _shot(page, "demo-errors-in-place.png")

    # a later success moves the draft on: the earlier refusals no longer apply and go away
    await page.unroute(re.compile(r".*/segments$"))
    await page.fill("#segment-content", "")
    await _append(page, "this one arrives")
    await expect(_segments(page)).to_have_text(["this one arrives"])
    await expect(append_error).to_be_hidden()
    await expect(pass_error).to_be_hidden()


async def test_cannot_be_reached_goes_away_once_live_again(browser: Browser, server: ServerProcess) -> None:  # noqa: F811
    """A write refused because the server is down says so under the append box, and the message
    goes away by itself once the page is Live again (a fresh-user trial saw it stay)."""
    page = await _signed_in(browser, server, "alice")
    await _create_draft(page, "Comes and goes")
    await expect(_badge(page)).to_have_attribute("data-status", "live")
    assert await asyncio.to_thread(server.stop) == 0
    await expect(_badge(page)).to_have_attribute("data-status", "offline")
    await _append(page, "while down")
    append_error = page.locator("#append-form .error")
    await expect(append_error).to_contain_text("cannot be reached", timeout=30_000)
    await expect(page.locator("#segment-content")).to_have_value("while down")  # kept to retry
    await asyncio.to_thread(server.start)
    await expect(_badge(page)).to_have_attribute("data-status", "live", timeout=30_000)
    await expect(append_error).to_be_hidden()


async def test_a_server_without_dev_auth_says_so(browser: Browser, tmp_path: Path) -> None:  # noqa: F811
    with ServerProcess(str(tmp_path / "jwt.db"), "--rate-limit", "0", log_path=tmp_path / "s.log") as server:
        page = await (await browser.new_context()).new_page()
        page.set_default_timeout(WAIT_MS)
        # a dev identity left from an earlier server with --dev-auth is not "signed in" here
        await page.goto(server.url + "/static/app.css")
        await page.evaluate("""() => sessionStorage.setItem("ringlog.identity", '{"userId": "alice"}')""")
        await page.goto(server.url + "/")
        await expect(page.locator("#signin-view")).to_be_visible()
        await expect(page.locator("#dev-off")).to_be_visible()
        await expect(page.locator("#dev-off")).to_contain_text("--dev-auth")
        await expect(page.locator("#dev-user")).to_be_disabled()
        await expect(page.locator("#whoami")).to_have_text("")
        await expect(page.locator("#sign-out")).to_be_hidden()
        await _shot(page, "demo-dev-auth-off.png")

        await page.fill("#token-input", make_token("alice"))
        await page.click("#token-form button")
        await expect(page.locator("#home-view")).to_be_visible()
        await expect(page.locator("#whoami")).to_have_text("Signed in as alice")

    # a server with dev auth: the dev form is open, no notice; then it is restarted with tokens
    # only while a dev user follows a draft: the page signs out and says why
    db = str(tmp_path / "dev.db")
    with ServerProcess(db, "--dev-auth", log_path=tmp_path / "d.log") as server:
        page = await _signed_in(browser, server, "alice")
        await expect(page.locator("#dev-off")).to_be_hidden()
        await expect(page.locator("#whoami")).to_have_text("Signed in as alice (dev)")
        await _create_draft(page, "Dev for now")
        await expect(_badge(page)).to_have_attribute("data-status", "live")
        assert await asyncio.to_thread(server.stop) == 0
        tokens_only = ServerProcess(db, "--rate-limit", "0", log_path=tmp_path / "t.log")
        tokens_only.port = server.port
        with tokens_only:
            await expect(page.locator("#signin-view")).to_be_visible(timeout=30_000)
            await expect(page.locator("#dev-off")).to_be_visible()
            await expect(page.locator("#whoami")).to_have_text("")
            await expect(page.locator("#draft-view")).to_be_hidden()


async def test_the_draft_id_is_shown_and_copied(browser: Browser, server: ServerProcess) -> None:  # noqa: F811
    page = await _signed_in(browser, server, "alice", permissions=["clipboard-read", "clipboard-write"])
    draft_id = await _create_draft(page, "Copy me")
    await expect(page.locator("#draft-id")).to_have_text(draft_id)
    await page.click("#copy-id")
    await expect(page.locator("#copy-status")).to_have_text("Copied.")
    assert await page.evaluate("navigator.clipboard.readText()") == draft_id

    # without the Clipboard API (an old browser, plain http elsewhere): the execCommand fallback
    context = await browser.new_context()
    await context.add_init_script(
        """Object.defineProperty(navigator, "clipboard", { value: undefined });
           document.addEventListener("copy", () => { window.copied = document.activeElement.value; });"""
    )
    old = await context.new_page()
    old.set_default_timeout(WAIT_MS)
    await old.goto(server.url + "/")
    await old.fill("#dev-user", "alice")
    await old.click("#dev-form button")
    await old.goto(f"{server.url}/#/drafts/{draft_id}")
    await expect(old.locator("#draft-id")).to_have_text(draft_id)
    await old.click("#copy-id")
    await expect(old.locator("#copy-status")).to_have_text("Copied.")
    assert await old.evaluate("window.copied") == draft_id
    await expect(old.locator("#copy-id")).to_be_focused()


async def test_an_empty_pass_list_says_why(browser: Browser, server: ServerProcess) -> None:  # noqa: F811
    alice = await _signed_in(browser, server, "alice")
    draft_id = await _create_draft(alice, "Alone")
    hint = alice.locator("#pass-hint")
    await expect(hint).to_contain_text(re.compile("invite someone as a contributor", re.IGNORECASE))
    await expect(alice.locator("#pass-button")).to_be_disabled()
    await _shot(alice, "demo-pass-nobody.png")

    await alice.fill("#invite-user", "vera")
    await alice.select_option("#invite-role", "viewer")
    await alice.click("#invite-button")  # a viewer cannot hold the ring: still nobody
    await expect(alice.locator('#people li[data-user-id="vera"]')).to_be_visible()
    await expect(hint).to_contain_text("only contributors can hold it")

    await alice.fill("#invite-user", "bob")
    await alice.select_option("#invite-role", "contributor")
    await alice.click("#invite-button")
    await expect(alice.locator("#pass-to option")).to_have_text(["bob"])
    await expect(hint).to_be_hidden()
    await expect(alice.locator("#pass-button")).to_be_enabled()

    bob = await _signed_in(browser, server, "bob")
    await bob.goto(f"{server.url}/#/drafts/{draft_id}")
    await expect(bob.locator("#pass-hint")).to_have_text(
        "Only the ring holder can pass it: alice holds it now."
    )
    await expect(bob.locator("#pass-button")).to_be_disabled()


async def test_labels_focus_order_and_a_live_status(browser: Browser, server: ServerProcess) -> None:  # noqa: F811
    page = await _signed_in(browser, server, "alice")
    await _create_draft(page, "Accessible")
    unlabelled = await page.evaluate(
        """() => [...document.querySelectorAll("input, select, textarea, button")]
              .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute("aria-label")
                              && !(el.tagName === "BUTTON" && el.textContent.trim()))
              .map((el) => el.id || el.outerHTML)"""
    )
    assert unlabelled == []
    badge = page.locator("#badge")
    assert await badge.get_attribute("role") == "status"
    assert await badge.get_attribute("aria-live") == "polite"

    # opening a draft moves focus to its title; Tab then follows the page from top to bottom
    await expect(page.locator("#draft-heading")).to_be_focused()
    order = []
    for _ in range(12):
        await page.keyboard.press("Tab")
        order.append(await page.evaluate("document.activeElement.id || document.activeElement.tagName"))
    expected = ["copy-id", "segment-content", "append-button", "invite-user", "invite-role", "invite-button"]
    assert [f for f in order if f in expected] == expected, order
    assert order.index("invite-button") < order.index("archive-button"), order


async def test_a_page_that_becomes_visible_retries_the_socket_at_once(
    browser: Browser,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Hidden, the socket's backoff may grow to 30 s; shown again, the page retries at once."""
    args = ("--dev-auth", "--rate-limit", "0", "--no-ws-enabled")
    with ServerProcess(str(tmp_path / "nows.db"), *args, log_path=tmp_path / "server.log") as server:
        context = await browser.new_context()
        # a visibility the test controls, and sockets counted (made; closed once every handler ran)
        await context.add_init_script(
            """window.pageHidden = false;
               Object.defineProperty(document, "visibilityState",
                                     { get: () => (window.pageHidden ? "hidden" : "visible") });
               window.wsMade = []; window.wsClosed = 0;
               const Native = window.WebSocket;
               window.WebSocket = class extends Native {
                 constructor(...args) {
                   super(...args);
                   window.wsMade.push(performance.now());
                   this.addEventListener("close", () => setTimeout(() => { window.wsClosed += 1; }, 0));
                 }
               };"""
        )
        page = await context.new_page()
        page.set_default_timeout(WAIT_MS)
        await page.goto(server.url + "/")
        await page.fill("#dev-user", "alice")
        await page.click("#dev-form button")
        await page.evaluate("window.pageHidden = true")
        await _create_draft(page, "Hidden tab")
        await expect(_badge(page)).to_have_attribute("data-status", "syncing")
        # four refused sockets: the fifth waits up to 8 s (hidden: a cap of 30 s)
        settled = await page.evaluate(
            """() => new Promise((resolve) => {
                 const startedAt = performance.now();
                 const check = () => window.wsClosed >= 4 && window.wsClosed === window.wsMade.length
                   ? resolve(true)
                   : performance.now() - startedAt > 30000 ? resolve(false) : setTimeout(check, 10);
                 check();
               })"""
        )
        assert settled, "fewer than four refused sockets in 30 s"
        waited_ms = await page.evaluate(
            """() => new Promise((resolve) => {
                 const before = window.wsMade.length;
                 const shownAt = performance.now();
                 window.pageHidden = false;
                 document.dispatchEvent(new Event("visibilitychange"));
                 const check = () => window.wsMade.length > before
                   ? resolve(window.wsMade[before] - shownAt)
                   : performance.now() - shownAt > 10000 ? resolve(null) : setTimeout(check, 10);
                 check();
               })"""
        )
        assert waited_ms is not None, "no socket attempt within 10 s of the page becoming visible"
        print(f"\nsocket retried {waited_ms:.0f} ms after the page became visible")
        assert waited_ms < 1000


async def test_a_refused_dev_id_says_why_and_keeps_dev_sign_in_open(
    browser: Browser,  # noqa: F811
    server: ServerProcess,
) -> None:
    """On a server with dev auth, an id the server refuses (a space in it) is that id's fault:
    the page says why under the dev form and lets the user try another (a fresh-user trial saw
    "Dev sign-in is off" and a locked form, until a reload)."""
    page = await (await browser.new_context()).new_page()
    await page.goto(server.url + "/")
    await page.fill("#dev-user", "bad id")
    await page.click("#dev-form button")
    await expect(page.locator("#dev-error")).to_contain_text("That user id was refused")
    await expect(page.locator("#dev-off")).to_be_hidden()
    await expect(page.locator("#dev-user")).to_be_enabled()
    await page.fill("#dev-user", "alice")
    await page.click("#dev-form button")
    await expect(page.locator("#home-view")).to_be_visible()
    await expect(page.locator("#dev-error")).to_be_hidden()
