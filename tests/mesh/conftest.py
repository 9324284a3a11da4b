"""Fixtures for mesh tests: real nodes with the WebSocket transport on 127.0.0.1, port 0."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest

from gravpy import Grav
from gravpy.mesh import HubConfig, PeerInfo
from gravpy.proto import ProtocolConfig
from transports.websocket import WebSocketTransport

FAST = HubConfig(
    protocol=ProtocolConfig(handshake_timeout=2.0, ping_interval=0.2, dead_after=1.0),
    drain_timeout=1.0,
)

NodeFactory = Callable[..., Awaitable[Grav]]


@pytest.fixture
async def node() -> AsyncIterator[NodeFactory]:
    """Start nodes on 127.0.0.1 (port 0); every node is stopped when the test ends."""
    async with AsyncExitStack() as stack:

        async def make(**options: Any) -> Grav:
            options.setdefault("hub_config", FAST)
            if "transport" not in options:
                options["transport"] = WebSocketTransport(host="127.0.0.1", port=0)
            return await stack.enter_async_context(Grav(**options))

        yield make


def linked_to(*nodes: Grav, interest: str | None = None) -> Callable[[list[PeerInfo]], bool]:
    """A ``wait_for`` predicate: open links to all ``nodes`` (advertising ``interest``, if given)."""
    wanted = {n.node_uuid for n in nodes}

    def check(peers: list[PeerInfo]) -> bool:
        ready = {
            p.uuid
            for p in peers
            if p.state == "open" and (interest is None or interest in p.interests)
        }
        return wanted <= ready

    return check
