"""Runs commands: idempotency, If-Match, decide against current state, append, respond.

No aiohttp and no HTTP here: handlers parse and validate the request, then call
:meth:`DraftService.execute`; refusals are domain errors (:mod:`projections.errors`), which only
``server/errors.py`` turns into statuses.

Commands on one draft are serialised by a per-draft lock on this node (so they rarely conflict);
the store's expected-seq check is what keeps nodes sharing a log correct. A lost race (the
store's ``ConcurrencyConflict``) is retried: the projector is first advanced to the head the
log reported, then the command is decided again, after a jittered, growing pause. Retrying is
bounded by time (:data:`CONFLICT_RETRY_SECONDS`), not by a count; when the time is up the command
is refused with :class:`~projections.errors.WriteConflict` (409 ``conflict`` with the head) —
contention is never reported as unavailability (issue "contention is not unavailability").
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from eventstore import errors as store_errors
from eventstore.events import IdempotencyClaim, NewEvent, Record, canonical_json, utc_now_iso
from eventstore.store import Store
from projections.decide import Command, CreateDraft, Limits, decide, is_ring_return
from projections.errors import (
    DomainError,
    Forbidden,
    IdempotencyKeyReused,
    NotFound,
    PreconditionFailed,
    ValidationFailed,
    WriteConflict,
)
from projections.fold import fold_all
from projections.runner import DraftProjector
from projections.state import DraftState

log = logging.getLogger(__name__)

Endpoint = str
"""The name of a mutation ("create", "segment"…): part of an Idempotency-Key's fingerprint, so a
released name never changes (the fingerprints of keys in the log depend on it)."""

CONFLICT_RETRY_SECONDS = 5.0
"""How long a command keeps retrying after losing optimistic-concurrency races on its draft."""

CONFLICT_BACKOFF_FIRST = 0.002
CONFLICT_BACKOFF_MAX = 0.25
"""Seconds: the pause before the n-th retry is drawn from [c/2, c], c = min(MAX, FIRST·2ⁿ)."""

DRAFT_ID = re.compile(r"draft_[0-9a-f]{20}")
"""The only draft ids there are: what :func:`new_draft_id` makes."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a command produced: the draft's state after it and the event it appended (if any)."""

    state: DraftState
    record: Record | None
    replayed: bool = False
    command: Command | None = None
    """The command as the request gave it (set by :meth:`DraftService.execute`), so that a reply
    can name its target even when nothing was appended."""


class AtSeqBeyondHead(Exception):
    """``at_seq`` names a seq the draft has not reached (``head_seq``): a bad parameter, 400."""

    def __init__(self, head_seq: int) -> None:
        super().__init__(f"at_seq must be at most the draft's head, {head_seq}")
        self.head_seq = head_seq


def new_draft_id() -> str:
    """A fresh, unguessable draft id: ``draft_`` and 20 lowercase hex digits (80 random bits)."""
    return "draft_" + secrets.token_hex(10)


def is_draft_id(value: str) -> bool:
    """True if ``value`` has the form of an id :func:`new_draft_id` makes (see :data:`DRAFT_ID`).

    Anything else cannot name a draft, so callers answer "not found" without asking the store:
    such values (a NUL byte, a lone surrogate, megabytes) are what one store refuses and another
    accepts (issue "values one store accepts and another refuses").
    """
    return DRAFT_ID.fullmatch(value) is not None


def fingerprint(endpoint: Endpoint, draft_id: str | None, body: Any) -> str:
    """What makes two requests 'the same' for an Idempotency-Key: endpoint, path, canonical body."""
    raw = canonical_json({"endpoint": endpoint, "draft_id": draft_id, "body": body})
    return hashlib.sha256(raw).hexdigest()


class _DraftLocks:
    """One asyncio.Lock per draft, dropped when nobody holds or waits for it.

    :meth:`hold` returns a plain async context manager (:class:`_Held`) rather than an
    ``@asynccontextmanager`` generator: the generator, its wrapper and two awaits cost ~4 µs per
    command on the event loop (py-spy under wrk: 2 % of the server's samples).
    """

    def __init__(self) -> None:
        self._locks: dict[str, list[Any]] = {}
        """draft id → [lock, holders and waiters]."""

    def hold(self, draft_id: str) -> _Held:
        """``async with locks.hold(draft_id):`` runs the block alone among this node's commands
        on the draft."""
        entry = self._locks.get(draft_id)
        if entry is None:
            entry = self._locks[draft_id] = [asyncio.Lock(), 0]
        entry[1] += 1
        return _Held(self._locks, draft_id, entry)


