"""Where the LAN scenarios run: one gravd per network namespace, or every gravd on 127.0.0.1.

A scenario is written once against :class:`Backend` and runs on both:

- :class:`NetnsBackend`: one gravd per host of a :class:`~tests.lan.bed.LanBed`, listening on the
  host's 10.213.x address port 8080, mDNS on that address with the default service type. Cutting a
  node off takes its ``eth0`` down (the cable pulled).
- :class:`LoopbackBackend`: every gravd on 127.0.0.1 port 0 (the real port read back from its
  ``listening`` event), mDNS bound to 127.0.0.1 with a service type drawn per test, so no gravd
  elsewhere on the machine can join. A link cannot be cut on loopback: the node is frozen instead
  (SIGSTOP, then SIGCONT to bring it back). Its peers notice it the same way, by ping/pong
  going unanswered for ``dead_after``.

Each node has an app attached (``gravpy/testing/lan/agent.py``). :class:`Node` follows gravd's JSON log
(``peer_connected``, ``peer_disconnected``, ``peer_interests`` at debug) and the agent's output;
tests wait on those lines, never on a clock.
"""

from __future__ import annotations

import asyncio
import functools
import json
import secrets
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, Protocol

from gravpy.proto import ProtocolConfig
from gravpy.testing.gravd import GRAVD, ROOT, Process, clean_env, loopback_multicast_problem

from .bed import Host, LanBed

PATTERN = "lan.>"  # what every agent listens to (gravpy/testing/lan/agent.py)
NODE_PORT = 8080  # in a namespace every node has its own address, so a fixed port is fine


