"""The roster: every link of a node from accept or dial to its end, and what ended links carried.

Theory of operation
-------------------
The hub hands each link it runs to the ``Roster`` (``run``), dialled or accepted; the roster
holds it in ``links`` until the link reports its end (``ended``) and counts it as *running*
until its transport closed. An accepted link takes one of ``max_connections`` slots for as long
as it runs; past the limit it is closed at once and counted as refused (``accept``). Links that
ended leave their counts behind (``LinkTotals``), so the hub's totals since start only ever
grow; so do the links opened and the protocol violations, by reason.

A stopping node leaves its links through the roster (``leave``): it asks every open link's
remote to stop sending and waits for the acknowledgements, then ends every link and waits for
their transports to close, each wait bounded (``gravpy.mesh.drain``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gravpy.mesh.config import LinkTotals
from gravpy.mesh.drain import wait_closed, wait_withdrawn
from gravpy.mesh.peer_link import PeerInfo, PeerLink
from gravpy.plugins import Link
from gravpy.proto import REASON_SHUTDOWN

__all__ = ["Roster"]


class Roster:
    """The links a node runs and its totals of links since start (read, never set, outside)."""

    def __init__(self, max_connections: int) -> None:
        self._max_connections = max_connections
        self.links: set[PeerLink] = set()  # every link that has not ended, open or not
        self._running: set[PeerLink] = set()  # every link whose transport is not closed yet
        self.opened = 0  # links whose handshake completed
        self.closed = LinkTotals()  # what ended links carried, by role
        self.refused = 0  # accepted links closed at once: max_connections were running
        self.violations: dict[str, int] = {}  # links closed for a protocol violation, by reason
        self._accepted = 0  # accepted links running now

    async def accept(self, link: Link, peer_link: Callable[[], PeerLink]) -> None:
        """Run the accepted ``link`` (made a ``PeerLink`` by ``peer_link``) to its end, or close
        it at once if ``max_connections`` accepted links are running."""
        if self._accepted >= self._max_connections:
            self.refused += 1
            await link.close(f"too many connections ({self._max_connections})")
            return
        self._accepted += 1
        try:
            await self.run(peer_link())
        finally:
            self._accepted -= 1

    async def run(self, peer: PeerLink) -> None:
        """Run ``peer`` until its transport closed."""
        self.links.add(peer)
        self._running.add(peer)
        try:
            await peer.run()
        finally:
            self._running.discard(peer)
            peer.finish()  # already done by the link, unless it was cut off first

    def link_opened(self) -> None:
        """A link's handshake completed."""
        self.opened += 1

    def violation(self, reason: str) -> None:
        """A link was closed for a protocol violation."""
        self.violations[reason] = self.violations.get(reason, 0) + 1

    def ended(self, peer: PeerLink) -> None:
        """``peer`` is over: it leaves ``links``, what it carried stays in ``closed``."""
        self.links.discard(peer)
        self.closed.add(peer)  # what it carried, without a whole PeerInfo snapshot

    def infos(self) -> list[PeerInfo]:
        """A snapshot of every link that has not ended."""
        return [link.info() for link in self.links]

    async def leave(self, drain_timeout: float, log: Any) -> None:
        """Withdraw from every open link's remote, wait for their acks, end every link and wait
        for the transports to close (each wait bounded by ``drain_timeout``)."""
        open_links = [link for link in self.links if link.is_open]
        for link in open_links:
            link.withdraw()
        if open_links and drain_timeout > 0:
            await wait_withdrawn(open_links, drain_timeout, log)
        for link in list(self.links):
            link.end(REASON_SHUTDOWN)
        await wait_closed(list(self._running), drain_timeout + 1.0)
