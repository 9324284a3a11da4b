"""Nodes advertise all their endpoints and are dialled over the fastest transport both speak."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import Callable

from discovery.static import StaticDiscovery
from gravpy.backoff import BackoffPolicy
from gravpy.daemon.advertise import AdvertisedTransport
from gravpy.daemon.parsers import Address
from gravpy.mesh.dialer import fastest
from gravpy.plugins import DiscoveryContext, PeerReport
from gravpy.testing import capture_logs
from tests._bus_helpers import until
from transports.http import HttpTransport
from transports.tcp import TcpTransport
from transports.websocket import WebSocketTransport

from .conftest import FAST, NodeFactory, linked_to


def test_fastest_prefers_tcp_then_websocket_then_http() -> None:
    """The rank is tcp, then ws, then http; an unknown scheme comes last."""
    assert fastest(["http://h:1/p", "ws://h:2/p", "tcp://h:3"]) == "tcp://h:3"
    assert fastest(["https://h:1/p", "wss://h:2/p"]) == "wss://h:2/p"
    assert fastest(["x://h:1", "http://h:2/p"]) == "http://h:2/p"


def dual() -> list[HttpTransport | WebSocketTransport]:
    """HTTP listed first, so the order of transports is not what picks the fast one."""
    return [HttpTransport(host="127.0.0.1", port=0), WebSocketTransport(host="127.0.0.1", port=0)]


async def test_a_gossiped_node_is_dialled_over_its_fastest_endpoint(node: NodeFactory) -> None:
    """C learns of A only through B's gossip (which carries all of A's endpoints) and links to
    A over WebSocket, although B reached A over HTTP (its link then moves to WebSocket too)."""
    a = await node(transport=dual())
    http_a = next(ep for ep in a.endpoints() if ep.startswith("http://"))
    with capture_logs(logger="gravpy.mesh.hub") as logs:
        b = await node(transport=dual(), discovery=[StaticDiscovery([http_a])])
        await b.wait_for(linked_to(a), timeout=10)
    first = [e for e in logs if e.get("event") == "peer_connected" and e["node"] == b.node_uuid]
    assert first[0]["transport"] == "http"
    ws_b = next(ep for ep in b.endpoints() if ep.startswith("ws://"))
    c = await node(transport=dual(), discovery=[StaticDiscovery([ws_b])])
    await c.wait_for(linked_to(a, b), timeout=10)
    link_ca = next(p for p in c.peers() if p.uuid == a.node_uuid)
    assert link_ca.transport == "websocket"
    assert link_ca.endpoint.startswith("ws://")


async def test_a_gossiped_node_is_dialled_at_a_slower_endpoint_when_its_fastest_is_unreachable(
    node: NodeFactory,
) -> None:
    """A states a WebSocket endpoint nobody listens on first (as a firewalled port would be);
    C, told of A only by B's gossip, gives that endpoint up after a few failed dials and links
    to A at the next one."""
    with socket.socket() as closed:  # a port that refuses: bound once, closed again
        closed.bind(("127.0.0.1", 0))
        dead_port = int(closed.getsockname()[1])
    quick = dataclasses.replace(FAST, backoff=BackoffPolicy(initial=0.02, maximum=0.1))
    inner = WebSocketTransport(host="127.0.0.1", port=0)
    deaf = dataclasses.replace(FAST, gossip_targets=0)  # A never dials C itself
    a = await node(
        transport=AdvertisedTransport(inner, Address("127.0.0.1", dead_port)), hub_config=deaf
    )
    dead, live = a.endpoints()
    assert dead.startswith(f"ws://127.0.0.1:{dead_port}/")
    b = await node(discovery=[StaticDiscovery([live])], hub_config=quick)
    await b.wait_for(linked_to(a), timeout=10)
    c = await node(discovery=[StaticDiscovery(b.endpoints())], hub_config=quick)
    # only C can make this link (A dials nothing it hears), and only at ``live``
    await c.wait_for(linked_to(a, b), timeout=20)


class Reported:
    """A discovery plugin that reports the given endpoints of one node, one per loop turn, in
    order (as mDNS resolves a node's services one by one), then runs until cancelled."""

    name = "reported"

    def __init__(self, node_uuid: str, endpoints: list[str]) -> None:
        self._node_uuid = node_uuid
        self._endpoints = endpoints

    async def run(self, ctx: DiscoveryContext, report: Callable[[PeerReport], None]) -> None:
        for endpoint in self._endpoints:
            report(PeerReport(endpoint, self._node_uuid, self.name))
            await asyncio.sleep(0)
        await asyncio.Event().wait()


def ws_and_tcp() -> list[TcpTransport | WebSocketTransport]:
    return [WebSocketTransport(host="127.0.0.1", port=0), TcpTransport(host="127.0.0.1", port=0)]


async def test_a_discovered_node_is_dialled_over_tcp_though_its_websocket_was_reported_first(
    node: NodeFactory,
) -> None:
    """Discovery reports A's WebSocket endpoint, then its TCP one: B links over TCP, and never
    dials the WebSocket endpoint while the TCP one answers."""
    a = await node(transport=ws_and_tcp())
    ws_a = next(ep for ep in a.endpoints() if ep.startswith("ws://"))
    tcp_a = next(ep for ep in a.endpoints() if ep.startswith("tcp://"))
    with capture_logs(logger="gravpy.mesh") as logs:
        b = await node(transport=ws_and_tcp(), discovery=[Reported(a.node_uuid, [ws_a, tcp_a])])
        await b.wait_for(linked_to(a), timeout=10)
        await a.wait_for(linked_to(b), timeout=10)  # the acceptor opens half a round trip later
    assert [(p.transport, p.state) for p in b.peers()] == [("tcp", "open")]
    assert [(p.transport, p.state) for p in a.peers()] == [("tcp", "open")]
    assert not [e for e in logs if e.get("reason") == "duplicate"]


async def test_a_discovered_node_is_dialled_over_websocket_when_its_tcp_endpoint_fails(
    node: NodeFactory,
) -> None:
    """Discovery reports a TCP endpoint of A where nothing listens (A advertises it, as behind
    a firewall that passes only WebSocket), and A's WebSocket endpoint: after the TCP dial
    fails, B links over WebSocket, and stays there when moving the link to TCP fails too."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead_port = int(closed.getsockname()[1])
    tcp = AdvertisedTransport(
        TcpTransport(host="127.0.0.1", port=0), Address("127.0.0.1", dead_port)
    )
    a = await node(transport=[WebSocketTransport(host="127.0.0.1", port=0), tcp])
    ws_a = next(ep for ep in a.endpoints() if ep.startswith("ws://"))
    dead_a = f"tcp://127.0.0.1:{dead_port}"
    assert dead_a in a.endpoints()
    b = await node(transport=ws_and_tcp(), discovery=[Reported(a.node_uuid, [ws_a, dead_a])])
    await b.wait_for(linked_to(a), timeout=10)
    assert b.hub is not None
    moves = b.hub.upgrades
    await until(lambda: moves.statistics().failed == 1)  # its HELLO names the dead endpoint
    assert [(p.transport, p.state) for p in b.peers()] == [("websocket", "open")]
