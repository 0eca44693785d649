"""Past states of drafts (``GET …?at_seq=N``): an LRU bounded in entries and approximate bytes.

A state as of seq N never changes (the log is append-only), so it can be kept as long as
memory allows and used both as an answer and as a base to fold a later past state from:
``fold(state_k, log[k:N]) == fold(log[:N])`` (property test in tests/projections/test_past.py).
"""

from __future__ import annotations

from collections import OrderedDict

from projections.state import DraftState

PAST_STATES = 32
"""Entries kept by default (a few dozen past states, across all drafts)."""

PAST_STATE_BYTES = 32 << 20
"""Approximate bytes kept by default (see :func:`approximate_size`)."""

_SEGMENT_OVERHEAD = 200
"""Bytes charged per segment beside its content: ids, timestamps and the objects holding them."""


def approximate_size(state: DraftState) -> int:
    """An estimate, in bytes, of the memory a state holds (its text plus a fixed cost per part)."""
    text = len(state.title) + len(state.description)
    text += sum(len(s.content) + _SEGMENT_OVERHEAD for s in state.segments)
    return (
        1024 + text + _SEGMENT_OVERHEAD * (len(state.collaborators) + len(state.ring_state.holders_history))
    )


class PastStates:
    """Immutable past draft states keyed by ``(draft_id, seq)``, least recently used dropped first.

    Bounded by ``max_entries`` and by ``max_bytes`` (sum of :func:`approximate_size`); a state
    larger than ``max_bytes`` alone is not kept. Not thread-safe (the event loop's only).
    """

    def __init__(self, max_entries: int = PAST_STATES, max_bytes: int = PAST_STATE_BYTES) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._states: OrderedDict[tuple[str, int], tuple[DraftState, int]] = OrderedDict()
        self.bytes = 0
        """Approximate bytes held now."""
        self.hits = 0
        """Look-ups answered from memory."""
        self.misses = 0
        """Look-ups that needed a fold."""

    def __len__(self) -> int:
        return len(self._states)

    def get(self, draft_id: str, seq: int, *, count: bool = True) -> DraftState | None:
        """The state as of exactly ``seq``, if kept (counted in :attr:`hits` or :attr:`misses`
        unless ``count`` is False: a second look after waiting for a fold is not a new request)."""
        entry = self._states.get((draft_id, seq))
        if entry is None:
            self.misses += count
            return None
        self.hits += count
        self._states.move_to_end((draft_id, seq))
        return entry[0]

    def nearest_at_or_below(self, draft_id: str, seq: int) -> DraftState | None:
        """The kept state of the draft with the highest seq ≤ ``seq`` (a base to fold from), or None."""
        best: DraftState | None = None
        for (d, s), (state, _) in self._states.items():
            if d == draft_id and s <= seq and (best is None or s > best.seq):
                best = state
        if best is not None:
            self._states.move_to_end((draft_id, best.seq))
        return best

    def put(self, state: DraftState) -> None:
        """Keep ``state`` (keyed by its id and seq), dropping the least recently used over the bounds."""
        key = (state.id, state.seq)
        size = approximate_size(state)
        if size > self.max_bytes or self.max_entries <= 0:
            return
        old = self._states.pop(key, None)
        if old is not None:
            self.bytes -= old[1]
        self._states[key] = (state, size)
        self.bytes += size
        while len(self._states) > self.max_entries or self.bytes > self.max_bytes:
            _, (_, dropped) = self._states.popitem(last=False)
            self.bytes -= dropped
