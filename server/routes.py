"""REST handlers: thin — authenticate, validate, call the service, serialise.

Every mutation is one declaration of :func:`mutation`: its method and path, the name that goes
into Idempotency-Key fingerprints, the body model, how the body becomes a domain command, and
how the outcome becomes the response. The shared template (auth and rate limit, JSON body,
validation, If-Match, Idempotency-Key, the service, ETag and Idempotent-Replayed) lives once in
:func:`mutation`. Refusals are raised, never built here: ``server/errors.py`` answers them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError
from pydantic import BaseModel, ConfigDict, ValidationError

from eventstore.events import Record
from projections.decide import (
    AddCollaborator,
    AppendSegment,
    ArchiveDraft,
    ChangeRole,
    Command,
    CreateDraft,
    PassRing,
    RemoveCollaborator,
    UpdateDraft,
)
from projections.errors import ValidationFailed
from projections.feed_index import READ_YOUR_WRITES_SECONDS, FeedItem
from projections.state import DraftState
from server.auth import Identity
from server.errors import ApiError
from server.models import (
    AddCollaboratorBody,
    AppendSegmentBody,
    ChangeRoleBody,
    CreateDraftBody,
    PassRingBody,
    UpdateDraftBody,
)
from server.params import MAX_SEQ, ParameterError, parse_entity_tag_seq, parse_int, parse_number
from server.presence_wire import members_json
from server.service import AtSeqBeyondHead, Endpoint, Outcome, new_draft_id
from server.settings import MAX_BODY_BYTES
from server.state import AppState

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

routes = web.RouteTableDef()

DEFAULT_LIMIT = 500
MAX_LIMIT = 1000


def _json(status: int, payload: bytes, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=payload, content_type="application/json", headers=headers)


def _data(value: Any) -> bytes:
    return orjson.dumps({"data": value})


def _data_raw(raw: bytes) -> bytes:
    return b'{"data":' + raw + b"}"


async def _identify(request: web.Request) -> Identity:
    st = request.app[AppState.KEY]
    return await st.auth.identify(request.headers, request.query, websocket=False)


async def _mutating_user(request: web.Request) -> str:
    st = request.app[AppState.KEY]
    identity = await _identify(request)
    wait = st.limiter.allow(identity.user_id)
    if wait > 0:
        st.metrics.rate_limited.inc()
        retry_after = st.limiter.retry_after(wait)  # the message says what the header says
        raise ApiError(
            429,
            "rate_limited",
            f"too many changes; retry in {retry_after} s",
            headers={"Retry-After": retry_after},
        )
    return identity.user_id


async def _read_json(request: web.Request) -> Any:
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    length = request.content_length
    if length is not None and length > MAX_BODY_BYTES:
        raise ApiError(413, "payload_too_large", "request body is larger than 64 KiB")
    try:
        raw = await request.read()  # client_max_size stops a body without Content-Length at 64 KiB
    except RequestPayloadError as e:  # a Content-Encoding whose data does not decode, a bad chunk
        reason = " ".join(str(e.args[0] if e.args else e).split())
        raise ApiError(400, "invalid_json", f"the body could not be read: {reason}") from None
    except ConnectionError:  # the client went away before the whole body came (nobody reads this)
        raise ApiError(400, "invalid_json", "the body ended before its Content-Length") from None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise ApiError(400, "invalid_json", f"body is not valid JSON: {e}") from None


def _validate(model: type[M], body: Any) -> M:
    if not isinstance(body, dict):
        raise ValidationFailed("body must be a JSON object", {"body": "must be an object"})
    try:
        return model.model_validate(body)
    except ValidationError as e:
        details: dict[str, str] = {}
        for err in e.errors(include_url=False, include_input=False):
            name = ".".join(str(p) for p in err["loc"]) or "body"
            details.setdefault(name, err["msg"])
        raise ValidationFailed("invalid fields: " + ", ".join(details), details) from None


def _idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not 1 <= len(key) <= 255 or not (key.isascii() and key.isprintable()):  # U+0020–U+007E
        raise ApiError(400, "invalid_parameter", "Idempotency-Key must be 1–255 printable ASCII characters")
    return key


def _if_match(request: web.Request) -> int | None:
    raw = request.headers.get("If-Match")
    return None if raw is None else _parsed(parse_entity_tag_seq, raw)


def _parsed(parse: Callable[..., T], *args: Any) -> T:
    """``parse(*args)`` (a :mod:`server.params` parser); its refusal is 400 invalid_parameter."""
    try:
        return parse(*args)
    except ParameterError as e:
        raise ApiError(400, "invalid_parameter", e.message) from None


def _etag(seq: int) -> str:
    return f'"{seq}"'


def _int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    return default if raw is None else _parsed(parse_int, raw, name, low, high)


BOOLEAN_VALUES = {"true": True, "false": False}
"""The only spellings a boolean query parameter has (anything else: 400 invalid_parameter)."""

IMMUTABLE = "private, max-age=31536000, immutable"
"""Cache-Control of a past state (API.md v2): the log never changes below its head."""


def _bool_param(request: web.Request, name: str, default: bool) -> bool:
    raw = request.query.get(name)
    if raw is None:
        return default
    if len(request.query.getall(name)) > 1 or raw not in BOOLEAN_VALUES:
        raise ApiError(400, "invalid_parameter", f"{name} must be true or false")
    return BOOLEAN_VALUES[raw]


def _wait_param(request: web.Request, high: float) -> float:
    raw = request.query.get("wait")
    return 0.0 if raw is None else _parsed(parse_number, raw, "wait", 0.0, high)


@dataclass(frozen=True, slots=True)
class Reply:
    """A mutation's success response: status, JSON body, headers beyond ETag/Idempotent-Replayed."""

    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


