"""Drain: how a stopping node leaves its links, so what it already accepted is not lost.

Theory of operation
-------------------
A node that stops first asks every open link's remote to stop sending (WITHDRAW) and waits, up to
``drain_timeout``, for each to acknowledge (or for the link to end): after the acknowledgement
nothing more is on its way to us. Then every link is ended: its writer sends what is still queued
for the remote, then CLOSE, and its transport closes; the node waits for those closes too
(``drain_timeout`` plus a second), so a queue is written out rather than dropped. Whatever a link
still holds when it is cut off after that is counted as dropped by the link itself.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gravpy.mesh.peer_link import PeerLink

__all__ = ["wait_closed", "wait_withdrawn"]


async def wait_withdrawn(links: list[PeerLink], timeout: float, log: Any) -> None:
    """Wait (up to ``timeout``) until each remote acked our WITHDRAW or its link ended."""
    waits = [asyncio.ensure_future(link.acked.wait()) for link in links]
    ends = [asyncio.ensure_future(link.ended.wait()) for link in links]
    try:
        async with asyncio.timeout(timeout):
            for ack, end in zip(waits, ends, strict=True):
                await asyncio.wait([ack, end], return_when=asyncio.FIRST_COMPLETED)
    except TimeoutError:
        log.warning("withdraw_unacknowledged", timeout=timeout)
    finally:
        for fut in waits + ends:
            fut.cancel()
        await asyncio.gather(*waits, *ends, return_exceptions=True)


async def wait_closed(links: list[PeerLink], timeout: float) -> None:
    """Wait (up to ``timeout``) until each link's writer sent its queue and CLOSE and its
    transport closed."""
    if not links:
        return
    closes = [asyncio.ensure_future(link.closed.wait()) for link in links]
    _, pending = await asyncio.wait(closes, timeout=timeout)
    for fut in pending:
        fut.cancel()
    await asyncio.gather(*closes, return_exceptions=True)
