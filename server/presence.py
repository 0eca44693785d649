"""Who is on each draft right now: one presence entry per (draft, user), never in the log.

API.md v2 "Presence (ephemeral: never in the log)". A user is present on a draft while at least
one of their sockets is subscribed to it, on any node; one entry per user however many sockets;
the user's state is the JSON object set last by any of their sockets (at most
:data:`MAX_STATE_BYTES` bytes serialised).

**Sources.** An entry exists while it has a *source*: this node (the sockets attached here, by
socket key) or a remote node that announced the user (:meth:`PresenceRegistry.apply_remote`).
Each source carries its own latest announced state and when it was set (``state_ts``), and its
``since``; the entry shows the state of the source with the largest ``(state_ts, state bytes)``
among the sources present now (the bytes break a tie the same way on every node), and the
earliest ``since``. A peer's announcement *replaces* that peer's source (a stale one — an older
incarnation of the source, by ``since``, or an older ``state_ts`` of the same one — is ignored),
so a node that restarted with a new node id, or rejoined after its ``leave`` was lost, is shown
as what it announces now. **This node's source always carries the newest state heard:** the
user's first socket here takes the entry's newest state, and when a peer announces a newer
state while the user is present here, this node's source adopts it and publishes that as a
local change — so every node's copy of this node's source carries it, and the state stays when
the sockets that set it go while the user is present elsewhere. An adoption heard back adopts
nothing (equal ``(state_ts, state)`` is not newer): no message storm. When this node's source
leaves, its copies of peers' sources older than its state take that state (the peers adopt it
when they hear it; their next message replaces the copy whatever its ``state_ts``), so a close
right after a set does not fall back to an older state while the adoption is on its way.

**Observers** see the merged entry change, only on real changes: ``join`` when a user's first
source appears (a second socket, or a second node, is not a join), ``update`` when the merged
state's bytes change, ``leave`` when the last source goes (its last socket here detached and no
node announces it any more).

**Replication interface** (for a peer bus between workers and nodes; this module does no I/O):

* ``on_local_change(change)`` — a hook called with a :class:`LocalChange` each time *this node's*
  source of an entry changes: the first socket of a user attaches (the entry's newest state, or
  ``{}`` with ``state_ts`` 0), a socket sets a state, the source adopts a peer's newer state,
  the last socket detaches (``state`` None). A
  replicator broadcasts it; peers apply it with ``apply_remote(this node's id, …)``.
* :meth:`PresenceRegistry.local_entries` — this node's live sources with their states, for periodic
  re-announcement (a peer that missed a message, or started later, catches up; applying an
  announcement that changes nothing notifies nobody).
* :meth:`PresenceRegistry.apply_remote` — a peer's source appeared, changed or (state None) left.
* :meth:`PresenceRegistry.drop_node` — a peer is gone (its heartbeats stopped): its users leave
  unless they are present through another node.

**Memory.** Per entry: the user id; per source its state as JSON bytes (at most 512),
``state_ts`` and ``since``; the socket keys of this node. :meth:`PresenceRegistry.stats`
reports entries, sources and state bytes; docs/ARCHITECTURE.md gives the measured bytes per entry.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import socket
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson

log = logging.getLogger(__name__)

MAX_STATE_BYTES = 512
"""A presence state serialised as JSON may take at most this many bytes (API.md v2 "Presence")."""

EMPTY_STATE = b"{}"

PresenceKind = Literal["join", "update", "leave"]


def new_node_id() -> str:
    """A node id unique across processes and restarts: ``host:pid:random``."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class InvalidPresenceState(ValueError):
    """A presence state that is not a JSON object (``code`` ``bad_message``) or is larger than
    :data:`MAX_STATE_BYTES` serialised (``code`` ``payload_too_large``); see docs/API.md."""

    def __init__(self, code: Literal["bad_message", "payload_too_large"], message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def encode_state(state: object) -> bytes:
    """``state`` as compact JSON bytes; raises :class:`InvalidPresenceState`.

    The state must be a JSON object (a ``dict`` with string keys) of at most
    :data:`MAX_STATE_BYTES` bytes as orjson writes it (compact, UTF-8).
    """
    if not isinstance(state, dict):
        raise InvalidPresenceState("bad_message", "state must be a JSON object")
    try:
        raw = orjson.dumps(state)
    except TypeError as e:  # only reachable from Python callers: parsed JSON always encodes
        raise InvalidPresenceState("bad_message", f"state is not JSON: {e}") from None
    if len(raw) > MAX_STATE_BYTES:
        raise InvalidPresenceState(
            "payload_too_large", f"state is {len(raw)} bytes as JSON; at most {MAX_STATE_BYTES}"
        )
    # a copy of exactly len(raw) bytes: orjson's own result keeps its ~4 KiB write buffer's
    # allocation (measured with tracemalloc), which kept per entry would be 8x the state
    return bytes(memoryview(raw))


@dataclass(frozen=True, slots=True)
class PresenceMember:
    """One entry as ``members()`` lists it: ``since`` and timestamps are Unix seconds."""

    user_id: str
    state_json: bytes
    since: float

    @property
    def state(self) -> dict[str, Any]:
        """The state as a JSON object."""
        value: dict[str, Any] = orjson.loads(self.state_json)
        return value


@dataclass(frozen=True, slots=True)
class PresenceEvent:
    """A change of a merged entry, for observers. ``state_json`` is None on ``leave``; ``ts`` is
    when this node saw the change (its clock, Unix seconds)."""

    draft_id: str
    kind: PresenceKind
    user_id: str
    state_json: bytes | None
    ts: float


@dataclass(frozen=True, slots=True)
class LocalChange:
    """This node's source of ``(draft_id, user_id)`` changed (the replication hook's argument).

    ``state_json`` None means this node's last socket of the user left. ``since``: when the
    user's first socket here attached; ``state_ts``: when this state was set here (0 for the
    ``{}`` of a join that set nothing yet), the value peers order states by.
    """

    draft_id: str
    user_id: str
    state_json: bytes | None
    since: float
    state_ts: float


@dataclass(slots=True)
class _Source:
    """One node's source of an entry: its latest announced state (JSON bytes), when that state
    was set (``state_ts``) and when the source appeared (``since``, which also tells one
    incarnation of a node's source from the next: a rejoin after a lost ``leave`` is newer)."""

    state_json: bytes
    since: float
    state_ts: float
    # a peer's copy this node moved forward itself when its own source left (see detach): the
    # peer's next message replaces it whatever its state_ts
    predicted: bool = False

    def key(self) -> tuple[float, bytes]:
        """The order of states: the larger ``(state_ts, state bytes)`` is the newer, the same on
        every node (the bytes break a tie)."""
        return self.state_ts, self.state_json


class _Entry:
    __slots__ = ("sockets", "sources")

    def __init__(self) -> None:
        self.sources: dict[str, _Source] = {}  # node id -> source (this node's id included)
        self.sockets: set[Hashable] = set()  # this node's attachments

    def newest(self) -> _Source | None:
        """The source with the newest state (largest ``(state_ts, state bytes)``), or None."""
        best: _Source | None = None
        for source in self.sources.values():
            if best is None or source.key() > best.key():
                best = source
        return best

    def winner(self) -> tuple[bytes, float] | None:
        """(state, since) of the merged entry, or None when no source is left."""
        best = self.newest()
        if best is None:
            return None
        return best.state_json, min(source.since for source in self.sources.values())


Observer = Callable[[PresenceEvent], None]
LocalChangeHook = Callable[[LocalChange], None]


class PresenceRegistry:
    """Presence entries of every draft, as this node knows them (see the module docstring).

    ``node_id`` names this node's source (unique per process across the cluster); ``clock``
    returns Unix seconds (injected for tests). Not thread-safe: one event loop owns it.
    """

    def __init__(self, node_id: str, clock: Callable[[], float] = time.time) -> None:
        self.node_id = node_id
        self.clock = clock
        self._drafts: dict[str, dict[str, _Entry]] = {}
        self._observers: list[Observer] = []
        self.on_local_change: LocalChangeHook | None = None
        """The replication hook (module docstring); errors it raises are logged, not raised."""
        self._state_bytes = 0
        self._last_since = -math.inf

    # -- observers -----------------------------------------------------------------------------

    def add_observer(self, observer: Observer) -> None:
        """Call ``observer(event)`` on every join, update and leave of any draft's entries."""
        self._observers.append(observer)

    def remove_observer(self, observer: Observer) -> None:
        """Stop calling ``observer``; unknown observers are ignored."""
        if observer in self._observers:
            self._observers.remove(observer)

    # -- this node's sockets -------------------------------------------------------------------

    def attach(self, draft_id: str, user_id: str, socket_key: Hashable) -> None:
        """A socket of ``user_id`` subscribed to ``draft_id`` (idempotent per ``socket_key``).

        The user's first socket here creates this node's source with the entry's newest state
        (``{}`` at ``state_ts`` 0 if the user is present nowhere else) and publishes it, which may
        be a ``join``; further sockets change nothing visible.
        """
        entry = self._entry(draft_id, user_id, create=True)
        assert entry is not None
        if socket_key in entry.sockets:
            return
        entry.sockets.add(socket_key)
        if self.node_id in entry.sources:
            return
        now = self.clock()
        # strictly increasing per node: a rejoin after a lost leave is a newer incarnation
        since = now if now > self._last_since else math.nextafter(self._last_since, math.inf)
        self._last_since = since
        before = entry.winner()
        # present through another node already: this node's source carries the user's newest
        # state (and when it was set), so that it outlives the other node's sockets
        newest = entry.newest()
        state, state_ts = (newest.state_json, newest.state_ts) if newest is not None else (EMPTY_STATE, 0.0)
        self._put_source(entry, self.node_id, _Source(state, since, state_ts))
        self._local_changed(draft_id, user_id, entry)
        self._notify(draft_id, user_id, before, entry.winner(), now)

    def set_state(self, draft_id: str, user_id: str, socket_key: Hashable, state: object) -> bool:
        """Set the user's state from one of their attached sockets; True if the state changed
        (observers were told). The state is set now even when its bytes are the user's state
        already (peers learn that it was set last), but then nobody is notified.

        Raises :class:`InvalidPresenceState` for a state that is not a JSON object of at most
        :data:`MAX_STATE_BYTES` bytes, and ``KeyError`` for a socket that is not attached.
        """
        raw = encode_state(state)
        entry = self._entry(draft_id, user_id, create=False)
        if entry is None or socket_key not in entry.sockets:
            raise KeyError(f"socket {socket_key!r} is not attached to {draft_id!r} for {user_id!r}")
        before = entry.winner()
        now = self.clock()
        mine = entry.sources[self.node_id]  # the newest already (attach and _adopt keep it so)
        # set last, so the newest: a peer's clock ahead of ours must not make it older
        state_ts = now if now > mine.state_ts else math.nextafter(mine.state_ts, math.inf)
        self._put_source(entry, self.node_id, _Source(raw, mine.since, state_ts))
        self._local_changed(draft_id, user_id, entry)
        self._notify(draft_id, user_id, before, entry.winner(), now)
        return before is None or before[0] != raw

    def detach(self, draft_id: str, user_id: str, socket_key: Hashable) -> None:
        """A socket's subscription ended (unsubscribe, close, revocation); idempotent.

        The user's last socket here removes this node's source: a ``leave`` unless another node
        still announces the user. The copies of the other nodes' sources that are older than
        this node's state take it (they adopt it when they hear it; their next message replaces
        the copy), so the state does not fall back while those adoptions are on their way.
        """
        entry = self._entry(draft_id, user_id, create=False)
        if entry is None or socket_key not in entry.sockets:
            return
        entry.sockets.discard(socket_key)
        if entry.sockets:
            return
        now = self.clock()
        before = entry.winner()
        mine = entry.sources.get(self.node_id)
        if mine is not None:
            # every peer present for the user adopts this node's state when it hears it; until
            # its next message, its copy here shows what it will announce, so the state does
            # not fall back to an older one while that adoption is on its way (a close right
            # after a set); the peer's next message replaces the copy, adopted or not
            for node_id, source in list(entry.sources.items()):
                if node_id != self.node_id and source.key() < mine.key():
                    self._put_source(
                        entry, node_id, _Source(mine.state_json, source.since, mine.state_ts, predicted=True)
                    )
        mine = self._drop_source(draft_id, user_id, entry, self.node_id)
        if mine is not None:
            self._local_changed(draft_id, user_id, None, since=mine.since, ts=now)
        self._notify(draft_id, user_id, before, entry.winner(), now)

    # -- replication ---------------------------------------------------------------------------

    def local_entries(self) -> list[LocalChange]:
        """This node's sources, for periodic re-announcement to peers: each with its state (the
        user's newest this node heard, see the module docstring) and that state's ``state_ts``."""
        out: list[LocalChange] = []
        for draft_id, users in self._drafts.items():
            for user_id, entry in users.items():
                mine = entry.sources.get(self.node_id)
                if mine is not None:
                    out.append(LocalChange(draft_id, user_id, mine.state_json, mine.since, mine.state_ts))
        return out

    def apply_remote(
        self,
        node_id: str,
        draft_id: str,
        user_id: str,
        state: Mapping[str, Any] | bytes | None,
        since: float,
        state_ts: float,
    ) -> None:
        """A peer's source of ``(draft_id, user_id)`` is now ``state`` (a JSON object, or its
        JSON bytes), or is gone (None; ``since`` then names the source that left).

        The announcement replaces the peer's source, unless it is stale: one of an older
        incarnation of that source (a smaller ``since``), or of the same one with an older
        ``state_ts`` (a reordered or late message) than one heard from the peer (a copy
        :meth:`detach` moved forward is replaced whatever the ``state_ts``); a leave of an older incarnation is ignored
        too (``since`` ``math.inf`` removes whatever the peer announced). When the user is
        present here and the peer's state is newer than this node's source's, this node's
        source adopts it and publishes that (``on_local_change``), so every node's copy of this
        node's source carries the newest state. Idempotent: applying the same announcement
        twice tells observers nothing the second time. A state that breaks the rules of
        :func:`encode_state` raises :class:`InvalidPresenceState` and changes nothing;
        ``node_id`` equal to this node's is ignored (our own broadcast coming back).
        """
        if node_id == self.node_id:
            return
        now = self.clock()
        if state is None:
            entry = self._entry(draft_id, user_id, create=False)
            current = entry.sources.get(node_id) if entry is not None else None
            if entry is None or current is None or since < current.since:
                return
            before = entry.winner()
            self._drop_source(draft_id, user_id, entry, node_id)
            self._notify(draft_id, user_id, before, entry.winner(), now)
            return
        raw = _checked_json(state)
        entry = self._entry(draft_id, user_id, create=True)
        assert entry is not None
        current = entry.sources.get(node_id)
        if current is not None and (
            since < current.since
            or (since == current.since and not current.predicted and state_ts < current.state_ts)
        ):
            return  # stale: a newer message of this source arrived first
        before = entry.winner()
        heard = _Source(raw, since, state_ts)
        self._put_source(entry, node_id, heard)
        mine = entry.sources.get(self.node_id)
        if mine is not None and heard.key() > mine.key():
            # equal (state_ts, state) is not newer: an adoption heard back adopts nothing
            self._put_source(entry, self.node_id, _Source(raw, mine.since, state_ts))
            self._local_changed(draft_id, user_id, entry)
        self._notify(draft_id, user_id, before, entry.winner(), now)

    def remote_keys(self, node_id: str) -> set[tuple[str, str]]:
        """The ``(draft_id, user_id)`` pairs ``node_id`` announces now (for a replicator that
        replaces a peer's whole set after a complete announcement)."""
        return {
            (draft_id, user_id)
            for draft_id, users in self._drafts.items()
            for user_id, entry in users.items()
            if node_id in entry.sources
        }

    def drop_node(self, node_id: str) -> None:
        """A peer is gone: remove its sources; its users leave unless present elsewhere."""
        if node_id == self.node_id:
            return
        now = self.clock()
        for draft_id in list(self._drafts):
            users = self._drafts.get(draft_id)
            if users is None:
                continue
            for user_id in list(users):
                entry = users.get(user_id)
                if entry is None or node_id not in entry.sources:
                    continue
                before = entry.winner()
                self._drop_source(draft_id, user_id, entry, node_id)
                self._notify(draft_id, user_id, before, entry.winner(), now)

    # -- reading -------------------------------------------------------------------------------

    def members(self, draft_id: str) -> list[PresenceMember]:
        """The draft's present users, ordered by ``since`` then user id."""
        users = self._drafts.get(draft_id)
        if not users:
            return []
        out: list[PresenceMember] = []
        for user_id, entry in users.items():
            merged = entry.winner()
            if merged is not None:
                out.append(PresenceMember(user_id, merged[0], merged[1]))
        out.sort(key=lambda m: (m.since, m.user_id))
        return out

    def stats(self) -> dict[str, int]:
        """``entries`` (present (draft, user) pairs), ``sources`` (node records behind them),
        ``sockets`` (this node's attachments) and ``state_bytes`` (JSON bytes of all sources'
        states) — the figures the ``/metrics`` presence gauges report."""
        entries = sources = sockets = 0
        for users in self._drafts.values():
            for entry in users.values():
                entries += bool(entry.sources)
                sources += len(entry.sources)
                sockets += len(entry.sockets)
        return {"entries": entries, "sources": sources, "sockets": sockets, "state_bytes": self._state_bytes}

    # -- internals -----------------------------------------------------------------------------

    def _entry(self, draft_id: str, user_id: str, *, create: bool) -> _Entry | None:
        users = self._drafts.get(draft_id)
        if users is None:
            if not create:
                return None
            users = self._drafts[draft_id] = {}
        entry = users.get(user_id)
        if entry is None and create:
            entry = users[user_id] = _Entry()
        return entry

    def _put_source(self, entry: _Entry, node_id: str, source: _Source) -> None:
        old = entry.sources.get(node_id)
        self._state_bytes += len(source.state_json) - (len(old.state_json) if old is not None else 0)
        entry.sources[node_id] = source

    def _drop_source(self, draft_id: str, user_id: str, entry: _Entry, node_id: str) -> _Source | None:
        """Remove ``node_id``'s source and return it (None if it had none); the entry goes with
        its last source and socket."""
        source = entry.sources.pop(node_id, None)
        if source is not None:
            self._state_bytes -= len(source.state_json)
        if not entry.sources and not entry.sockets:
            users = self._drafts[draft_id]
            del users[user_id]
            if not users:
                del self._drafts[draft_id]
        return source

    def _local_changed(
        self,
        draft_id: str,
        user_id: str,
        entry: _Entry | None,
        *,
        since: float = 0.0,
        ts: float = 0.0,
    ) -> None:
        hook = self.on_local_change
        if hook is None:
            return
        if entry is None:
            change = LocalChange(draft_id, user_id, None, since, ts)
        else:
            mine = entry.sources[self.node_id]
            change = LocalChange(draft_id, user_id, mine.state_json, mine.since, mine.state_ts)
        try:
            hook(change)
        except Exception:  # a replicator's failure must not undo or block a local change
            log.exception("presence replication hook failed")

    def _notify(
        self,
        draft_id: str,
        user_id: str,
        before: tuple[bytes, float] | None,
        after: tuple[bytes, float] | None,
        now: float,
    ) -> None:
        if before is None and after is not None:
            event = PresenceEvent(draft_id, "join", user_id, after[0], now)
        elif before is not None and after is None:
            event = PresenceEvent(draft_id, "leave", user_id, None, now)
        elif before is not None and after is not None and before[0] != after[0]:
            event = PresenceEvent(draft_id, "update", user_id, after[0], now)
        else:
            return
        for observer in tuple(self._observers):
            try:
                observer(event)
            except Exception:  # one observer's failure must not hide the change from the others
                log.exception("presence observer failed")


def _checked_json(state: Mapping[str, Any] | bytes) -> bytes:
    if isinstance(state, bytes):
        try:
            parsed = orjson.loads(state)
        except orjson.JSONDecodeError:
            raise InvalidPresenceState("bad_message", "state is not JSON") from None
        return encode_state(parsed)
    if isinstance(state, Mapping) and not isinstance(state, dict):
        return encode_state(dict(state))
    return encode_state(state)
