"""Access that changes live, in Debian's Chromium: removal, demotion, archive and revocation
(API.md "Access that changes live") as the demo page and ringlog.js see them, against a real
``ringlog serve``; and ringlog.js's fold of the new events against the server's fold."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import re
import time
from typing import Any

import pytest
from playwright.async_api import Browser, Page, WebSocket, WebSocketRoute, expect
from playwright.async_api import TimeoutError as PlaywrightTimeout

from projections.event_types import EventType
from projections.fold import fold_all
from ringlog import Event, RinglogClient
from tests.e2e.scripted_mux import ScriptedMux, route_mux
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
from tests.projections.eventlogs import random_log
from tests.serverproc import ServerProcess

pytestmark = pytest.mark.browser

REVOKED_TEXT = re.compile("you no longer have access to this draft", re.IGNORECASE)
QUIET_MS = 4_000
"""How long a revoked page is watched for a reconnect or a poll (backoff starts at 0.5 s)."""


def _draft_path(draft_id: str) -> str:
    return f"/v1/collab/drafts/{draft_id}"


async def _open_draft(browser: Browser, server: ServerProcess, user: str, draft_id: str) -> Page:  # noqa: F811
    page = await _signed_in(browser, server, user)
    await page.goto(f"{server.url}/#/drafts/{draft_id}")
    await expect(page.locator("#updated")).to_have_attribute("data-seq", re.compile(r"^\d+$"))
    return page


def _person(page: Page, user: str) -> Any:
    return page.locator(f'#people li[data-user-id="{user}"]')


def _watch_network(page: Page) -> tuple[list[str], list[str]]:
    """Every WebSocket the page opens and every API request it makes from now on."""
    sockets: list[str] = []
    requests: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    page.on("request", lambda r: requests.append(f"{r.method} {r.url}") if "/v1/" in r.url else None)
    return sockets, requests


async def _no_new_socket(page: Page, timeout_ms: int = QUIET_MS) -> None:
    """Awaits the page's next WebSocket for ``timeout_ms`` and fails if one opens."""
    try:
        ws: WebSocket = await page.wait_for_event("websocket", timeout=timeout_ms)
    except PlaywrightTimeout:
        return
    raise AssertionError(f"a revoked page opened another WebSocket: {ws.url}")


async def _assert_revoked(page: Page) -> None:
    await expect(page.locator("#revoked")).to_be_visible()
    await expect(page.locator("#revoked")).to_have_text(REVOKED_TEXT)
    await expect(_badge(page)).to_have_attribute("data-status", "revoked")
    await expect(page.locator("#live-controls")).to_be_hidden()
    await expect(page.locator("#people button")).to_have_count(0)
    await expect(page.locator("#your-turn")).to_be_hidden()


# -- against the real server ---------------------------------------------------------------


async def test_removed_contributor_sees_no_access_and_never_reconnects(
    browser: Browser,  # noqa: F811
    server: ServerProcess,
) -> None:
    alice = await _signed_in(browser, server, "alice")
    draft_id = await _create_draft(alice, "Who stays")
    await alice.fill("#invite-user", "bob")
    await alice.click("#invite-button")
    await expect(_person(alice, "bob")).to_contain_text("contributor")
    await alice.select_option("#pass-to", "bob")
    await alice.click("#pass-button")  # bob holds the ring when he is removed: it comes back

    bob = await _open_draft(browser, server, "bob", draft_id)
    await expect(_badge(bob)).to_have_attribute("data-status", "live")
    await expect(bob.locator("#append-button")).to_be_enabled()
    sockets, requests = _watch_network(bob)

    remove = _person(alice, "bob").locator("button.remove")
    await expect(remove).to_have_text("Remove")
    async with alice.expect_response(lambda r: r.request.method == "DELETE") as removal:
        await remove.click()
    assert (await removal.value).status == 200
    removed_at = time.monotonic()
    await expect(bob.locator("#revoked")).to_be_visible(timeout=2_000)
    assert time.monotonic() - removed_at < 2.5
    await _assert_revoked(bob)
    await expect(_badge(bob)).to_have_attribute("title", re.compile("^access_revoked"))

    # the creator's page follows on: bob is gone, the ring came back to alice in the same append
    await expect(_person(alice, "bob")).to_have_count(0)
    await expect(alice.locator("#holder")).to_have_text("alice")
    await expect(alice.locator("#append-button")).to_be_enabled()

    await _no_new_socket(bob)
    assert sockets == [], sockets
    assert requests == [], requests  # no long-poll, no state poll either
    ARTIFACTS.mkdir(exist_ok=True)
    await bob.screenshot(path=str(ARTIFACTS / "demo-access-revoked.png"), full_page=True)
    await alice.screenshot(path=str(ARTIFACTS / "demo-access-creator.png"), full_page=True)


