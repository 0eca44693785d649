"""Presence shared by every process of a store, over the peer bus (API.md v2 "Presence": a user
present on node A is seen on node B within 1 s; a dead node's users leave within 30 s).

The four wirings :mod:`eventstore.peerbus` asks for, around :class:`server.presence.PresenceRegistry`:

* the registry's local-change hook publishes each change of this process's sources at once
  (``{"k": "c", "e": [entry]}``; a lost one is repaired by the next announcement);
* ``on_announce`` (every heartbeat, and when a process is first heard) publishes all of this
  process's sources, in parts of at most :data:`eventstore.peerbus.MAX_PAYLOAD` bytes
  (``{"k": "a", "s": round, "i": part, "n": parts, "e": [entries]}``); a receiver that got every
  part of one round removes that process's sources the round did not name (so a lost ``leave``
  is repaired too), counting the changes that arrived between the parts;
* the bus's handler applies a peer's entries with ``apply_remote(node_id, …)``: each replaces
  that peer's source (the bus keeps one sender's messages in order; a stale one is ignored), and
  an adoption of a newer state comes back through the local-change hook as a change to publish;
* ``on_node_expired`` calls ``drop_node``: a dead or departed process's users leave unless they
  are present through another one.

An entry is ``[draft_id, user_id, state, since, state_ts]`` (``state`` the JSON object, or null
for a leave; times in Unix seconds). A message that does not parse, or an entry the registry
refuses (:class:`server.presence.InvalidPresenceState`), is dropped and logged; it never stops the
bus (docs/RELIABILITY.md "Bad input, by kind"). The registry's node id is the bus's node id.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import orjson

from eventstore.peerbus import MAX_PAYLOAD, PeerBus
from server.presence import InvalidPresenceState, LocalChange, PresenceRegistry

log = logging.getLogger(__name__)

PRESENCE_TOPIC = "presence"


def _entry(change: LocalChange) -> list[Any]:
    state = orjson.Fragment(change.state_json) if change.state_json is not None else None
    return [change.draft_id, change.user_id, state, change.since, change.state_ts]


class _Round:
    __slots__ = ("keys", "number", "parts", "seen")

    def __init__(self, number: int, parts: int) -> None:
        self.number = number
        self.parts = parts
        self.seen: set[int] = set()
        self.keys: set[tuple[str, str]] = set()


class PresenceReplicator:
    """This process's presence registry, kept in step with every other process of the store."""

    def __init__(self, bus: PeerBus, registry: PresenceRegistry) -> None:
        self.bus = bus
        self.registry = registry
        self._rounds: dict[str, _Round] = {}
        self._announcements = 0
        self._started = False

    def start(self) -> None:
        """Begin sharing (after the store opened; nothing to do on a bus without peers)."""
        if self._started or not self.bus.has_transport:
            return
        self._started = True
        self.registry.on_local_change = self.publish_change
        self.bus.subscribe(PRESENCE_TOPIC, self.receive)
        self.bus.on_announce(self.announce)
        self.bus.on_node_expired(self.drop_node)

    def close(self) -> None:
        """Stop publishing (the bus's goodbye makes the peers drop this process's users)."""
        self._started = False
        self.registry.on_local_change = None

    # -- this process -------------------------------------------------------------------------

    def publish_change(self, change: LocalChange) -> None:
        """The registry's hook: publish one change of this process's sources now."""
        if self._started:
            self.bus.publish(PRESENCE_TOPIC, orjson.dumps({"k": "c", "e": [_entry(change)]}))

    def announce(self) -> None:
        """Publish every source of this process, in parts that fit one bus message."""
        if not self._started:
            return
        self._announcements += 1
        parts: list[list[bytes]] = [[]]
        size = 0
        for change in self.registry.local_entries():
            encoded = orjson.dumps(_entry(change))
            if parts[-1] and size + len(encoded) + 64 > MAX_PAYLOAD:
                parts.append([])
                size = 0
            parts[-1].append(encoded)
            size += len(encoded) + 1
        for index, part in enumerate(parts):
            head = orjson.dumps({"k": "a", "s": self._announcements, "i": index, "n": len(parts)})
            self.bus.publish(PRESENCE_TOPIC, head[:-1] + b',"e":[' + b",".join(part) + b"]}")

    # -- the other processes ------------------------------------------------------------------

    def receive(self, node_id: str, payload: bytes) -> None:
        """A peer's presence message (a bus handler); bad ones are dropped and logged."""
        number = index = parts = 0
        try:
            message = orjson.loads(payload)
            kind = message["k"]
            if kind not in ("a", "c"):
                raise ValueError(f"unknown kind {kind!r}")
            entries = [_parsed(e) for e in message["e"]]
            if kind == "a":
                number, index, parts = (int(message[key]) for key in ("s", "i", "n"))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            log.warning("presence message from %s dropped: %s", node_id, e)
            return
        round_ = self._rounds.get(node_id)
        for draft_id, user_id, state, since, state_ts in entries:
            try:
                self.registry.apply_remote(node_id, draft_id, user_id, state, since, state_ts)
            except InvalidPresenceState as e:
                log.warning("presence entry from %s dropped: %s", node_id, e.message)
                continue
            if round_ is not None and kind == "c":  # a change between the parts of a round
                if state is None:
                    round_.keys.discard((draft_id, user_id))
                else:
                    round_.keys.add((draft_id, user_id))
        if kind != "a":
            return
        if round_ is None or round_.number != number:
            round_ = self._rounds[node_id] = _Round(number, parts)
        round_.seen.add(index)
        round_.keys.update((e[0], e[1]) for e in entries if e[2] is not None)
        if len(round_.seen) >= round_.parts:
            del self._rounds[node_id]
            for draft_id, user_id in self.registry.remote_keys(node_id) - round_.keys:
                self.registry.apply_remote(node_id, draft_id, user_id, None, math.inf, math.inf)

    def drop_node(self, node_id: str) -> None:
        """A peer is gone (silent for the bus's expiry, or said goodbye): its users leave."""
        self._rounds.pop(node_id, None)
        self.registry.drop_node(node_id)


def _parsed(entry: Any) -> tuple[str, str, dict[str, Any] | None, float, float]:
    """``[draft_id, user_id, state, since, state_ts]`` checked for types; ValueError if not."""
    if not isinstance(entry, list) or len(entry) != 5:
        raise ValueError("an entry is a list of five")
    draft_id, user_id, state, since, state_ts = entry
    if not isinstance(draft_id, str) or not isinstance(user_id, str):
        raise ValueError("draft_id and user_id are strings")
    if state is not None and not isinstance(state, dict):
        raise ValueError("state is an object or null")
    for value in (since, state_ts):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("since and state_ts are numbers")
    return draft_id, user_id, state, float(since), float(state_ts)