class Node:
    """One gravd and its attached agent, and what gravd's log says about its links."""

    def __init__(self, name: str, gravd: Process, listening: dict[str, Any]) -> None:
        self.name = name
        self.gravd = gravd
        self.uuid = str(listening["node"])
        self.endpoint = str(listening["endpoints"][0])
        self.agent: Process | None = None
        self._read = 0  # gravd stderr lines folded into the state below
        self._links: set[str] = set()
        self._interests: dict[str, list[str]] = {}  # per linked peer, since it (re)connected
        self.events: list[dict[str, Any]] = []  # every JSON log event, in order

    def _fold(self) -> None:
        lines = self.gravd.stderr
        for line in lines[self._read :]:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if not isinstance(event, dict):
                continue
            self.events.append(event)
            name, peer = event.get("event"), str(event.get("peer", ""))
            if name == "peer_connected" and event.get("role") == "peer":
                self._links.add(peer)
                self._interests[peer] = []  # a new link states its interests afresh
            elif name == "peer_disconnected":
                self._links.discard(peer)
                self._interests.pop(peer, None)
            elif name == "peer_interests" and peer in self._links:
                self._interests[peer] = list(event.get("patterns", []))
        self._read = len(lines)

    def peers(self) -> set[str]:
        """The peers linked now, by gravd's peer_connected/peer_disconnected log."""
        self._fold()
        return set(self._links)

    def interested(self, pattern: str = PATTERN) -> set[str]:
        """Linked peers whose interests, stated on their current link, include ``pattern``."""
        self._fold()
        return {peer for peer, patterns in self._interests.items() if pattern in patterns}

    def logged(self, event: str, **fields: object) -> list[dict[str, Any]]:
        """The log events named ``event`` with these field values, so far."""
        self._fold()
        return [
            e
            for e in self.events
            if e.get("event") == event and all(e.get(k) == v for k, v in fields.items())
        ]

    def declared_dead(self, peer: str) -> bool:
        """True once the link to ``peer`` went silent for ``dead_after`` (``link_closed`` LinkDead)."""
        return bool(self.logged("link_closed", peer=peer, kind="LinkDead"))

    def unlinked(self, peer: str) -> bool:
        return peer not in self.peers()

    def refused_for_mesh(self, peer: str) -> bool:
        """True once mDNS discovery skipped ``peer``'s record for belonging to another mesh."""
        return any(
            str(event.get("record", "")).startswith(peer + ".")
            for event in self.logged("mdns_record_skipped", reason="mesh")
        )

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Until ``condition`` holds, re-checked whenever gravd logs a line."""
        await self.gravd.wait_line(lambda _: condition())

    async def wait_linked(self, uuids: Iterable[str], pattern: str = PATTERN) -> None:
        """Until exactly ``uuids`` are linked and each has stated interest in ``pattern``."""
        want = set(uuids)
        await self.wait_until(lambda: self.peers() == want and self.interested(pattern) == want)

    # -- the agent -------------------------------------------------------------------------------

    def got(self) -> list[str]:
        """Every message data the agent received, in order."""
        assert self.agent is not None
        return [json.loads(line)["got"] for line in self.agent.stdout if '"got"' in line]

    async def wait_got(self, data: str, times: int = 1) -> None:
        assert self.agent is not None
        await self.agent.wait_line(lambda _: self.got().count(data) >= times, stream="stdout")

    def publish(self, data: str) -> None:
        """Have the agent send one ``lan.hello`` message carrying ``data``."""
        assert self.agent is not None
        assert self.agent.proc.stdin is not None
        self.agent.proc.stdin.write(f"pub {data}\n".encode())


class Backend(Protocol):
    """Starts nodes somewhere, and can cut one off the others and bring it back."""

    name: str
    nodes: list[Node]  # every node started, in order

    async def start(
        self, index: int, *, mesh: str = "lab", agent: bool = True, discovery: str = "mdns"
    ) -> Node:
        """Start gravd number ``index`` (and its agent) and return once both are ready."""
        ...

    def cut(self, node: Node) -> None:
        """Cut ``node`` off from the others (its peers must notice by ping/pong)."""
        ...

    def restore(self, node: Node) -> None:
        """Undo :meth:`cut`."""
        ...


LIVENESS = ProtocolConfig(ping_interval=0.5, dead_after=2.0)  # shorter than gravd's 2 s / 6 s


def gravd_flags(listen: str, mdns_interface: str, mesh: str, discovery: str) -> list[str]:
    """gravd's flags: JSON log at debug (peer_interests), no monitor, mDNS only on one address."""
    mdns = ["--mdns-interface", mdns_interface] if discovery == "mdns" else []
    return [
        "--listen", listen,
        "--discovery", discovery,
        *mdns,
        "--monitor", "off",
        "--mesh", mesh,
        "--log-format", "json",
        "--log-level", "debug",
        "--ping-interval", str(LIVENESS.ping_interval),
        "--dead-after", str(LIVENESS.dead_after),
    ]  # fmt: skip


async def _start_node(
    stack: AsyncExitStack,
    nodes: list[Node],
    name: str,
    gravd_argv: list[str],
    wrap: Callable[[list[str]], list[str]],
    agent: bool,
) -> Node:
    """Start gravd (``wrap`` puts a command where it must run), wait for ``listening``, attach."""
    # its own state dir: gravd's default one would share a replay file across every node
    state = stack.enter_context(tempfile.TemporaryDirectory(prefix=f"gravd-{name}-"))
    gravd = await Process.start(wrap(gravd_argv), env=clean_env({"XDG_STATE_HOME": state}))
    gravd.name = f"gravd-{name}"
    stack.push_async_callback(gravd.close)
    node = Node(name, gravd, await gravd.wait_event("listening"))
    nodes.append(node)
    if agent:
        argv = wrap([sys.executable, "-m", "gravpy.testing.lan.agent", node.endpoint])
        node.agent = await _start_agent(stack, name, argv)
        await node.agent.wait_line(lambda line: '"ready"' in line, stream="stdout")
    return node


async def _start_agent(stack: AsyncExitStack, name: str, argv: list[str]) -> Process:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        env=clean_env(),
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,  # kept open: the test sends "pub" lines
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    agent = Process(proc, f"agent-{name}")
    stack.push_async_callback(agent.close)
    return agent