async def test_leaving_revokes_the_leavers_own_page(
    browser: Browser,  # noqa: F811
    server: ServerProcess,
) -> None:
    async with RinglogClient(server.url, user_id="alice") as client:
        draft = await client.create_draft("Leave me")
        await client.add_collaborator(draft.id, "carol", "viewer")
    carol = await _open_draft(browser, server, "carol", draft.id)
    await expect(_badge(carol)).to_have_attribute("data-status", "live")
    await expect(_person(carol, "alice").locator("button")).to_have_count(0)  # a viewer removes only herself
    await expect(_person(carol, "carol").locator("button.role-switch")).to_have_count(0)
    await _person(carol, "carol").locator("button.remove", has_text="Leave").click()
    await _assert_revoked(carol)
    await _no_new_socket(carol, 2_000)


async def test_demotion_keeps_the_page_live_and_disables_the_append_box(
    browser: Browser,  # noqa: F811
    server: ServerProcess,
) -> None:
    async with RinglogClient(server.url, user_id="alice") as client:
        draft = await client.create_draft("Demoted")
        await client.add_collaborator(draft.id, "bob", "contributor")
        await client.add_collaborator(draft.id, "vera", "viewer")
        await client.pass_ring(draft.id, "bob")
    alice = await _open_draft(browser, server, "alice", draft.id)
    bob = await _open_draft(browser, server, "bob", draft.id)
    await expect(_badge(bob)).to_have_attribute("data-status", "live")
    await expect(bob.locator("#append-button")).to_be_enabled()
    # a contributor may remove viewers and leave, and switches no roles
    await expect(_person(bob, "vera").locator("button.remove")).to_have_text("Remove")
    await expect(_person(bob, "bob").locator("button.remove")).to_have_text("Leave")
    await expect(_person(bob, "alice").locator("button")).to_have_count(0)
    await expect(bob.locator("#people button.role-switch")).to_have_count(0)
    await expect(bob.locator("#archive-form")).to_be_hidden()
    sockets, _requests = _watch_network(bob)

    switch = _person(alice, "bob").locator("button.role-switch")
    await expect(switch).to_have_text("Make viewer")
    await switch.click()
    await expect(_person(bob, "bob")).to_contain_text("viewer")
    await expect(bob.locator("#holder")).to_have_text("alice")  # the ring came back with the demotion
    await expect(bob.locator("#append-button")).to_be_disabled()
    await expect(bob.locator("#invite-button")).to_be_disabled()
    await expect(_person(bob, "vera").locator("button")).to_have_count(0)  # a viewer removes only himself
    await expect(_badge(bob)).to_have_attribute("data-status", "live")
    await expect(bob.locator("#revoked")).to_be_hidden()
    assert sockets == []  # the same socket stayed open

    await _person(alice, "bob").locator("button.role-switch", has_text="Make contributor").click()
    await expect(_person(bob, "bob")).to_contain_text("contributor")
    await expect(bob.locator("#invite-button")).to_be_enabled()
    await expect(bob.locator("#append-button")).to_be_disabled()  # alice holds the ring now
    await expect(_badge(bob)).to_have_attribute("data-status", "live")


