"""The advertiser: when a node tells its links what they may send, once per loop turn.

Theory of operation
-------------------
What each link is told is kept by the ``InterestTable`` (``gravpy.mesh.interests``); the
``Advertiser`` owns that table and decides *when* it is flushed. Every change the hub sees (a
link opened, said its interests or neighbours, was replaced, moved or lost; the local pods'
interests changed; new auth rules) marks links dirty in the table and asks for a
re-advertisement ``soon``: at most one per loop turn however many changes came in it, and none
once the node is stopping. A link that just opened is told at once (it hears what it may send
before anything else).

A re-advertisement also carries what the node stands in for: the interests of peers whose link
dropped (``AbsentPeers``, kept for the resume window so leaves' messages keep flowing), the
patterns a restarted node holds for apps it expects back (the ``ResumeGate``), and what the
node's bridges bring from other meshes; and it tells the bridges what the open links want.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from gravpy.bus import Bus
from gravpy.mesh.bridge_host import Bridges
from gravpy.mesh.interests import AbsentPeers, InterestStatistics, InterestTable
from gravpy.mesh.peer_link import PeerLink

__all__ = ["Advertiser"]


class Advertiser:
    """What each link is told it may send, re-advertised once per loop turn."""

    def __init__(
        self,
        bus: Bus,
        bridges: Bridges,
        peers: dict[str, PeerLink],
        *,
        resume_window: float,
        expected: Callable[[], Iterable[str]],
        stopping: Callable[[], bool],
    ) -> None:
        self._bus = bus
        self._bridges = bridges
        self._peers = peers  # the one chosen link per remote node (the router's)
        self._expected = expected  # patterns of apps a restarted node waits for (ResumeGate)
        self._stopping = stopping
        self._table = InterestTable()
        # peers whose link dropped: their interests, still advertised to leaves for a while
        self._absent = AbsentPeers(resume_window, self.local_changed)
        self._pending = False

    # -- changes ---------------------------------------------------------------------------------

    def local_changed(self) -> None:
        """What this node itself reaches changed (its pods, its bridges): re-advertise soon."""
        self._table.local_changed()
        self.soon()

    def opened(self, peer: PeerLink) -> None:
        """``peer`` opened: it hears what it may send now, before anything else."""
        self._table.add(peer)
        self._table.flush(self._local_interests)

    def heard(self, peer: PeerLink) -> None:
        """``peer`` said what it wants: it is back (no gap for leaves), others may reach more."""
        self._absent.forget(peer.uuid)
        self._table.update(peer)
        self.soon()

    def update(self, peer: PeerLink) -> None:
        """``peer``'s contribution may have changed (its identity's rules did, say)."""
        self._table.update(peer)

    def neighbours_changed(self, peer: PeerLink) -> None:
        """``peer``'s neighbours changed: relaying for it may have changed."""
        self._table.neighbours_changed(peer)
        self.soon()

    def remove(self, peer: PeerLink) -> None:
        """``peer`` no longer contributes (replaced, or moved to a new link)."""
        self._table.remove(peer)

    def lost(self, peer: PeerLink, *, keep: bool) -> None:
        """``peer``'s link ended; with ``keep`` its interests stay advertised to leaves a while."""
        if keep:
            self._absent.keep(peer)
        self._table.remove(peer)
        self.soon()

    # -- re-advertising --------------------------------------------------------------------------

    def soon(self) -> None:
        """Re-advertise to the links whose advertisement changed, once per loop turn."""
        if self._pending or self._stopping():
            return
        self._pending = True
        asyncio.get_running_loop().call_soon(self._readvertise)

    def _readvertise(self) -> None:
        self._pending = False
        self._table.absent_changed(self._absent.patterns())
        self._table.expected_changed(self._expected())
        self._table.flush(self._local_interests)
        self._bridges.tell(
            {uuid: link.interests for uuid, link in self._peers.items() if link.is_open}
        )

    def _local_interests(self) -> tuple[tuple[str, ...], tuple[tuple[str, str, int], ...]]:
        """What this node itself reaches: its pods, and what its bridges bring from other meshes."""
        patterns = set(self._bus.interests())
        patterns.update(self._bridges.advertised())
        return tuple(sorted(patterns)), self._bus.group_interests()

    # -- queries, end ----------------------------------------------------------------------------

    def advertisement(
        self, to: PeerLink
    ) -> tuple[tuple[str, ...], tuple[tuple[str, str, int], ...]]:
        """What ``to`` is told now, computed from the kept counts."""
        return self._table.advertisement(to)

    def statistics(self) -> InterestStatistics:
        """Advertisements computed and INTERESTS frames sent since start."""
        return self._table.statistics()

    def close(self) -> None:
        """The node stopped: absent peers' windows end now."""
        self._absent.close()
