"""``ringlog tail``: follow a draft's events, resuming across disconnects, until Ctrl-C.

Events go to stdout (JSON lines, or ``--pretty`` lines); what ``tail`` is doing goes to stderr,
one line each: ``connecting to …``, ``server not reachable at … (…); retrying in N s``, ``live``,
``long-polling …``. Exit status: 0 on Ctrl-C or SIGTERM, 1 when the stream is refused or ends
(forbidden, unknown draft, bad credentials), 2 for usage errors (no credentials, a bad URL, a
token that is not an RFC 6750 bearer token, a user id the server's rule refuses).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from typing import TextIO

import orjson

from projections.event_types import EventType
from ringlog.models import Event
from ringlog.rest import check_token, check_user_id
from ringlog.stream import DraftStream, Status, StreamError
from ringlog.urls import base_url

log = logging.getLogger(__name__)


def describe(event: Event) -> str:
    """One readable line for an event."""
    d = event.data
    if event.type == EventType.DRAFT_CREATED:
        what = f"created {d.get('title')!r}"
    elif event.type == EventType.SEGMENT_ADDED:
        seg = d.get("segment", {})
        what = f"segment {seg.get('position')}: {seg.get('content')!r}"
    elif event.type == EventType.RING_PASSED:
        giver = d.get("from_user_id")
        if giver is not None and giver != event.user_id:  # the ring's return after a removal or demotion
            what = f"returned the ring from {giver} to {d.get('to_user_id')}"
        else:
            what = f"passed the ring to {d.get('to_user_id')}"
    elif event.type == EventType.COLLABORATOR_ADDED:
        what = f"invited {d.get('collaborator_id')} as {d.get('role')}"
    elif event.type == EventType.DRAFT_UPDATED:
        what = "updated " + ", ".join(f"{k}={v!r}" for k, v in sorted(d.items()))
    elif event.type == EventType.COLLABORATOR_REMOVED:
        what = f"removed {d.get('collaborator_id')} ({d.get('role')})"
    elif event.type == EventType.ROLE_CHANGED:
        what = f"made {d.get('collaborator_id')} {d.get('to_role')} (was {d.get('from_role')})"
    elif event.type == EventType.DRAFT_ARCHIVED:
        what = "archived the draft"
    elif event.type == EventType.DRAFT_UNARCHIVED:
        what = "unarchived the draft"
    else:
        what = event.type
    return f"#{event.seq} {event.ts} {event.user_id} {what}"


def _status_line(status: Status, detail: str, err: TextIO) -> None:
    if status == "live":
        text = "live" + (f" ({detail})" if detail else "")
    elif status == "polling":
        text = "WebSocket unavailable; long-polling /events" + (f" ({detail})" if detail else "")
    else:
        text = detail or "offline"
    _write(err, "ringlog tail: " + " ".join(text.split()))


def _write(out: TextIO, line: str) -> None:
    out.write(line + "\n")
    out.flush()


async def _follow(stream: DraftStream, pretty: bool, out: TextIO) -> None:
    async for event in stream:
        if pretty:
            _write(out, describe(event))
        else:
            _write(out, orjson.dumps(event.to_dict()).decode())


async def tail(
    url: str,
    draft_id: str,
    since: int | None,
    token: str | None,
    user_id: str | None,
    pretty: bool,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Print the draft's events after ``since`` (default: all), then live ones; 0 on Ctrl-C."""
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    if not token and not user_id:
        _write(err, "ringlog tail: give --token or --user-id")
        return 2
    if since is not None and since < 0:
        _write(err, "ringlog tail: --since must be >= 0")
        return 2
    try:
        url = base_url(url)
    except ValueError as e:
        _write(err, f"ringlog tail: --url: {e}")
        return 2
    for flag, value, check in (("--token", token, check_token), ("--user-id", user_id, check_user_id)):
        if value:
            try:
                check(value)
            except ValueError as e:  # never sent altered (a dropped byte would be another user)
                _write(err, f"ringlog tail: {flag}: {' '.join(str(e).split())}")
                return 2
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    handled: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
    try:
        async with DraftStream(
            url,
            draft_id,
            token=token,
            user_id=user_id,
            since=since or 0,
            on_status=lambda status, detail: _status_line(status, detail, err),
        ) as stream:
            follow = asyncio.create_task(_follow(stream, pretty, out))
            stopped = asyncio.create_task(stop.wait())
            try:
                await asyncio.wait((follow, stopped), return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (follow, stopped):
                    task.cancel()
                await asyncio.gather(follow, stopped, return_exceptions=True)
            if follow.done() and not follow.cancelled() and follow.exception() is not None:
                raise follow.exception()  # type: ignore[misc]
    except StreamError as e:
        _write(err, f"ringlog tail: {e.code}: {' '.join(e.message.split())}")
        return 1
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
    return 0