class NetnsBackend:
    """One gravd per host of a LanBed; cut = the host's eth0 down."""

    name = "netns"

    def __init__(self, bed: LanBed, stack: AsyncExitStack) -> None:
        self.bed = bed
        self.stack = stack
        self.nodes: list[Node] = []
        self._hosts: dict[str, Host] = {}

    async def start(
        self, index: int, *, mesh: str = "lab", agent: bool = True, discovery: str = "mdns"
    ) -> Node:
        host = self.bed.hosts[index]
        listen = f"{host.address}:{NODE_PORT}"
        argv = [*GRAVD, *gravd_flags(listen, host.address, mesh, discovery)]
        node = await _start_node(self.stack, self.nodes, f"h{index}", argv, host.exec_argv, agent)
        self._hosts[node.uuid] = host
        return node

    def host(self, node: Node) -> Host:
        return self._hosts[node.uuid]

    def cut(self, node: Node) -> None:
        self._hosts[node.uuid].link_down()

    def restore(self, node: Node) -> None:
        self._hosts[node.uuid].link_up()


class LoopbackBackend:
    """Every gravd on 127.0.0.1 with a per-instance mDNS service type; cut = SIGSTOP."""

    name = "loopback"

    def __init__(self, stack: AsyncExitStack) -> None:
        self.stack = stack
        self.nodes: list[Node] = []
        self.service = f"_g{secrets.token_hex(4)}._tcp.local."  # no stray gravd can join

    async def start(
        self, index: int, *, mesh: str = "lab", agent: bool = True, discovery: str = "mdns"
    ) -> Node:
        argv = [*GRAVD, *gravd_flags("127.0.0.1:0", "127.0.0.1", mesh, discovery)]
        argv += ["--mdns-service", self.service] if discovery == "mdns" else []
        return await _start_node(self.stack, self.nodes, f"n{index}", argv, list, agent)

    def cut(self, node: Node) -> None:
        node.gravd.signal(signal.SIGSTOP)

    def restore(self, node: Node) -> None:
        node.gravd.signal(signal.SIGCONT)


_QUIET = frozenset({"peer_interests", "dial_failed"})


def log_digest(nodes: list[Node]) -> str:
    """What each node's gravd logged, a line per event (for a failed test's report)."""
    names = {node.uuid: node.name for node in nodes}
    out: list[str] = []
    for node in nodes:
        out.append(f"== {node.name} {node.uuid} {node.endpoint}")
        node.peers()  # fold what is new
        for event in node.events:
            if event.get("event") in _QUIET:
                continue
            fields = {
                k: names.get(str(v), v)
                for k, v in event.items()
                if k not in ("node", "timestamp", "event", "level")
            }
            out.append(f"  {str(event.get('timestamp', ''))[11:23]} {event.get('event')} {fields}")
        if node.agent is not None:
            out.append(f"  agent got {node.got()}")
    return "\n".join(out)


@functools.cache
def unavailable(name: str) -> str | None:
    """Why backend ``name`` cannot run here, or None if it can."""
    if name == "netns":
        return LanBed.available()
    if name == "loopback":
        return loopback_multicast_problem()
    raise ValueError(name)


@asynccontextmanager
async def open_backend(name: str, size: int = 5) -> AsyncIterator[Backend]:
    """Backend ``name`` with room for ``size`` nodes; everything it started is stopped on exit."""
    if name == "netns":
        with LanBed(size) as bed:
            async with AsyncExitStack() as stack:
                yield NetnsBackend(bed, stack)
    else:
        async with AsyncExitStack() as stack:
            yield LoopbackBackend(stack)


async def start_nodes(backend: Backend, count: int, **options: Any) -> list[Node]:
    """Start ``count`` nodes at once (if one fails, the others are cancelled)."""
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(backend.start(i, **options)) for i in range(count)]
    return [task.result() for task in tasks]


async def wait_full_mesh(nodes: list[Node], pattern: str = PATTERN) -> None:
    """Until every node is linked to exactly all the others, each stating ``pattern``."""
    everyone = {node.uuid for node in nodes}
    for node in nodes:
        await node.wait_linked(everyone - {node.uuid}, pattern)