class NoBody(BaseModel):
    """The body model of a mutation that takes no fields.

    The request may have no body, or a JSON ``{}``; any other body gets the answers every body
    gets (API.md "HTTP API": 415, 413 over 64 KiB, 400 ``invalid_json``, 422 naming the field).
    """

    model_config = ConfigDict(extra="forbid")


PathParams = Mapping[str, str]
"""A request's path parameters (``draft_id`` and any other ``{name}`` in the route)."""


@dataclass(frozen=True, slots=True)
class Mutation(Generic[M]):
    """One REST mutation, declared: everything that differs between two of them.

    ``endpoint`` names it in Idempotency-Key fingerprints (never change a released one);
    ``body`` is its pydantic model (:class:`NoBody`: no fields);
    ``command(user_id, path_params, body)`` builds the domain command; ``reply(outcome)``
    builds the success response (also when the command changed nothing: ``outcome.record`` is
    then None and the reply is built from ``outcome.state`` and ``outcome.command``). A path parameter other than ``draft_id`` (say
    ``{user_id}``) joins the fingerprint, so one key cannot name two different targets.
    """

    method: str
    path: str
    endpoint: Endpoint
    body: type[M]
    command: Callable[[str, PathParams, M], Command]
    reply: Callable[[Outcome], Reply]
    summary: str

    async def handle(self, request: web.Request) -> web.Response:
        """Auth and rate limit, body, validation, the service, then the reply with ETag."""
        st = request.app[AppState.KEY]
        user_id = await _mutating_user(request)
        params = request.match_info
        if self.body is NoBody and not request.body_exists:
            raw: Any = None
            parsed = self.body()
        elif self.body is NoBody:
            parsed = _validate(self.body, await _read_json(request))
            raw = None  # ``{}`` is the same request as no body, for Idempotency-Key fingerprints
        else:
            raw = await _read_json(request)
            parsed = _validate(self.body, raw)
        command = self.command(user_id, params, parsed)
        extra = {k: v for k, v in params.items() if k != "draft_id"}
        outcome = await st.service.execute(
            self.endpoint,
            params.get("draft_id"),
            command,
            if_match=_if_match(request),
            idempotency_key=_idempotency_key(request),
            body={"body": raw, "path": extra} if extra else raw,  # unchanged for the first five
        )
        if outcome.record is not None and not outcome.replayed:
            st.metrics.child(st.metrics.events_appended, outcome.record.type).inc()
        reply = self.reply(outcome)
        headers = {"ETag": _etag(outcome.state.seq), **reply.headers}
        if outcome.replayed:
            headers["Idempotent-Replayed"] = "true"
        return _json(reply.status, reply.body, headers)


