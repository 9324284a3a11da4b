"""Two sites, each a LAN of network namespaces, joined only through their NATS servers' hosts.

Each site is a ``LanBed`` (its own switch and 10.213.<k>.0/24 subnet). The last host of each
site runs that site's ``nats-server`` and is its router: a veth pair joins the two router hosts
(10.214.<k>.1/30 and .2/30, the "WAN"), both forward IPv4, and every other host routes the other
site's subnet through its own router. So a gravd can reach the other site's NATS server (as a
client that loses its own server would), but the two meshes share no LAN, and mDNS never crosses.

Processes run inside a host with ``ip netns exec``; the test reaches them only through their
stdin and stdout (``tests/bridge/netns_agent.py`` is the app and the HTTP client). Every process
is stopped by its handle, and the beds delete their namespaces (killing anything left) on exit.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, ExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from gravpy.testing.gravd import GRAVD, ROOT, Process, clean_env, json_object
from gravpy.testing.lan.bed import Host, LanBed
from tests.bridge.nats_proc import nats_server_binary

NODE_PORT, MONITOR_PORT, NATS_PORT, ROUTE_PORT = 8080, 8222, 4222, 6222
_wans = itertools.count(1)
_POLL = 0.05


def ip(*args: str, netns: str) -> None:
    subprocess.run(["ip", "-n", netns, *args], check=True, capture_output=True, text=True)


def subnet(host: Host) -> str:
    return host.address.rsplit(".", 1)[0] + ".0/24"


@dataclass
class Site:
    """One LAN: its hosts (the last one runs nats-server and routes to the other site)."""

    bed: LanBed

    @property
    def router(self) -> Host:
        return self.bed.hosts[-1]

    @property
    def nats_url(self) -> str:
        return f"nats://{self.router.address}:{NATS_PORT}"


def join_sites(one: Site, two: Site) -> None:
    """The WAN: a veth between the two routers, forwarding on, routes on every host."""
    k = next(_wans) % 250
    a, b = one.router, two.router
    ip(
        "link",
        "add",
        "wan0",
        "type",
        "veth",
        "peer",
        "name",
        "wan0",
        "netns",
        b.netns,
        netns=a.netns,
    )
    for host, address in ((a, f"10.214.{k}.1"), (b, f"10.214.{k}.2")):
        ip("addr", "add", f"{address}/30", "dev", "wan0", netns=host.netns)
        ip("link", "set", "wan0", "up", netns=host.netns)
        subprocess.run(
            host.exec_argv(["sysctl", "-qw", "net.ipv4.ip_forward=1"]),
            check=True,
            capture_output=True,
        )
    for site, other, via in ((one, two, f"10.214.{k}.2"), (two, one, f"10.214.{k}.1")):
        ip("route", "add", subnet(other.router), "via", via, netns=site.router.netns)
        for host in site.bed.hosts[:-1]:
            ip("route", "add", subnet(other.router), "via", site.router.address, netns=host.netns)


@asynccontextmanager
async def two_sites(hosts: int) -> AsyncIterator[tuple[Site, Site]]:
    """Two sites of ``hosts`` gravd hosts each (plus a router each), joined by the WAN."""
    with ExitStack() as beds:
        sites = [Site(beds.enter_context(LanBed(hosts + 1))) for _ in range(2)]
        join_sites(*sites)
        yield sites[0], sites[1]


class NsProcess:
    """Starts processes inside hosts; each is killed and reaped when ``stack`` unwinds."""

    def __init__(self, stack: AsyncExitStack) -> None:
        self.stack = stack

    async def start(self, host: Host, argv: list[str], name: str, **env: str) -> Process:
        proc = await asyncio.create_subprocess_exec(
            *host.exec_argv(argv),
            env=clean_env(env),
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        process = Process(proc, name)
        self.stack.push_async_callback(process.close)
        return process

    async def nats_server(self, site: Site, other: Site, name: str) -> Process:
        """The site's nats-server on its router, routed to the other site's."""
        addr = site.router.address
        argv = [nats_server_binary(), "-a", addr, "-p", str(NATS_PORT), "-n", name]
        argv += ["--cluster_name", "sites", "--cluster", f"nats://{addr}:{ROUTE_PORT}"]
        argv += ["--routes", f"nats://{other.router.address}:{ROUTE_PORT}"]
        server = await self.start(site.router, argv, name)
        await server.wait_line(lambda line: "Server is ready" in line)
        return server

    async def gravd(self, host: Host, mesh: str, *args: str) -> str:
        """A gravd on ``host``; returns its endpoint once it listens."""
        state = self.stack.enter_context(tempfile.TemporaryDirectory(prefix="gravd-site-"))
        argv = [*GRAVD, "--listen", f"{host.address}:{NODE_PORT}", "--mesh", mesh]
        argv += ["--monitor", f"{host.address}:{MONITOR_PORT}", "--log-format", "json", *args]
        process = await self.start(host, argv, f"gravd-{mesh}-{host.index}", XDG_STATE_HOME=state)
        listening = await process.wait_event("listening")
        return str(listening["endpoints"][0])

    async def agent(self, host: Host) -> Agent:
        argv = [sys.executable, "-m", "tests.bridge.netns_agent"]
        process = await self.start(host, argv, f"agent-{host.netns}")
        await process.wait_line(lambda line: '"ready"' in line, stream="stdout")
        return Agent(process)


class Agent:
    """The test's side of one ``netns_agent``: a command, and its answers by id."""

    _ids = itertools.count(1)

    def __init__(self, process: Process) -> None:
        self.process = process

    def send(self, op: str, **args: Any) -> int:
        cid = next(self._ids)
        stdin = self.process.proc.stdin
        assert stdin is not None
        stdin.write(json.dumps({"id": cid, "op": op, **args}).encode() + b"\n")
        return cid

    async def answer(self, cid: int, check: Callable[[dict[str, Any]], bool] = bool) -> Any:
        """The first answer to command ``cid`` that ``check`` accepts."""

        head = f'{{"id": {cid},'  # the agent prints the id first: parse only its lines

        def matches(line: str) -> bool:
            return line.startswith(head) and check(json_object(line))

        return json_object(await self.process.wait_line(matches, stream="stdout"))

    async def call(self, op: str, **args: Any) -> Any:
        return await self.answer(self.send(op, **args))

    async def node(self, host: Host) -> dict[str, Any]:
        """``host``'s gravd's ``/v1/node``."""
        url = f"http://{host.address}:{MONITOR_PORT}/v1/node"
        body: dict[str, Any] = (await self.call("get", url=url))["body"]
        return body

    async def wait_node(
        self, host: Host, check: Callable[[dict[str, Any]], bool], within: float = 30.0
    ) -> None:
        """Re-read ``host``'s ``/v1/node`` until ``check`` accepts it; after ``within`` seconds
        an AssertionError that shows the last document's bridges and peers."""
        last: dict[str, Any] = {}
        try:
            async with asyncio.timeout(within):
                while True:
                    last = await self.node(host)
                    if check(last):
                        return
                    await asyncio.sleep(_POLL)  # mesh state has no event to wait on; re-ask
        except TimeoutError:
            peers = [(p["uuid"][:8], p["state"], p["interests"]) for p in last.get("peers", [])]
            raise AssertionError(
                f"{host.address}: /v1/node failed the check for {within} s; "
                f"bridges {last.get('bridges')}; peers {peers}"
            ) from None
