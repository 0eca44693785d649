"""REST helpers: every mutation carries an ``Idempotency-Key``, so retrying it is safe.

A request that fails on the way (connection error, timeout) or is refused for now (429, 503)
is sent again with the *same* key, after the server's ``Retry-After`` or a jittered backoff;
the server then either applies it once or returns its first answer again.

Replaying queued operations (an offline outbox; issue 15). Give each operation its own
``idempotency_key`` when it is *queued* and store the key with it; replay the queue in order,
each call with its stored key and the same arguments. An operation the server already applied
(its reply was lost, or the process died after sending) returns its first answer again and
appends nothing (API.md "HTTP API": keys are kept in the log, so this holds across server
restarts); the same key with other arguments is ``ApiError`` 422 ``idempotency_key_reused``.
Add ``if_match=<seq the operation was based on>`` to make a replay first-writer-wins: if
someone else wrote to the draft meanwhile it is ``ApiError`` 412 ``precondition_failed`` and
nothing is appended (then drop or rebase the operation). A replay of an applied operation
answers its first reply even when its ``If-Match`` no longer holds, because the key is looked
up first.
"""

from __future__ import annotations

import asyncio
import re
import urllib.parse
import uuid
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Literal

import aiohttp
import orjson

from projections.decide import user_id_rule, valid_user_id
from ringlog.backoff import Backoff, parse_retry_after
from ringlog.models import (
    Collaborator,
    DraftState,
    DraftSummary,
    Event,
    FeedItem,
    RingState,
    Segment,
    parse_collaborator,
    parse_draft_state,
    parse_ring_state,
    parse_segment,
)
from ringlog.urls import base_url as checked_base_url

RETRY_STATUSES = frozenset({429, 502, 503, 504})
TRANSIENT_ERRORS = (aiohttp.ClientConnectionError, asyncio.TimeoutError)


class ApiError(Exception):
    """The server answered with an error body (API.md: ``{"error": {code, message}}``)."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details


B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
"""RFC 6750 §2.1 ``b64token``: what may follow ``Authorization: Bearer`` (a JWT always fits)."""


def format_wait(seconds: float) -> str:
    """``seconds`` (finite, >= 0) for the ``wait`` parameter: digits and at most a fraction, never
    an exponent (``f"{1e-05:g}"`` is ``"1e-05"``; the server reads both, but a plain decimal is
    the form docs/API.md leads with and every proxy or log reader understands). Rounded to
    microseconds: ``1e-05`` → ``"0.00001"``, ``25.0`` → ``"25"``.
    Raises ``ValueError`` for a negative or non-finite value."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 <= seconds < float("inf"):
        raise ValueError(f"wait must be a finite number of seconds >= 0, not {seconds!r}")
    return f"{seconds:.6f}".rstrip("0").rstrip(".") or "0"


def check_token(token: str) -> str:
    """``token`` if it is an RFC 6750 §2.1 ``b64token`` (ASCII letters, digits, ``-._~+/``, then
    ``=`` padding); else ``ValueError`` with a one-line message that does not echo the secret.

    A token with a space, a control character or a non-ASCII character could not be sent as a
    header (or would be sent as something else), so it is refused before anything is sent.
    """
    if not isinstance(token, str) or B64TOKEN.fullmatch(token) is None:
        raise ValueError(
            "the token must be an RFC 6750 bearer token: ASCII letters, digits and -._~+/ "
            "(then = padding), with no spaces or control characters"
        )
    return token


def check_user_id(user_id: str) -> str:
    """``user_id`` if the server's one user-id rule (``projections.decide.valid_user_id``) accepts
    it; else ``ValueError`` — so an id is never silently changed on the way (an undecodable byte
    dropped, a control character refused by the HTTP library) and sent as another user's."""
    if not valid_user_id(user_id):
        raise ValueError(f"the user id {user_id!r} {user_id_rule()}")
    return user_id


def auth_headers(token: str | None, user_id: str | None) -> dict[str, str]:
    """``Authorization: Bearer`` for a token, else ``X-User-Id`` (dev auth).

    Raises ``ValueError`` with no credentials, for a token that is not an RFC 6750 ``b64token``
    (:func:`check_token`), or for a user id the server's rule refuses (:func:`check_user_id`) —
    each checked whenever given, even when the token makes the user id unused.
    """
    if token is not None and token != "":
        check_token(token)
    if user_id is not None and user_id != "":
        check_user_id(user_id)
    if token:
        return {"Authorization": f"Bearer {token}"}
    if user_id:
        return {"X-User-Id": user_id}
    raise ValueError("give a token or a user_id")


def _error_of(status: int, body: bytes) -> ApiError:
    try:
        err = orjson.loads(body)["error"]
        return ApiError(status, str(err["code"]), str(err.get("message", "")), err.get("details"))
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return ApiError(status, "http_error", body[:200].decode(errors="replace"))