async def test_archive_disables_mutations_on_every_open_page_and_unarchive_restores_them(
    browser: Browser,  # noqa: F811
    server: ServerProcess,
) -> None:
    async with RinglogClient(server.url, user_id="alice") as client:
        draft = await client.create_draft("Put away")
        await client.add_collaborator(draft.id, "bob", "contributor")
        await client.add_collaborator(draft.id, "vera", "viewer")
    alice = await _open_draft(browser, server, "alice", draft.id)
    bob = await _open_draft(browser, server, "bob", draft.id)
    pages = (alice, bob)
    for page in pages:
        await expect(page.locator("#archived-badge")).to_be_hidden()
    await expect(alice.locator("#append-button")).to_be_enabled()
    await expect(bob.locator("#archive-form")).to_be_hidden()  # only the creator archives

    await alice.click("#archive-button")
    for page in pages:
        await expect(page.locator("#archived-badge")).to_be_visible()
        await expect(page.locator("#archived-badge")).to_have_text("archived")
        for control in ("#append-button", "#segment-content", "#pass-button", "#invite-button"):
            await expect(page.locator(control)).to_be_disabled()
        await expect(page.locator("#people button.remove")).not_to_have_count(0)
        for button in await page.locator("#people button").all():
            await expect(button).to_be_disabled()
        await expect(_badge(page)).to_have_attribute("data-status", "live")
    await expect(alice.locator("#archive-button")).to_have_text("Unarchive")
    await expect(alice.locator("#your-turn")).to_be_hidden()  # she holds the ring, but nothing may change
    await expect(alice.locator("#archive-button")).to_be_enabled()
    ARTIFACTS.mkdir(exist_ok=True)
    await alice.screenshot(path=str(ARTIFACTS / "demo-access-archived.png"), full_page=True)

    await alice.click("#archive-button")
    for page in pages:
        await expect(page.locator("#archived-badge")).to_be_hidden()
        await expect(page.locator("#invite-button")).to_be_enabled()
        for button in await page.locator("#people button").all():
            await expect(button).to_be_enabled()
    await expect(alice.locator("#append-button")).to_be_enabled()  # alice holds the ring
    await expect(bob.locator("#append-button")).to_be_disabled()
    await expect(alice.locator("#archive-button")).to_have_text("Archive")
    await expect(alice.locator("#your-turn")).to_be_visible()
    await _append(alice, "after the archive")
    await expect(_segments(bob)).to_have_text(["after the archive"])


async def test_archived_drafts_are_listed_only_when_asked_for(
    browser: Browser,  # noqa: F811
    server: ServerProcess,
) -> None:
    async with RinglogClient(server.url, user_id="alice") as client:
        kept = await client.create_draft("Kept")
        put_away = await client.create_draft("Put away")
        await client.request("POST", f"{_draft_path(put_away.id)}/archive")
    page = await _signed_in(browser, server, "alice")
    links = page.locator("#draft-list a")
    await expect(links).to_have_text(["Kept"])
    await page.check("#show-archived")
    await expect(links).to_have_text(["Put away"])
    await page.click(f'a[data-draft-id="{put_away.id}"]')
    await expect(page.locator("#archived-badge")).to_be_visible()
    await expect(page.locator("#archive-button")).to_have_text("Unarchive")
    await page.click("#archive-button")
    await expect(page.locator("#archived-badge")).to_be_hidden()
    await page.click("a.back")
    await expect(links).to_have_count(0)  # still asking for archived drafts only
    await page.uncheck("#show-archived")
    await expect(links).to_have_count(2)
    assert sorted(await links.all_text_contents()) == ["Kept", "Put away"]
    await expect(page.locator(f'a[data-draft-id="{kept.id}"]')).to_have_text("Kept")