def mutation(
    method: str,
    path: str,
    endpoint: Endpoint,
    body: type[M],
    command: Callable[[str, PathParams, M], Command],
    reply: Callable[[Outcome], Reply],
    summary: str,
) -> Mutation[M]:
    """Declare a mutation and register its handler on :data:`routes`."""
    declared = Mutation(method, path, endpoint, body, command, reply, summary)
    routes.route(method, path)(declared.handle)  # the bound method itself: no wrapper frame per request
    return declared


def _draft_reply(status: int) -> Callable[[Outcome], Reply]:
    def reply(outcome: Outcome) -> Reply:
        return Reply(status, _data_raw(outcome.state.to_json()))

    return reply


def _created_draft(outcome: Outcome) -> Reply:
    return Reply(
        201, _data_raw(outcome.state.to_json()), {"Location": f"/v1/collab/drafts/{outcome.state.id}"}
    )


def _event_data(outcome: Outcome) -> dict[str, Any]:
    assert outcome.record is not None
    data: dict[str, Any] = orjson.loads(outcome.record.body)["data"]
    return data


def _segment_reply(outcome: Outcome) -> Reply:
    return Reply(201, _data({"segment": _event_data(outcome)["segment"], "seq": outcome.state.seq}))


def _ring_reply(outcome: Outcome) -> Reply:
    return Reply(200, _data({"ring_state": _state_ring(outcome.state), "seq": outcome.state.seq}))


def _collaborator_reply(outcome: Outcome) -> Reply:
    data = _event_data(outcome)
    collaborator = {"user_id": data["collaborator_id"], "role": data["role"], "joined_at": data["joined_at"]}
    return Reply(201, _data({"collaborator": collaborator, "seq": outcome.state.seq}))


def _role_reply(outcome: Outcome) -> Reply:
    """``{"collaborator", "seq"}`` read from the state: the command's target is a collaborator
    there whether the role changed now, was already that role, or this is a replay (a replay
    folds the log up to the key's own seq, where the role had just changed)."""
    command = outcome.command
    assert isinstance(command, ChangeRole)
    state = outcome.state
    [c] = [c for c in state.collaborators if c.user_id == command.collaborator_id]
    collaborator = {"user_id": c.user_id, "role": c.role, "joined_at": c.joined_at}
    return Reply(200, _data({"collaborator": collaborator, "seq": state.seq}))


def _removal_reply(outcome: Outcome) -> Reply:
    return Reply(200, _data({"seq": outcome.state.seq, "ring_state": _state_ring(outcome.state)}))


def _state_ring(state: DraftState) -> dict[str, Any]:
    return {
        "current_holder_id": state.ring_state.current_holder_id,
        "holders_history": list(state.ring_state.holders_history),
    }


