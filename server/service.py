"""Runs commands: idempotency, If-Match, decide against current state, append, respond.

No aiohttp here: handlers parse and validate the request, then call :meth:`DraftService.execute`.
Commands on one draft are serialised by a per-draft lock on this node (so they rarely conflict);
the store's expected-seq check is what keeps nodes sharing a log correct, and a conflict is
retried against fresh state.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

from eventstore.errors import ConcurrencyConflict, IdempotencyKeyReused
from eventstore.events import IdempotencyClaim, Record, canonical_json, utc_now_iso
from eventstore.store import Store
from projections.decide import Command, CreateDraft, Limits, decide
from projections.errors import DomainError, Forbidden, NotFound, ValidationFailed
from projections.fold import fold_all
from projections.runner import DraftProjector
from projections.state import DraftState
from server.errors import ApiError

log = logging.getLogger(__name__)

Endpoint = Literal["create", "update", "segment", "ring", "collaborator"]
MAX_CONFLICT_RETRIES = 20


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a command produced: the draft's state after it and the event it appended (if any)."""

    state: DraftState
    record: Record | None
    replayed: bool = False


def new_draft_id() -> str:
    """A fresh, unguessable draft id."""
    return "draft_" + secrets.token_hex(10)


def fingerprint(endpoint: Endpoint, draft_id: str | None, body: Any) -> str:
    """What makes two requests 'the same' for an Idempotency-Key: endpoint, path, canonical body."""
    raw = canonical_json({"endpoint": endpoint, "draft_id": draft_id, "body": body})
    return hashlib.sha256(raw).hexdigest()


class _DraftLocks:
    """One asyncio.Lock per draft, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, draft_id: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(draft_id, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[draft_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[draft_id]
            if users == 1:
                del self._locks[draft_id]
            else:
                self._locks[draft_id] = (lock, users - 1)


class DraftService:
    """The application layer between HTTP handlers and the domain."""

    def __init__(
        self,
        store: Store,
        projector: DraftProjector,
        limits: Limits,
        clock: Callable[[], str] = utc_now_iso,
    ) -> None:
        self.store = store
        self.projector = projector
        self.limits = limits
        self.clock = clock
        self._locks = _DraftLocks()

    async def view(self, user_id: str, draft_id: str) -> DraftState:
        """The draft's state if ``user_id`` may view it (404 / 403 otherwise)."""
        state = await self.projector.get(draft_id)
        if state is None:
            raise NotFound("draft not found")
        if not state.can_view(user_id):
            raise Forbidden("you are not a collaborator on this draft")
        return state

    async def execute(
        self,
        endpoint: Endpoint,
        draft_id: str | None,
        command: Command,
        *,
        if_match: int | None = None,
        idempotency_key: str | None = None,
        body: Any = None,
    ) -> Outcome:
        """Decide and append ``command``; returns the outcome (or the first one, for a retry).

        A repeated Idempotency-Key is recognised by the store inside the append's transaction,
        so the common case costs no extra read. Only when the command is refused or changes
        nothing against the current state is the log asked whether the key was used before
        (a retry after the ring moved on must still get its first response).
        """
        claim: IdempotencyClaim | None = None
        if idempotency_key is not None:
            claim = IdempotencyClaim(command.user_id, idempotency_key, fingerprint(endpoint, draft_id, body))
        try:
            outcome = await self._decide_and_append(draft_id, command, if_match, claim)
        except (DomainError, ApiError):
            if claim is not None and (earlier := await self._earlier(claim)) is not None:
                return earlier
            raise
        if (
            outcome.record is None
            and claim is not None
            and (earlier := await self._earlier(claim)) is not None
        ):
            return earlier
        return outcome

    async def _earlier(self, claim: IdempotencyClaim) -> Outcome | None:
        found = await self.store.find_idempotency(claim.user_id, claim.key)
        if found is None:
            return None
        if found.fingerprint != claim.fingerprint:
            raise IdempotencyKeyReused(claim.user_id, claim.key)
        return await self._replay(found.draft_id, found.seq)

    async def _decide_and_append(
        self, draft_id: str | None, command: Command, if_match: int | None, claim: IdempotencyClaim | None
    ) -> Outcome:
        user_id = command.user_id
        if isinstance(command, CreateDraft):
            assert draft_id is None
            draft_id = command.draft_id
        assert draft_id is not None
        async with self._locks.hold(draft_id):
            for _ in range(MAX_CONFLICT_RETRIES):
                state = None if isinstance(command, CreateDraft) else await self.projector.get(draft_id)
                # An invalid field is the request's own fault whatever the draft's head is: 422
                # comes before 412 (schemathesis sent a bad user id with a stale If-Match).
                refused: DomainError | None = None
                try:
                    events = decide(state, command, self.clock(), self.limits)
                except ValidationFailed:
                    raise
                except DomainError as e:
                    events, refused = [], e
                if state is not None and if_match is not None:
                    if state.role_of(user_id) in (None, "viewer"):
                        raise Forbidden("you may not change this draft")
                    if state.seq != if_match:
                        raise ApiError(
                            412,
                            "precondition_failed",
                            f"the draft is at seq {state.seq}, not {if_match}",
                            details={"head_seq": state.seq},
                        )
                if refused is not None:
                    raise refused
                if not events:
                    assert state is not None
                    return Outcome(state, None)
                try:
                    result = await self.store.append(
                        draft_id, events, state.seq if state is not None else 0, claim
                    )
                except ConcurrencyConflict:
                    if if_match is not None:
                        head = await self.store.head(draft_id)
                        raise ApiError(
                            412,
                            "precondition_failed",
                            "the draft changed meanwhile",
                            details={"head_seq": head},
                        ) from None
                    continue
                if result.replayed is not None:
                    return await self._replay(result.replayed.draft_id, result.replayed.seq)
                last = result.records[-1]
                # The projector folded the new records as they committed; fold here only if it
                # did not keep this draft cached.
                after = self.projector.cached(draft_id, last.seq) or fold_all(
                    state, [r.event() for r in result.records]
                )
                assert after is not None
                return Outcome(after, result.records[-1])
        raise ConcurrencyConflict(draft_id, -1, -1)

    async def _replay(self, draft_id: str, seq: int) -> Outcome:
        records = await self.store.read(draft_id, 0, seq)
        state = fold_all(None, [r.event() for r in records])
        if state is None or not records:
            raise NotFound("the draft of this idempotent request is gone")
        return Outcome(state, records[-1], replayed=True)
