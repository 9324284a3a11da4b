"""Two LANs in network namespaces, each a mesh of gravd, bridged through a two-server NATS cluster
whose servers sit one on each site (tests/bridge/netns_sites.py). Skipped where namespaces cannot
be made (not root, no iproute2); tests/bridge/test_lans.py runs the same on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import pytest

from gravpy.filter import Pattern
from gravpy.testing.gravd import Process, wants
from gravpy.testing.lan.bed import Host, LanBed
from tests.bridge.lans import bridge_of, exporting
from tests.bridge.netns_sites import Agent, NsProcess, Site, two_sites

pytestmark = pytest.mark.timeout(120)
N = 10_000


@dataclass(eq=False)
class Lan:
    """One site's mesh: a bridging gravd, an edge gravd and the agent attached to the edge."""

    site: Site
    mesh: str
    bridge: Host
    edge: Host
    agent: Agent
    endpoint: str  # the bridging gravd's


@dataclass
class Bed:
    procs: NsProcess
    lan1: Lan
    lan2: Lan
    servers: list[Process]


@pytest.fixture
async def bed() -> AsyncIterator[Bed]:
    problem = LanBed.available()
    if problem is not None:
        pytest.skip(f"network namespaces: {problem}")
    async with two_sites(3) as (site1, site2), AsyncExitStack() as stack:
        procs = NsProcess(stack)
        n1 = await procs.nats_server(site1, site2, "n1")
        n2 = await procs.nats_server(site2, site1, "n2")
        for server in (n1, n2):
            await server.wait_line(lambda line: "Route connection created" in line)
        lans = []
        for mesh, site in (("lan1", site1), ("lan2", site2)):
            bridge, edge = site.bed.hosts[0], site.bed.hosts[1]
            endpoint = await procs.gravd(bridge, mesh, "--nats", site.nats_url)
            edge_endpoint = await procs.gravd(edge, mesh, "--peer", endpoint)
            agent = await procs.agent(edge)
            await agent.call("attach", endpoint=edge_endpoint)
            lans.append(Lan(site, mesh, bridge, edge, agent, endpoint))
        yield Bed(procs, lans[0], lans[1], [n1, n2])


async def test_a_stream_crosses_between_two_sites_once_with_two_bridges(bed: Bed) -> None:
    """10,000 messages from LAN 1 reach a subscriber on LAN 2 exactly once and in order, and a
    second bridging gravd on LAN 1 adds no duplicate."""
    lan1, lan2 = bed.lan1, bed.lan2
    sink = lan2.agent.send("sink")
    await lan2.agent.answer(sink)
    await lan1.agent.wait_node(lan1.bridge, exporting("stream.n"))
    await lan1.agent.wait_node(lan1.edge, lambda n: wants(n, "stream.n"))
    await lan1.agent.call("stream", start=0, stop=N, end="first")
    first = await guarded(bed, lan2.agent.answer(sink, lambda a: a.get("end") == "first"))
    assert first["got"] == exactly(N), "lost, duplicated or reordered"

    second = lan1.site.bed.hosts[2]
    await bed.procs.gravd(second, "lan1", "--nats", lan1.site.nats_url, "--peer", lan1.endpoint)
    await lan1.agent.wait_node(second, lambda n: "stream.*" in bridge_of(n)["remote_wants"])
    await lan1.agent.wait_node(lan1.edge, lambda n: open_peers(n) == 2)
    await lan1.agent.call("stream", start=N, stop=N + 2000, end="second")
    again = await guarded(bed, lan2.agent.answer(sink, lambda a: a.get("end") == "second"))
    assert again["got"] == exactly(N + 2000), "the second bridge added a copy"
    roles = [bridge_of(await lan1.agent.node(h))["exporter"] for h in (lan1.bridge, second)]
    assert sorted(roles) == [False, True]


async def test_requests_cross_between_two_sites_both_ways(bed: Bed) -> None:
    """Requests cross both ways, each answer to its asker only; a type nobody serves anywhere is
    NoResponders."""
    await requests_cross(bed, {bed.lan1: (bed.lan1.bridge,), bed.lan2: (bed.lan2.bridge,)})


async def test_requests_cross_both_ways_with_a_standby_bridge_on_each_site(bed: Bed) -> None:
    """With a second (standby) bridging gravd on each site, requests still cross both ways to
    their asker only: a standby on the asking side and on the answering side adds no loss."""
    bridges = {}
    for lan in (bed.lan1, bed.lan2):
        standby = lan.site.bed.hosts[2]
        await bed.procs.gravd(
            standby, lan.mesh, "--nats", lan.site.nats_url, "--peer", lan.endpoint
        )
        await lan.agent.wait_node(standby, lambda n: bridge_of(n)["ready"])
        await lan.agent.wait_node(lan.edge, lambda n: open_peers(n) == 2)
        bridges[lan] = (lan.bridge, standby)
    await requests_cross(bed, bridges)
    for lan, hosts in bridges.items():
        roles = [bridge_of(await lan.agent.node(h))["exporter"] for h in hosts]
        assert sorted(roles) == [False, True], (lan.mesh, roles)