async def test_errors_appear_next_to_the_control_that_caused_them(
    browser: Browser,  # noqa: F811
    server: ServerProcess,
) -> None:
    """A page whose socket hears nothing (scripted) acts on stale state; the real server refuses."""
    async with RinglogClient(server.url, user_id="alice") as client:
        draft = await client.create_draft("Stale")
        await client.add_collaborator(draft.id, "bob", "contributor")
        page = await _signed_in(browser, server, "alice")
        sockets = await route_mux(page)
        await page.goto(f"{server.url}/#/drafts/{draft.id}")
        await page.reload()  # the page's one socket opens again, now scripted
        mux = await asyncio.wait_for(sockets.get(), WAIT_MS / 1000)
        mux.connected("alice")
        assert await mux.accept(draft.id, head_seq=2) == 2  # then silence
        await expect(_badge(page)).to_have_attribute("data-status", "live")
        await expect(_person(page, "bob").locator("button.remove")).to_be_enabled()

        await client.request("DELETE", f"{_draft_path(draft.id)}/collaborators/bob")
        await _person(page, "bob").locator("button.remove").click()
        await expect(_person(page, "bob").locator(".error")).to_be_visible()
        await expect(_person(page, "bob").locator(".error")).to_contain_text(re.compile(r"\S"))

        await client.request("POST", f"{_draft_path(draft.id)}/archive")
        await _append(page, "too late")
        error = page.locator("#append-form .error")
        await expect(error).to_be_visible()
        await expect(error).to_contain_text(re.compile("archived", re.IGNORECASE))
        await expect(page.locator("#message")).to_be_hidden()
        await expect(page.locator("#archive-form .error")).to_be_hidden()
        await expect(_segments(page)).to_have_count(0)
        assert sockets.empty()


async def test_revocation_reaches_a_page_that_is_polling(
    browser: Browser,  # noqa: F811
    server: ServerProcess,
) -> None:
    """Without a socket the page long-polls; once removed, its next request is 403: it stops for good."""
    async with RinglogClient(server.url, user_id="alice") as client:
        draft = await client.create_draft("Polled away")
        await client.add_collaborator(draft.id, "bob", "contributor")
        page = await _signed_in(browser, server, "bob")
        refused: list[WebSocketRoute] = []

        async def refuse(route: WebSocketRoute) -> None:  # every socket drops at once: 1006-like
            refused.append(route)
            await route.close(code=1011, reason="scripted outage")

        await page.route_web_socket(re.compile(r".*/v1/ws\?.*"), refuse)
        await page.goto(f"{server.url}/#/drafts/{draft.id}")
        await page.reload()  # the page's one socket opens again, now refused
        await expect(_badge(page)).to_have_attribute("data-status", "syncing")
        await client.append_segment(draft.id, "seen by polling")
        await expect(_segments(page)).to_have_text(["seen by polling"])

        await client.request("DELETE", f"{_draft_path(draft.id)}/collaborators/bob")
        await _assert_revoked(page)
        # the draft is neither polled nor subscribed again (the inbox's socket may still retry)
        asked: list[str] = []
        page.on("request", lambda r: asked.append(r.url) if draft.id in r.url else None)
        await page.wait_for_timeout(QUIET_MS)
        assert asked == []
        assert refused


