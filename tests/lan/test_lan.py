"""Several hosts on one machine: one gravd per network namespace, meshed by mDNS alone.

The namespaces are joined by a bridge in a namespace of their own (tests/lan/bed.py); traffic
never leaves them. Skipped, with the reason, where namespaces cannot be made (not root, no ip).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass

import pytest

from tests.daemon.harness import ROOT, Process, clean_env

from .bed import Host, LanBed

_unavailable = LanBed.available()
pytestmark = pytest.mark.skipif(_unavailable is not None, reason=str(_unavailable))


@dataclass
class Node:
    host: Host
    gravd: Process
    agent: Process

    def peers(self) -> set[str]:
        """The peers gravd reports linked now, from its peer_connected/peer_disconnected log."""
        linked: set[str] = set()
        for event in self.gravd.events():
            if event.get("event") == "peer_connected" and event.get("role") == "peer":
                linked.add(event["peer"])
            elif event.get("event") == "peer_disconnected":
                linked.discard(event.get("peer", ""))
        return linked

    async def wait_peers(self, n: int) -> set[str]:
        await self.gravd.wait_line(lambda _: len(self.peers()) == n)
        return self.peers()

    def interested(self, pattern: str) -> set[str]:
        """Linked peers whose latest interests (gravd's debug log) include ``pattern``."""
        latest: dict[str, list[str]] = {}
        for event in self.gravd.events():
            if event.get("event") == "peer_interests":
                latest[event["peer"]] = event["patterns"]
        return {peer for peer in self.peers() if pattern in latest.get(peer, [])}

    async def wait_interested(self, pattern: str, n: int) -> None:
        """Until ``n`` linked peers say they want ``pattern`` (no event, no message sent early)."""
        await self.gravd.wait_line(lambda _: len(self.interested(pattern)) >= n)

    def got(self) -> list[str]:
        return [json.loads(line)["got"] for line in self.agent.stdout if '"got"' in line]

    async def wait_got(self, data: str, times: int = 1) -> None:
        await self.agent.wait_line(lambda _: self.got().count(data) >= times, stream="stdout")

    def publish(self, data: str) -> None:
        assert self.agent.proc.stdin is not None
        self.agent.proc.stdin.write(f"pub {data}\n".encode())


def gravd_argv(host: Host, mesh: str) -> list[str]:
    return host.exec_argv(
        [
            sys.executable, "-m", "gravpy.daemon.main",
            "--listen", f"{host.address}:8080",
            "--discovery", "mdns",
            "--mdns-interface", host.address,
            "--monitor", "127.0.0.1:8222",
            "--mesh", mesh,
            "--log-format", "json",
            "--log-level", "debug",
        ]
    )  # fmt: skip


@pytest.fixture
async def lan() -> AsyncIterator[tuple[LanBed, AsyncExitStack]]:
    with LanBed(5) as bed:
        async with AsyncExitStack() as stack:
            yield bed, stack


async def start_node(stack: AsyncExitStack, host: Host, mesh: str = "lab") -> Node:
    gravd = await Process.start(gravd_argv(host, mesh), env=clean_env())
    stack.push_async_callback(gravd.close)
    await gravd.wait_event("listening")
    url = f"ws://{host.address}:8080/meta/message"
    agent_argv = host.exec_argv([sys.executable, "-m", "tests.lan.agent", url])
    proc = await asyncio.create_subprocess_exec(
        *agent_argv,
        env=clean_env(),
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,  # kept open: the test sends "pub" lines
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    agent = Process(proc, "agent")
    stack.push_async_callback(agent.close)
    await agent.wait_line(lambda line: '"ready"' in line, stream="stdout")
    return Node(host, gravd, agent)


async def test_five_nodes_mesh_by_mdns_and_deliver_exactly_once(
    lan: tuple[LanBed, AsyncExitStack],
) -> None:
    """5 gravd with only mDNS form a full mesh; a message from each reaches every other once."""
    bed, stack = lan
    nodes = await asyncio.gather(*(start_node(stack, host) for host in bed.hosts))
    for node in nodes:
        assert len(await node.wait_peers(4)) == 4
    for node in nodes:
        await node.wait_interested("lan.>", 4)
    for node in nodes:
        node.publish(f"from-{node.host.index}")
    sent = sorted(f"from-{n.host.index}" for n in nodes)
    for receiver in nodes:  # the agent's listening pod also hears its own sending pod
        for data in sent:
            await receiver.wait_got(data)
    for receiver in nodes:
        assert sorted(receiver.got()) == sent  # exactly once each