async def requests_cross(bed: Bed, bridges: dict[Lan, tuple[Host, ...]]) -> None:
    """Each site serves ``svc.<site>``; each asks the other's 20 times, once every bridge of
    the asking site heard the interest; then a type nobody serves is NoResponders."""
    lan1, lan2 = bed.lan1, bed.lan2
    for lan in (lan1, lan2):
        await lan.agent.wait_node(lan.bridge, lambda n: bridge_of(n)["ready"])
    for lan, name in ((lan1, "1:"), (lan2, "2:")):
        await lan.agent.call("serve", type=f"svc.{name[0]}", prefix=name)
    for asker, kind in ((lan1, "2"), (lan2, "1")):
        for host in bridges[asker]:
            await asker.agent.wait_node(host, lambda n, k=kind: remote_wants(n, f"svc.{k}"))
        await asker.agent.wait_node(asker.edge, lambda n, k=kind: wants(n, f"svc.{k}"))
        answer = await asker.agent.call("ask", type=f"svc.{kind}", n=20, wait=True)
        if "error" in answer:  # say what each bridge saw
            for lan, hosts in bridges.items():
                for host in hosts:
                    answer[host.address] = bridge_of(await lan.agent.node(host))
        assert answer["answers"] == [f"{kind}:{i}" for i in range(20)], answer
    nobody = await lan1.agent.call("ask", type="svc.nobody", n=1)
    assert nobody["error"] == "NoResponders"


def open_peers(node: dict[str, Any]) -> int:
    return sum(p["state"] == "open" for p in node["peers"])


def exactly(n: int) -> dict[str, Any]:
    """The agent's summary of receiving 0 .. n-1, each once, in order."""
    return {"count": n, "unique": n, "ordered": True, "first": 0, "last": n - 1, "gaps": []}


async def test_killing_one_nats_server_mid_stream_loses_only_what_is_counted(bed: Bed) -> None:
    """When LAN 1's NATS server dies mid-stream its bridge moves to the other site's server:
    nothing arrives twice or out of order, everything sent after the move arrives, and each
    message that did not is counted (by LAN 1's bridge, or as a gap by LAN 2's)."""
    lan1, lan2 = bed.lan1, bed.lan2
    sink = lan2.agent.send("sink")
    await lan2.agent.answer(sink)
    await lan1.agent.wait_node(lan1.bridge, exporting("stream.n"))
    await lan1.agent.wait_node(lan1.edge, lambda n: wants(n, "stream.n"))
    stream = lan1.agent.send("stream", start=0, stop=2000, end="before", pause_at=1000)
    await lan1.agent.answer(stream, lambda a: "paused" in a)
    lan1.agent.send("resume")
    await bed.servers[0].close()  # while messages are on their way
    await guarded(bed, lan1.agent.answer(stream, lambda a: "streamed" in a))
    moved = lambda n: bridge_of(n)["state"] == "connected" and bridge_of(n)["connects"] >= 2  # noqa: E731
    await lan1.agent.wait_node(lan1.bridge, moved)
    await guarded(bed, lan1.agent.call("stream", start=2000, stop=4000, end="after"))
    got = (await guarded(bed, lan2.agent.answer(sink, lambda a: a.get("end") == "after")))["got"]
    assert got["unique"] == got["count"], got
    assert got["ordered"], got
    assert got["last"] == 3999, got
    assert all(last < 2000 for _, last in got["gaps"]), got
    ends = sum('"end": "before"' in line for line in lan2.agent.process.stdout)
    missing = 4000 - got["count"] + 1 - ends
    sender = bridge_of(await lan1.agent.node(lan1.bridge))
    exporter, importer = sender["lost"], bridge_of(await lan1.agent.node(lan2.bridge))["lost"]
    assert missing == sum(exporter.values()) + importer.get("gap", 0), (got, exporter, importer)
    assert sender["errors"] == 0, sender  # it moved to the other server: nothing broke


def remote_wants(node: dict[str, Any], msg_type: str) -> bool:
    """True if the node's bridge heard another mesh ask for ``msg_type``."""
    return any(Pattern(p).matches(msg_type) for p in bridge_of(node)["remote_wants"])


async def guarded(bed: Bed, wait: Awaitable[Any]) -> Any:
    """``wait``, or after 60 s an AssertionError that says what each bridge saw."""
    try:
        async with asyncio.timeout(60):  # a hang guard that reports, inside pytest-timeout's
            return await wait
    except TimeoutError:
        seen = {}
        for lan in (bed.lan1, bed.lan2):
            for host in lan.site.bed.hosts[:-1]:
                with contextlib.suppress(Exception):  # (a host without gravd has no monitor)
                    async with asyncio.timeout(5):
                        seen[host.address] = bridge_of(await lan.agent.node(host))
        raise AssertionError(f"no answer in 60 s; bridges: {seen}") from None