MUTATIONS: tuple[Mutation[Any], ...] = (
    mutation(
        "POST", "/v1/collab/drafts", "create", CreateDraftBody,
        lambda user, _, b: CreateDraft(user, new_draft_id(), b.title, b.description),
        _created_draft,
        "Create a draft; the caller is its creator and holds the ring.",
    ),
    mutation(
        "PATCH", "/v1/collab/drafts/{draft_id}", "update", UpdateDraftBody,
        lambda user, _, b: UpdateDraft(user, b.title, b.description),
        _draft_reply(200),
        "Change the title and/or description.",
    ),
    mutation(
        "POST", "/v1/collab/drafts/{draft_id}/segments", "segment", AppendSegmentBody,
        lambda user, _, b: AppendSegment(user, b.content),
        _segment_reply,
        "The ring holder appends a segment.",
    ),
    mutation(
        "POST", "/v1/collab/drafts/{draft_id}/ring/pass", "ring", PassRingBody,
        lambda user, _, b: PassRing(user, b.to_user_id),
        _ring_reply,
        "The ring holder passes the ring.",
    ),
    mutation(
        "POST", "/v1/collab/drafts/{draft_id}/collaborators", "collaborator", AddCollaboratorBody,
        lambda user, _, b: AddCollaborator(user, b.user_id, b.role),
        _collaborator_reply,
        "Invite a contributor or viewer.",
    ),
    mutation(
        "DELETE", "/v1/collab/drafts/{draft_id}/collaborators/{user_id}", "remove-collaborator", NoBody,
        lambda user, path, _: RemoveCollaborator(user, path["user_id"]),
        _removal_reply,
        "Remove a collaborator (the creator: anyone else; a contributor: viewers and themselves; "
        "a viewer: themselves). A removed ring holder's ring returns to the creator.",
    ),
    mutation(
        "PATCH", "/v1/collab/drafts/{draft_id}/collaborators/{user_id}", "change-role", ChangeRoleBody,
        lambda user, path, b: ChangeRole(user, path["user_id"], b.role),
        _role_reply,
        "The creator changes a collaborator's role; a ring holder made viewer returns the ring.",
    ),
    mutation(
        "POST", "/v1/collab/drafts/{draft_id}/archive", "archive", NoBody,
        lambda user, _, __: ArchiveDraft(user, True),
        _draft_reply(200),
        "The creator archives the draft: every other mutation is then 409 draft_archived.",
    ),
    mutation(
        "POST", "/v1/collab/drafts/{draft_id}/unarchive", "unarchive", NoBody,
        lambda user, _, __: ArchiveDraft(user, False),
        _draft_reply(200),
        "The creator unarchives the draft.",
    ),
)  # fmt: skip
"""The REST mutations (API.md "HTTP API"); a new one is one more declaration here."""


@routes.get("/v1/collab/drafts")
async def list_drafts(request: web.Request) -> web.Response:
    """Drafts the caller may view; archived ones only with ``?archived=true`` (API.md v2)."""
    st = request.app[AppState.KEY]
    identity = await _identify(request)
    archived = _bool_param(request, "archived", default=False)
    rows = await st.projector.drafts_for(identity.user_id, archived=archived)
    return _json(200, _data([r.to_dict() for r in rows]))


@routes.get("/v1/collab/drafts/{draft_id}")
async def get_draft(request: web.Request) -> web.Response:
    """The draft's state; 304 when the caller's ETag is current.

    With ``?at_seq=N`` (API.md v2 "Time travel over HTTP"): the state as of seq N, folded from
    the log, 1 ≤ N ≤ head (else 400 invalid_parameter), with immutable caching headers. Served
    from a bounded cache of past states, else folded one cold fold at a time with yields to the
    loop (``DraftProjector.state_at``), so a burst of these cannot starve other requests.
    """
    st = request.app[AppState.KEY]
    identity = await _identify(request)
    raw_at = request.query.get("at_seq")
    headers: dict[str, str] = {}
    if raw_at is None:
        state = await st.service.view(identity.user_id, request.match_info["draft_id"])
    else:
        at_seq = _parsed(parse_int, raw_at, "at_seq", 1, MAX_SEQ)
        try:
            state = await st.service.view_at(identity.user_id, request.match_info["draft_id"], at_seq)
        except AtSeqBeyondHead as e:
            raise ApiError(400, "invalid_parameter", str(e)) from None
        headers["Cache-Control"] = IMMUTABLE
    etag = _etag(state.seq)
    inm = request.headers.get("If-None-Match")
    if inm is not None:
        tags = {t.strip().removeprefix("W/") for t in inm.split(",")}
        if etag in tags or "*" in tags:
            return web.Response(status=304, headers={"ETag": etag, **headers})
    return _json(200, _data_raw(state.to_json()), {"ETag": etag, **headers})


@routes.get("/v1/collab/drafts/{draft_id}/presence")
async def draft_presence(request: web.Request) -> web.Response:
    """Who is present on the draft now (API.md v2 "Presence"): ``{"data": [{"user_id", "state",
    "since"}]}``, as this node's presence registry knows it; viewers of the draft only (403, 404
    as for the draft itself). Never read from the log: presence is not in it."""
    st = request.app[AppState.KEY]
    identity = await _identify(request)
    draft_id = request.match_info["draft_id"]
    await st.service.view(identity.user_id, draft_id)
    return _json(200, _data_raw(members_json(st.presence.members(draft_id))))