async def test_browser_fold_equals_the_server_after_random_access_changes(
    browser: Browser,  # noqa: F811
    server: ServerProcess,
) -> None:
    """A seeded random history of adds, removals, role changes, archives, appends and passes:
    the page's live state (ringlog.js over the socket), ringlog.js's fold of /events and the
    server's GET are the same state at the end."""
    rng = random.Random(1313)
    people = ["bob", "carol", "dave", "erin"]
    async with RinglogClient(server.url, user_id="alice") as alice:
        draft = await alice.create_draft("Random access")
        path = _draft_path(draft.id)
        demo = await _open_draft(browser, server, "alice", draft.id)
        follower = await (await browser.new_context()).new_page()
        follower.set_default_timeout(WAIT_MS)
        await follower.goto(server.url + "/static/app.css")  # any same-origin page will do
        await follower.evaluate(
            """async (draftId) => {
                const { connectDraft } = await import("/static/ringlog.js");
                window.statuses = [];
                window.handle = connectDraft(draftId, {
                    userId: "alice", onStatus: (s) => window.statuses.push(s) });
            }""",
            draft.id,
        )
        state: dict[str, Any] = (await alice.request("GET", path))["data"]
        kinds: set[str] = set()
        for _ in range(40):
            members = {c["user_id"]: c["role"] for c in state["collaborators"]}
            holder = state["ring_state"]["current_holder_id"]
            choices: list[tuple[str, str, str, dict[str, Any] | None, str]] = []
            if state["archived"]:
                choices.append(("unarchive", "POST", f"{path}/unarchive", None, "alice"))
            else:
                choices.append(("archive", "POST", f"{path}/archive", None, "alice"))
                outsiders = [p for p in people if p not in members]
                if outsiders:
                    who, role = rng.choice(outsiders), rng.choice(["contributor", "viewer"])
                    choices += [
                        ("add", "POST", f"{path}/collaborators", {"user_id": who, "role": role}, "alice")
                    ] * 3
                if members:
                    who = rng.choice(sorted(members))
                    to = "viewer" if members[who] == "contributor" else "contributor"
                    choices += [("remove", "DELETE", f"{path}/collaborators/{who}", None, "alice")] * 2
                    choices += [("leave", "DELETE", f"{path}/collaborators/{who}", None, who)]
                    choices += [("role", "PATCH", f"{path}/collaborators/{who}", {"role": to}, "alice")] * 2
                choices += [
                    ("append", "POST", f"{path}/segments", {"content": f"s{rng.random():.6f}"}, holder)
                ] * 2
                targets = [u for u, r in members.items() if r == "contributor" and u != holder]
                targets += ["alice"] if holder != "alice" else []
                if targets:
                    to_user = rng.choice(targets)
                    choices += [("pass", "POST", f"{path}/ring/pass", {"to_user_id": to_user}, holder)] * 2
            kind, method, url, body, actor = rng.choice(choices)
            kinds.add(kind)
            async with RinglogClient(server.url, user_id=actor) as client:
                await client.request(method, url, body)
            state = (await alice.request("GET", path))["data"]
        assert {"archive", "unarchive", "remove", "role", "append"} <= kinds, kinds

        head = state["seq"]
        await follower.wait_for_function("(head) => window.handle.lastSeq === head", arg=head)
        await expect(demo.locator("#updated")).to_have_attribute("data-seq", str(head))
        live = await follower.evaluate("window.handle.state")
        folded = await follower.evaluate(
            """async (draftId) => {
                const { foldEvent } = await import("/static/ringlog.js");
                const r = await fetch(`/v1/collab/drafts/${draftId}/events?since=0&limit=1000`,
                                      {headers: {"X-User-Id": "alice"}});
                return (await r.json()).data.reduce(foldEvent, null);
            }""",
            draft.id,
        )
        served = (await alice.request("GET", path))["data"]
        log, _head = await alice.events(draft.id, since=0, limit=1000)
        returns = [b for a, b in itertools.pairwise(log)
                   if a.type in (EventType.COLLABORATOR_REMOVED, EventType.ROLE_CHANGED)
                   and b.type == EventType.RING_PASSED and b.data["to_user_id"] == "alice"]  # fmt: skip
        assert returns, "the history should return the ring from a removed or demoted holder"
        assert live == served
        assert folded == served
        assert "revoked" not in await follower.evaluate("window.statuses")
        ARTIFACTS.mkdir(exist_ok=True)
        await demo.screenshot(path=str(ARTIFACTS / "demo-access-random.png"), full_page=True)


# -- ringlog.js's fold against the server's fold, event by event -----------------------------


async def test_ringlog_js_folds_every_prefix_like_the_server(
    browser: Browser,  # noqa: F811
    server: ServerProcess,
) -> None:
    """300 random valid logs with removals, role changes and archives: ringlog.js's foldEvent
    gives projections.fold's state after every event (the same JSON)."""
    rng = random.Random(13)
    histories = [random_log(rng, f"draft_{i}", rng.randint(1, 40), unknown_types=False) for i in range(300)]
    types = {e["type"] for h in histories for e in h}
    assert types == set(EventType), set(EventType) - types
    page = await (await browser.new_context()).new_page()
    await page.goto(server.url + "/static/app.css")
    prefixes = await page.evaluate(
        """async (histories) => {
            const { foldEvent } = await import("/static/ringlog.js");
            return histories.map((events) => {
                const states = [];
                events.reduce((s, e) => { const next = foldEvent(s, e); states.push(next); return next; }, null);
                return states;
            });
        }""",
        histories,
    )
    for events, js_states in zip(histories, prefixes, strict=True):
        for n, js_state in enumerate(js_states, start=1):
            server_state = fold_all(None, [Event.model_validate(e) for e in events[:n]])
            assert server_state is not None
            assert js_state == json.loads(server_state.to_json()), (events[:n], js_state)


