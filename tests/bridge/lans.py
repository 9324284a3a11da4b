"""Two "LANs" of real gravd processes on 127.0.0.1, bridged through a real NATS cluster.

Each LAN is its own mesh (``lan1``, ``lan2``) of two gravd linked by a static peer: the first
(``bridge``) runs ``--nats`` against its LAN's server, the second (``edge``) has no bridge and is
where the test's apps attach (``gravpy.connect``), so every message crosses a LAN link, the NATS
cluster's route, and a LAN link again. The only waits are on ``/v1/node`` conditions.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from gravpy.filter import Pattern
from gravpy.testing.gravd import Gravd, running_gravd


@dataclass
class Lan:
    """One mesh: its bridging gravd and its edge gravd."""

    mesh: str
    bridge: Gravd
    edge: Gravd


def bridge_of(node: dict[str, Any]) -> dict[str, Any]:
    """The first bridge in a ``/v1/node`` document."""
    bridges = node["bridges"]
    assert bridges, node
    first: dict[str, Any] = bridges[0]
    return first


def exporting(msg_type: str) -> Callable[[dict[str, Any]], bool]:
    """A ``wait_http`` check: the node's bridge exports and a remote mesh wants ``msg_type``."""

    def check(node: dict[str, Any]) -> bool:
        b = bridge_of(node)
        wanted = any(Pattern(p).matches(msg_type) for p in b["remote_wants"])
        return bool(b["state"] == "connected" and b["exporter"] and wanted)

    return check


def subscribed(msg_type: str) -> Callable[[dict[str, Any]], bool]:
    """A ``wait_http`` check: the bridge's mesh wants ``msg_type`` and the bridge is its mesh's
    active one (it subscribed on NATS)."""

    def check(node: dict[str, Any]) -> bool:
        b = bridge_of(node)
        return (
            b["state"] == "connected"
            and b["exporter"]
            and any(Pattern(p).matches(msg_type) for p in b["mesh_wants"])
        )

    return check


async def bridging_gravd(stack: AsyncExitStack, mesh: str, nats_url: str, *args: str) -> Gravd:
    return await stack.enter_async_context(
        running_gravd("--mesh", mesh, "--nats", nats_url, "--log-level", "info", *args)
    )


@asynccontextmanager
async def two_lans(urls: tuple[str, str], *args: str) -> AsyncIterator[tuple[Lan, Lan]]:
    """``lan1`` bridged to ``urls[0]``, ``lan2`` to ``urls[1]``; every gravd stopped at the end."""
    async with AsyncExitStack() as stack:
        lans = []
        for mesh, url in zip(("lan1", "lan2"), urls, strict=True):
            bridge = await bridging_gravd(stack, mesh, url, *args)
            edge = await stack.enter_async_context(
                running_gravd("--mesh", mesh, "--peer", bridge.endpoint)
            )
            lans.append(Lan(mesh, bridge, edge))
        for lan in lans:
            await lan.edge.wait_peers(1)
            await lan.bridge.wait_peers(1)
        yield lans[0], lans[1]
