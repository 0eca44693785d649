"""Review finding: a process restarted with a new node id (SIGKILL + supervisor's new worker)
whose user reconnects before the old id expires leaves the other nodes on the old state forever.

C heard bob's state v2 from A1. A1 is SIGKILLed (no leave, no goodbye). The supervisor's new
worker A2 (new node id) gets bob's reconnecting socket: a fresh join, {} at state_ts 0. C keeps
the entry alive through A2's source, and "the state only moves forward" keeps v2 on C. A1 expires
on C; A2's announcements carry {} ts 0 which never beats v2. A2 shows {}, C shows v2, forever
(until bob sets a state again). The same happens without a restart when A's leave is lost on
the best-effort bus and bob rejoins A before A's next announcement.
"""

from __future__ import annotations

from server.presence import LocalChange, PresenceRegistry
from tests.server.test_presence_registry import Clock


def _relay(changes: list[LocalChange], sender: str, to: PresenceRegistry) -> None:
    for c in changes:
        to.apply_remote(sender, c.draft_id, c.user_id, c.state_json, c.since, c.state_ts)
    changes.clear()


def test_restarted_node_and_its_peers_agree_on_a_rejoined_users_state() -> None:
    clock = Clock()
    a1 = PresenceRegistry("node-a1", clock=clock)
    c = PresenceRegistry("node-c", clock=clock)
    from_a1: list[LocalChange] = []
    a1.on_local_change = from_a1.append
    a1.attach("d", "bob", "s1")
    a1.set_state("d", "bob", "s1", {"v": 2})
    _relay(from_a1, "node-a1", c)
    assert c.members("d")[0].state == {"v": 2}
    # A1 is SIGKILLed: nothing more from it. The supervisor's new worker has a new node id.
    a2 = PresenceRegistry("node-a2", clock=clock)
    from_a2: list[LocalChange] = []
    a2.on_local_change = from_a2.append
    a2.attach("d", "bob", "s2")  # bob's client reconnects (a fresh socket, no state set)
    _relay(from_a2, "node-a2", c)
    c.drop_node("node-a1")  # the bus expires A1 on C
    # A2's periodic announcements
    for _ in range(3):
        from_a2.extend(a2.local_entries())
        _relay(from_a2, "node-a2", c)
    a2_view = [(m.user_id, m.state) for m in a2.members("d")]
    c_view = [(m.user_id, m.state) for m in c.members("d")]
    assert a2_view == c_view, f"A2 shows {a2_view}, C shows {c_view}"