async def test_revocation_close_stops_for_good_on_a_scripted_socket(
    browser: Browser,  # noqa: F811
    server: ServerProcess,
) -> None:
    """The wire order of API.md: the removal event, then ``access_revoked``, then close 4403."""
    async with RinglogClient(server.url, user_id="alice") as alice:
        draft = await alice.create_draft("Scripted revocation")
        await alice.add_collaborator(draft.id, "bob", "contributor")
    page = await _signed_in(browser, server, "bob")
    sockets = await route_mux(page)
    await page.goto(f"{server.url}/#/drafts/{draft.id}")
    await page.reload()  # the page's one socket opens again, now scripted
    mux: ScriptedMux = await asyncio.wait_for(sockets.get(), WAIT_MS / 1000)
    mux.connected("bob")
    assert await mux.accept(draft.id, head_seq=2) == 2
    await expect(_badge(page)).to_have_attribute("data-status", "live")
    await expect(_person(page, "bob")).to_have_count(1)
    _requests: list[str] = []
    page.on("request", lambda r: _requests.append(r.url) if "/v1/" in r.url else None)
    mux.send({"type": str(EventType.COLLABORATOR_REMOVED), "draft_id": draft.id, "seq": 3,
              "ts": "2025-01-01T00:00:01.000Z", "user_id": "alice",
              "data": {"collaborator_id": "bob", "role": "contributor"}})  # fmt: skip
    mux.error("access_revoked", draft.id)  # /v1/ws ends that subscription only: the socket stays
    await _assert_revoked(page)
    await expect(_person(page, "bob")).to_have_count(0)  # the removal was folded before the close
    await expect(page.locator("#updated")).to_have_attribute("data-seq", "3")
    await expect(_badge(page)).to_have_attribute("title", re.compile("^access_revoked"))
    await _no_new_socket(page)
    assert sockets.empty()
    assert _requests == []
    assert len(mux.sent_of("subscribe", draft.id)) == 1  # never subscribed again


async def test_a_refused_reconnect_after_losing_access_is_final(
    browser: Browser,  # noqa: F811
    server: ServerProcess,
) -> None:
    """Removed while the socket was down: the next socket is refused (``forbidden``, 1008) and the
    page, which could read the draft before, reports ``revoked`` rather than retrying."""
    async with RinglogClient(server.url, user_id="alice") as alice:
        draft = await alice.create_draft("Gone while away")
        await alice.add_collaborator(draft.id, "bob", "viewer")
    page = await _signed_in(browser, server, "bob")
    sockets = await route_mux(page)
    await page.goto(f"{server.url}/#/drafts/{draft.id}")
    await page.reload()  # the page's one socket opens again, now scripted
    first: ScriptedMux = await asyncio.wait_for(sockets.get(), WAIT_MS / 1000)
    first.connected("bob")
    await first.accept(draft.id, head_seq=2)
    await expect(_badge(page)).to_have_attribute("data-status", "live")
    await first.route.close(code=1001, reason="going away")
    second: ScriptedMux = await asyncio.wait_for(sockets.get(), WAIT_MS / 1000)
    second.connected("bob")
    assert (await second.subscribe_of(draft.id))["since"] == 2
    second.error("forbidden", draft.id, "you may not view this draft")
    await _assert_revoked(page)
    await expect(_badge(page)).to_have_attribute("title", re.compile("^forbidden"))
    await _no_new_socket(page)
    assert sockets.empty()