def _reply_of(status: int, body: bytes) -> dict[str, Any]:
    """A success body (``{"data": …}``), or :class:`ApiError` ``bad_response`` if it is not one."""
    try:
        reply = orjson.loads(body)
    except orjson.JSONDecodeError:
        reply = None
    if not isinstance(reply, dict) or "data" not in reply:
        raise ApiError(status, "bad_response", "the server's reply is not a JSON object with 'data'")
    return reply


def _path_id(value: str) -> str:
    """An id as one URL path segment (``/`` and ``?`` in it cannot change the route)."""
    return urllib.parse.quote(value, safe="")


class RinglogClient:
    """``async with RinglogClient(url, user_id="alice") as c: await c.create_draft("Title")``."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        user_id: str | None = None,
        *,
        attempts: int = 5,
        timeout: float = 30.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.base_url = checked_base_url(base_url)  # ValueError at once for "127.0.0.1:8000"
        self.headers = auth_headers(token, user_id)
        self.attempts = attempts
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._session = session
        self._owns_session = session is None

    async def __aenter__(self) -> RinglogClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session (if this client opened it)."""
        if self._session is not None and self._owns_session:
            await self._session.close()
        self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
            self._owns_session = True
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        params: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        if_match: int | None = None,
    ) -> dict[str, Any]:
        """Send one request, retrying transient failures with the same key; the JSON reply."""
        headers = dict(self.headers)
        if method != "GET":
            headers["Idempotency-Key"] = idempotency_key or uuid.uuid4().hex
        if if_match is not None:
            headers["If-Match"] = f'"{if_match}"'
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = orjson.dumps(body)
        backoff = Backoff(base=0.2, cap=10.0)
        for attempt in range(1, self.attempts + 1):
            retry_after: float | None = None
            try:
                async with self._http().request(
                    method, self.base_url + path, data=data, headers=headers, params=params
                ) as r:
                    raw = await r.read()
                    if r.status < 400:
                        return _reply_of(r.status, raw)
                    if r.status not in RETRY_STATUSES or attempt == self.attempts:
                        raise _error_of(r.status, raw)
                    retry_after = parse_retry_after(r.headers.get("Retry-After"))
            except TRANSIENT_ERRORS:
                if attempt == self.attempts:
                    raise
            await asyncio.sleep(backoff.next_delay(retry_after))
        raise AssertionError("unreachable: the last attempt returns or raises")

    # Every mutation takes ``idempotency_key=`` (default: a fresh one, reused by the retries of
    # this call) and ``if_match=`` (the seq the draft must be at, else ApiError 412
    # ``precondition_failed`` and nothing is appended): API.md "HTTP API".

    async def create_draft(
        self,
        title: str,
        description: str = "",
        *,
        idempotency_key: str | None = None,
        if_match: int | None = None,
    ) -> DraftState:
        """``POST /v1/collab/drafts``"""
        reply = await self.request(
            "POST",
            "/v1/collab/drafts",
            {"title": title, "description": description},
            idempotency_key=idempotency_key,
            if_match=if_match,
        )
        return parse_draft_state(reply["data"])

    async def list_drafts(self, *, archived: bool = False) -> list[DraftSummary]:
        """``GET /v1/collab/drafts``: the drafts the caller may view; with ``archived=True`` only
        the archived ones (API.md v2), else only the others."""
        params = {"archived": "true"} if archived else None
        reply = await self.request("GET", "/v1/collab/drafts", params=params)
        return [DraftSummary.model_validate(row) for row in reply["data"]]

    async def get_draft(self, draft_id: str, *, at_seq: int | None = None) -> DraftState:
        """``GET /v1/collab/drafts/{id}``; with ``at_seq`` the state as of that seq (API.md v2
        "Time travel over HTTP": 1 ≤ at_seq ≤ head, else ApiError 400 ``invalid_parameter``)."""
        params = {"at_seq": str(at_seq)} if at_seq is not None else None
        reply = await self.request("GET", f"/v1/collab/drafts/{_path_id(draft_id)}", params=params)
        return parse_draft_state(reply["data"])

    async def update_draft(
        self,
        draft_id: str,
        title: str | None = None,
        description: str | None = None,
        *,
        idempotency_key: str | None = None,
        if_match: int | None = None,
    ) -> DraftState:
        """``PATCH /v1/collab/drafts/{id}``"""
        body = {k: v for k, v in (("title", title), ("description", description)) if v is not None}
        reply = await self.request(
            "PATCH",
            f"/v1/collab/drafts/{_path_id(draft_id)}",
            body,
            idempotency_key=idempotency_key,
            if_match=if_match,
        )
        return parse_draft_state(reply["data"])

    async def append_segment(
        self, draft_id: str, content: str, *, idempotency_key: str | None = None, if_match: int | None = None
    ) -> tuple[Segment, int]:
        """``POST …/segments``: the new segment and the draft's seq after it."""
        reply = await self.request(
            "POST",
            f"/v1/collab/drafts/{_path_id(draft_id)}/segments",
            {"content": content},
            idempotency_key=idempotency_key,
            if_match=if_match,
        )
        return parse_segment(reply["data"]["segment"]), int(reply["data"]["seq"])

    async def pass_ring(
        self,
        draft_id: str,
        to_user_id: str,
        *,
        idempotency_key: str | None = None,
        if_match: int | None = None,
    ) -> tuple[RingState, int]:
        """``POST …/ring/pass``"""
        reply = await self.request(
            "POST",
            f"/v1/collab/drafts/{_path_id(draft_id)}/ring/pass",
            {"to_user_id": to_user_id},
            idempotency_key=idempotency_key,
            if_match=if_match,
        )
        return parse_ring_state(reply["data"]["ring_state"]), int(reply["data"]["seq"])

    async def add_collaborator(
        self,
        draft_id: str,
        user_id: str,
        role: Literal["contributor", "viewer"] = "contributor",
        *,
        idempotency_key: str | None = None,
        if_match: int | None = None,
    ) -> tuple[Collaborator, int]:
        """``POST …/collaborators``"""
        reply = await self.request(
            "POST",
            f"/v1/collab/drafts/{_path_id(draft_id)}/collaborators",
            {"user_id": user_id, "role": role},
            idempotency_key=idempotency_key,
            if_match=if_match,
        )
        return parse_collaborator(reply["data"]["collaborator"]), int(reply["data"]["seq"])

    async def remove_collaborator(
        self, draft_id: str, user_id: str, *, idempotency_key: str | None = None, if_match: int | None = None
    ) -> tuple[RingState, int]:
        """``DELETE …/collaborators/{user_id}`` (API.md v2): the ring state after it (back with
        the creator if ``user_id`` held it) and the draft's seq."""
        reply = await self.request(
            "DELETE",
            f"/v1/collab/drafts/{_path_id(draft_id)}/collaborators/{_path_id(user_id)}",
            idempotency_key=idempotency_key,
            if_match=if_match,
        )
        return parse_ring_state(reply["data"]["ring_state"]), int(reply["data"]["seq"])

    async def change_role(
        self,
        draft_id: str,
        user_id: str,
        role: Literal["contributor", "viewer"],
        *,
        idempotency_key: str | None = None,
        if_match: int | None = None,
    ) -> tuple[Collaborator, int]:
        """``PATCH …/collaborators/{user_id}`` (API.md v2): the collaborator and the draft's seq
        (unchanged when the role already was ``role``)."""
        reply = await self.request(
            "PATCH",
            f"/v1/collab/drafts/{_path_id(draft_id)}/collaborators/{_path_id(user_id)}",
            {"role": role},
            idempotency_key=idempotency_key,
            if_match=if_match,
        )
        return parse_collaborator(reply["data"]["collaborator"]), int(reply["data"]["seq"])

    async def archive(
        self, draft_id: str, *, idempotency_key: str | None = None, if_match: int | None = None
    ) -> DraftState:
        """``POST …/archive`` (API.md v2): the draft's state, ``archived`` true."""
        reply = await self.request(
            "POST",
            f"/v1/collab/drafts/{_path_id(draft_id)}/archive",
            idempotency_key=idempotency_key,
            if_match=if_match,
        )
        return parse_draft_state(reply["data"])

    async def unarchive(
        self, draft_id: str, *, idempotency_key: str | None = None, if_match: int | None = None
    ) -> DraftState:
        """``POST …/unarchive`` (API.md v2): the draft's state, ``archived`` false."""
        reply = await self.request(
            "POST",
            f"/v1/collab/drafts/{_path_id(draft_id)}/unarchive",
            idempotency_key=idempotency_key,
            if_match=if_match,
        )
        return parse_draft_state(reply["data"])

    async def events(
        self, draft_id: str, since: int = 0, limit: int | None = None, wait: float | None = None
    ) -> tuple[list[Event], int]:
        """``GET …/events``: events with ``seq > since`` and the draft's ``head_seq``."""
        params = {"since": str(since)}
        if limit is not None:
            params["limit"] = str(limit)
        if wait is not None:
            params["wait"] = format_wait(wait)
        reply = await self.request("GET", f"/v1/collab/drafts/{_path_id(draft_id)}/events", params=params)
        return [Event.model_validate(e) for e in reply["data"]], int(reply["head_seq"])

    async def my_events(
        self, after: int = 0, limit: int | None = None, wait: float | None = None
    ) -> tuple[list[FeedItem], int]:
        """``GET /v1/me/events`` (API.md v2 "The caller's own feed"): the entries with
        ``position > after``, oldest first (at most ``limit``, server default 500, max 1000),
        long-polling up to ``wait`` seconds (0–30) when there are none yet; and
        ``last_position``, the ``after`` to resume with (it skips nothing and repeats nothing).
        Raises :class:`ApiError` (400 ``invalid_parameter`` for a bad ``after``/``limit``/``wait``)."""
        params = {"after": str(after)}
        if limit is not None:
            params["limit"] = str(limit)
        if wait is not None:
            params["wait"] = format_wait(wait)
        reply = await self.request("GET", "/v1/me/events", params=params)
        return [FeedItem.model_validate(e) for e in reply["data"]], int(reply["last_position"])
