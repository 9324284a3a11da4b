"""The mover: dials the faster endpoint a live link moves to, for as long as the move makes sense.

Theory of operation
-------------------
``gravpy.mesh.upgrade`` says which links move (``upgrade_endpoint``: only the side that dialled,
only between peers, only to TCP) and keeps the moves in progress (``Upgrades``); the ``Mover``
is the I/O half. When a link opens, the hub asks the mover to ``consider`` it; if it should move,
the mover dials the target in a task the hub owns. A dial that fails is counted
(``Upgrades.failed``) and, if the transport failed (not a usage error), retried with the dialler's
backoff for as long as the old link is still the live route to its node and the node is not
stopping. Once dialled, the new link is made to present the old link's upgrade token
(``MovePort.new_link``), registered as a move (``Upgrades.begin``) and run by the ``Roster``
like any other link; the hub switches the route when it opens (make before break). If the old
link ended or was replaced while the dial ran, the new transport link is closed unused.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Sequence
from typing import Any, Protocol

from gravpy.errors import TransportError, UsageError
from gravpy.mesh.config import HubConfig
from gravpy.mesh.dialer import transport_for
from gravpy.mesh.peer_link import PeerLink
from gravpy.mesh.roster import Roster
from gravpy.mesh.upgrade import Upgrades, upgrade_endpoint
from gravpy.plugins import Link, Transport
from gravpy.proto import REASON_DUPLICATE, REASON_SHUTDOWN

__all__ = ["MovePort", "Mover"]


class MovePort(Protocol):
    """What the mover asks of the hub."""

    @property
    def stopping(self) -> bool: ...
    def link_for(self, uuid: str) -> PeerLink | None: ...
    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]: ...
    def new_link(self, link: Link, moving: PeerLink) -> PeerLink: ...


class Mover:
    """Moves live links to a faster transport (see the module)."""

    def __init__(
        self,
        port: MovePort,
        transports: Sequence[Transport],
        config: HubConfig,
        upgrades: Upgrades,
        roster: Roster,
        log: Any,
    ) -> None:
        self._port = port
        self._transports = transports
        self._config = config
        self._upgrades = upgrades
        self._roster = roster
        self._log = log

    def consider(self, peer: PeerLink, local_role: str) -> None:
        """``peer`` just opened: move it if it should move (and the node is not stopping)."""
        target = upgrade_endpoint(peer, local_role, self._transports)
        if target and not self._port.stopping:
            self._port.spawn(self._move(peer, target), f"move-{peer.uuid}")

    async def _move(self, old: PeerLink, endpoint: str) -> None:
        """Dial ``endpoint``, faster than ``old``'s transport, to move ``old`` there; while the
        dial fails, retry with the dialler's backoff for as long as ``old`` is the route."""
        link = await self._dial(old, endpoint)
        if link is None:
            return
        stopping = self._port.stopping
        if old.ended.is_set() or self._port.link_for(old.uuid) is not old or stopping:
            await link.close(REASON_SHUTDOWN if stopping else REASON_DUPLICATE)
            return
        new = self._port.new_link(link, old)
        self._upgrades.begin(old, new)
        await self._roster.run(new)

    async def _dial(self, old: PeerLink, endpoint: str) -> Link | None:
        """The transport link to ``endpoint``, or None once retrying no longer makes sense."""
        backoff = self._config.backoff.new_backoff()
        while True:
            try:
                return await transport_for(self._transports, endpoint).dial(
                    endpoint, timeout=self._config.dial_timeout
                )
            except (TransportError, UsageError) as exc:
                self._upgrades.failed += 1
                delay = backoff.next_delay()
                retry = isinstance(exc, TransportError)
                self._log.info(
                    "move_failed",
                    peer=old.uuid,
                    endpoint=endpoint,
                    reason=str(exc),
                    retry_in=round(delay, 3) if retry else None,
                )
                if not retry or not await self._still_route(old, delay):
                    return None

    async def _still_route(self, old: PeerLink, delay: float) -> bool:
        """Wait ``delay`` seconds; True if ``old`` is still the live route to its node then."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await old.ended.wait()
        return not (
            old.ended.is_set() or self._port.stopping or self._port.link_for(old.uuid) is not old
        )
