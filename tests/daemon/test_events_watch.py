"""gravd's own events from the node watcher: links opened and lost, refusals, drops past a threshold."""

from __future__ import annotations

import pytest

from gravpy import Grav
from gravpy.daemon.events_watch import NodeWatcher
from gravpy.errors import HandshakeRejectedError
from gravpy.events import Event, Severity
from gravpy.message import Message
from tests._bus_helpers import until
from tests.mesh.conftest import NodeFactory, linked_to, node

__all__ = ["node"]  # the fixture, imported for these tests

GUARD = 10.0  # seconds: a hang guard


class Recorder:
    """Collects what the watcher records."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    async def __call__(self, event: Event) -> None:
        self.events.append(event)

    def kinds(self) -> list[tuple[str, str]]:
        return [(e.category, e.action) for e in self.events]


async def started(grav: Grav, **options: int) -> tuple[NodeWatcher, Recorder]:
    recorder = Recorder()
    watcher = NodeWatcher(grav, recorder, **options)
    await watcher.check()  # the first snapshot: nothing to report yet
    return watcher, recorder


async def test_peer_linked_then_lost(node: NodeFactory) -> None:
    """A peer that links is recorded as linked (success), and as lost once it is gone."""
    a = await node()
    b = await node()
    watcher, recorder = await started(a)
    await b.connect_endpoint(a.endpoints()[0])
    await a.wait_for(linked_to(b), timeout=GUARD)
    await watcher.check()
    [linked] = recorder.events
    assert (linked.category, linked.action) == ("peer", "linked")
    assert linked.acted_upon == b.node_uuid
    assert linked.severity is Severity.SUCCESS
    await b.stop()
    await a.wait_for(lambda peers: not any(p.uuid == b.node_uuid for p in peers), GUARD)
    await watcher.check()
    assert recorder.kinds() == [("peer", "linked"), ("peer", "lost")]
    assert recorder.events[1].acted_upon == b.node_uuid


async def test_refusal_is_recorded_with_its_reason(node: NodeFactory) -> None:
    """A link refused for the wrong mesh is recorded as a refusal with reason 'mesh'."""
    a = await node(belongs_to="red")
    b = await node(belongs_to="blue")
    watcher, recorder = await started(a)
    with pytest.raises(HandshakeRejectedError):
        await b.connect_endpoint(a.endpoints()[0])
    assert a.hub is not None
    hub = a.hub  # b may hear its refusal before a has counted it (no change is signalled)
    await until(lambda: bool(hub.statistics().handshakes_rejected))
    await watcher.check()
    refused = [e for e in recorder.events if e.action == "refused"]
    assert refused
    assert refused[0].metadata["reason"] == "mesh"
    assert refused[0].severity is Severity.WARNING


async def test_drops_are_recorded_once_past_the_threshold() -> None:
    """Inbox drops are reported when they grow by the threshold, not before, and not twice."""
    async with Grav() as g:
        watcher, recorder = await started(g, drop_threshold=5)
        slow = g.connect(inbox_limit=1)
        slow.filter_type("bench.x")
        slow.__aiter__()
        sender = g.connect()
        for _ in range(4):  # 1 queued, 3 dropped: below the threshold
            sender.send(Message.new("bench.x", b""))
        await watcher.check()
        assert recorder.events == []
        for _ in range(3):  # 6 dropped in all
            sender.send(Message.new("bench.x", b""))
        await watcher.check()
        await watcher.check()
        [dropped] = recorder.events
        assert (dropped.category, dropped.action) == ("messages", "dropped")
        assert dropped.metadata == {"reason": "inbox_overflow", "count": 6, "total": 6}