class _Held:
    """One use of a draft's lock (see :meth:`_DraftLocks.hold`); counts out on exit even when
    the wait for the lock was cancelled."""

    __slots__ = ("_acquired", "_draft_id", "_entry", "_locks")

    def __init__(self, locks: dict[str, list[Any]], draft_id: str, entry: list[Any]) -> None:
        self._locks, self._draft_id, self._entry, self._acquired = locks, draft_id, entry, False

    async def __aenter__(self) -> None:
        try:
            await self._entry[0].acquire()
        except BaseException:
            self._count_out()
            raise
        self._acquired = True

    async def __aexit__(self, *exc: object) -> None:
        if self._acquired:
            self._entry[0].release()
        self._count_out()

    def _count_out(self) -> None:
        entry = self._entry
        entry[1] -= 1
        if entry[1] == 0:
            del self._locks[self._draft_id]


class DraftService:
    """The application layer between HTTP handlers and the domain.

    ``conflict_retry_seconds`` bounds how long :meth:`execute` retries lost races on one draft;
    ``rng`` draws the jitter of the pauses between retries (seedable in tests).
    """

    def __init__(
        self,
        store: Store,
        projector: DraftProjector,
        limits: Limits,
        clock: Callable[[], str] = utc_now_iso,
        *,
        conflict_retry_seconds: float = CONFLICT_RETRY_SECONDS,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.projector = projector
        self.limits = limits
        self.clock = clock
        self.conflict_retry_seconds = conflict_retry_seconds
        self.conflict_backoff = (CONFLICT_BACKOFF_FIRST, CONFLICT_BACKOFF_MAX)
        """Seconds: the first and the largest pause ceiling between conflict retries."""
        self._rng = rng if rng is not None else random.Random()
        self._locks = _DraftLocks()

    async def view(self, user_id: str, draft_id: str) -> DraftState:
        """The draft's state if ``user_id`` may view it.

        Raises :class:`NotFound` (also, without any query, for a value that is not a draft id)
        or :class:`Forbidden`.
        """
        if not is_draft_id(draft_id):
            raise NotFound("draft not found")
        state = await self.projector.get(draft_id)
        if state is None:
            raise NotFound("draft not found")
        if not state.can_view(user_id):
            raise Forbidden("you are not a collaborator on this draft")
        return state

    async def view_at(self, user_id: str, draft_id: str, at_seq: int) -> DraftState:
        """The draft's state as of ``at_seq``, folded from the log (API.md v2 "Time travel over HTTP").

        The access rule is the draft's *current* one (:meth:`view`). Raises :class:`NotFound`,
        :class:`Forbidden`, or :class:`AtSeqBeyondHead` when ``at_seq`` is above the head (the
        caller checks ``at_seq >= 1`` when parsing). The past state comes from
        :meth:`DraftProjector.state_at`: a bounded cache, else a fold from the nearest kept state
        or snapshot, one cold fold at a time per process, yielding to the event loop.
        """
        now = await self.view(user_id, draft_id)
        if at_seq > now.seq:
            raise AtSeqBeyondHead(now.seq)
        if at_seq == now.seq:
            return now
        state = await self.projector.state_at(draft_id, at_seq)
        assert state is not None and state.seq == at_seq  # the log is contiguous from seq 1
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

        ``draft_id`` is None for :class:`CreateDraft` (the command carries the new id). A
        repeated Idempotency-Key is recognised by the store inside the append's transaction,
        so the common case costs no extra read. Only when the command is refused or changes
        nothing against the current state is the log asked whether the key was used before
        (a retry after the ring moved on must still get its first response).

        Raises a :class:`~projections.errors.DomainError`: the draft's rules, :class:`NotFound`
        for a value that is not a draft id (before any query), :class:`PreconditionFailed` when
        ``if_match`` is not the head, :class:`WriteConflict` when concurrent writers kept
        winning for :attr:`conflict_retry_seconds`, :class:`IdempotencyKeyReused`; or a store
        error (``StoreUnavailable``) when the log cannot be reached.
        """
        if draft_id is not None and not is_draft_id(draft_id):
            raise NotFound("draft not found")
        claim: IdempotencyClaim | None = None
        if idempotency_key is not None:
            claim = IdempotencyClaim(command.user_id, idempotency_key, fingerprint(endpoint, draft_id, body))
        try:
            outcome = await self._decide_and_append(draft_id, command, if_match, claim)
        except store_errors.IdempotencyKeyReused as e:
            raise IdempotencyKeyReused() from e
        except DomainError:
            if claim is not None and (earlier := await self._earlier(claim)) is not None:
                return Outcome(earlier.state, earlier.record, earlier.replayed, command)
            raise
        if (
            outcome.record is None
            and claim is not None
            and (earlier := await self._earlier(claim)) is not None
        ):
            outcome = earlier
        # not dataclasses.replace: it costs ~3 µs per command (introspection of the fields)
        return Outcome(outcome.state, outcome.record, outcome.replayed, command)

    async def _earlier(self, claim: IdempotencyClaim) -> Outcome | None:
        found = await self.store.find_idempotency(claim.user_id, claim.key)
        if found is None:
            return None
        if found.fingerprint != claim.fingerprint:
            raise IdempotencyKeyReused()
        return await self._replay(found.stream_id, found.seq)

    async def _decide_and_append(
        self, draft_id: str | None, command: Command, if_match: int | None, claim: IdempotencyClaim | None
    ) -> Outcome:
        if isinstance(command, CreateDraft):
            assert draft_id is None
            draft_id = command.draft_id
        assert draft_id is not None
        loop = asyncio.get_running_loop()
        async with self._locks.hold(draft_id):
            started = loop.time()
            head = 0  # the least head the log has reported; the projector is advanced to it
            attempt = 0
            # On a shared store, first try on the cached state without reading the log's tail
            # (a round trip): the append's expected_seq makes the store refuse it if the draft
            # moved on. Anything but an append to make (a refusal, no change, a stale If-Match)
            # is decided again on the log's tail, so no answer is ever given from a stale cache.
            # (A store that is not shared serves the cache from get() anyway.)
            unverified = self.store.is_shared and not isinstance(command, CreateDraft)
            while True:  # ends by time: see conflict_retry_seconds
                state = self.projector.unverified(draft_id) if unverified else None
                if state is None:
                    unverified = False
                    if not isinstance(command, CreateDraft):
                        state = await self.projector.get(draft_id, head)
                try:
                    events = self._decide(state, command, if_match)
                except DomainError:
                    if unverified:
                        unverified = False
                        continue
                    raise
                if not events:
                    if unverified:
                        unverified = False
                        continue
                    assert state is not None
                    return Outcome(state, None)
                try:
                    result = await self.store.append(
                        draft_id, events, state.seq if state is not None else 0, claim
                    )
                except store_errors.ConcurrencyConflict as e:
                    head = max(head, e.actual_seq)  # read from the log inside the append's transaction
                    if if_match is not None:
                        raise PreconditionFailed(head) from None
                    if unverified:  # the cache was behind the log: read its tail, no pause
                        unverified = False
                        continue
                    waited = loop.time() - started
                    if waited >= self.conflict_retry_seconds:
                        log.warning(
                            "draft %r: gave up after %d lost races in %.2f s (head %d)",
                            draft_id,
                            attempt + 1,
                            waited,
                            head,
                        )
                        raise WriteConflict(head, waited) from None
                    first, most = self.conflict_backoff
                    ceiling = min(most, first * 2 ** min(attempt, 16))
                    pause = self._rng.uniform(ceiling / 2, ceiling)
                    await asyncio.sleep(min(pause, self.conflict_retry_seconds - waited))
                    attempt += 1
                    continue
                if result.replayed is not None:
                    return await self._replay(result.replayed.stream_id, result.replayed.seq)
                last = result.records[-1]
                # The projector folded the new records as they committed; fold here only if it
                # did not keep this draft cached.
                after = self.projector.cached(draft_id, last.seq) or fold_all(
                    state, [r.event() for r in result.records]
                )
                assert after is not None
                return Outcome(after, last)

    def _decide(self, state: DraftState | None, command: Command, if_match: int | None) -> list[NewEvent]:
        """The command's events against ``state``, or the refusal that comes first.

        An invalid field is the request's own fault whatever the draft's head is: 422 comes
        before 412 (schemathesis sent a bad user id with a stale If-Match); a command the rights
        table refuses is 403 before 412; then 412; then the draft's other rules.
        """
        refused: DomainError | None = None
        try:
            events = decide(state, command, self.clock(), self.limits)
        except ValidationFailed:
            raise
        except DomainError as e:
            events, refused = [], e
        if state is not None and if_match is not None:
            if isinstance(refused, Forbidden):
                raise refused  # the rights table before the head (a viewer may remove themselves)
            if state.seq != if_match:
                raise PreconditionFailed(state.seq, if_match)
        if refused is not None:
            raise refused
        return events

    async def _replay(self, draft_id: str, seq: int) -> Outcome:
        """The outcome of the append whose Idempotency-Key is kept at ``seq`` (its first record),
        including the ring return appended with it (:func:`is_ring_return`)."""
        records = await self.store.read(draft_id, 0, seq + 1)
        if len(records) > seq and not is_ring_return(records[seq - 1].event(), records[seq].event()):
            records = records[:seq]
        state = fold_all(None, [r.event() for r in records])
        if state is None or not records:
            raise NotFound("the draft of this idempotent request is gone")
        return Outcome(state, records[-1], replayed=True)