def _events_body(records: Sequence[Record], head: int) -> bytes:
    return b'{"data":[' + b",".join(r.body for r in records) + b'],"head_seq":' + str(head).encode() + b"}"


@routes.get("/v1/collab/drafts/{draft_id}/events")
async def list_events(request: web.Request) -> web.Response:
    """Events after ``since``, oldest first; with ``wait``, long-polls for the first one."""
    st = request.app[AppState.KEY]
    identity = await _identify(request)
    draft_id = request.match_info["draft_id"]
    since = _int_param(request, "since", 0, 0, MAX_SEQ)
    limit = _int_param(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    wait = _wait_param(request, st.settings.longpoll_max)
    state = await st.service.view(identity.user_id, draft_id)
    if wait > 0 and state.seq <= since:
        records = await _long_poll(st, draft_id, since, limit, wait)
    else:
        records = await st.store.read(draft_id, since, limit)
    head = max(state.seq, records[-1].seq if records else 0)
    return _json(200, _events_body(records, head))


async def _long_poll(st: AppState, draft_id: str, since: int, limit: int, wait: float) -> list[Record]:
    loop = asyncio.get_running_loop()
    woken: asyncio.Future[None] = loop.create_future()

    def listener(records: Sequence[Record]) -> None:
        if not woken.done() and records[-1].seq > since:
            woken.set_result(None)

    st.store.notifier.add_listener(draft_id, listener)  # before reading: nothing can slip by
    try:
        records = await st.store.read(draft_id, since, limit)
        if records:
            return records
        stopping: asyncio.Task[bool] = loop.create_task(st.stopping.wait())
        try:
            await asyncio.wait((woken, stopping), timeout=wait, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stopping
        return await st.store.read(draft_id, since, limit)
    finally:
        st.store.notifier.remove_listener(draft_id, listener)
        if not woken.done():
            woken.cancel()


def _feed_body(items: Sequence[FeedItem], last_position: int) -> bytes:
    rows = b",".join(b'{"position":' + str(i.position).encode() + b',"event":' + i.body + b"}" for i in items)
    return b'{"data":[' + rows + b'],"last_position":' + str(last_position).encode() + b"}"


@routes.get("/v1/me/events")
async def my_events(request: web.Request) -> web.Response:
    """The caller's own feed (API.md v2): entries after ``after``, oldest first, from the feed index.

    ``after`` (a global position, default 0), ``limit`` and ``wait`` follow ``/events``' rules
    (same parsers and bounds). The index is first given up to
    :data:`READ_YOUR_WRITES_SECONDS` to cover every commit this process has published (the
    caller's own acknowledged appends included); only entries at or below the index's position
    are served, so ``last_position`` never passes an entry still to be indexed.
    """
    st = request.app[AppState.KEY]
    identity = await _identify(request)
    after = _int_param(request, "after", 0, 0, MAX_SEQ)
    limit = _int_param(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    wait = _wait_param(request, st.settings.longpoll_max)
    await st.feed.caught_up(READ_YOUR_WRITES_SECONDS)
    if wait > 0:
        items, last = await st.feed.wait_for(identity.user_id, after, limit, wait, st.stopping)
    else:
        items, last = await st.feed.read(identity.user_id, after, limit)
    return _json(200, _feed_body(items, last))


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers; ``pid`` names the worker process that did (``--workers``)."""
    return _json(200, _data({"status": "ok", "pid": os.getpid()}))


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """Readiness: the store answers a read within 2 s."""
    st = request.app[AppState.KEY]
    if st.stopping.is_set():
        raise ApiError(503, "unavailable", "shutting down", headers={"Retry-After": "1"})
    try:
        position = await asyncio.wait_for(st.store.last_position(), 2.0)
    except Exception as e:
        raise ApiError(
            503, "unavailable", f"store not ready: {type(e).__name__}", headers={"Retry-After": "1"}
        ) from e
    return _json(200, _data({"status": "ready", "last_position": position}))


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format."""
    st = request.app[AppState.KEY]
    return web.Response(body=st.metrics.render(), headers={"Content-Type": st.metrics.content_type})
