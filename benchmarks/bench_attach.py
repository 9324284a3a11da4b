"""Attach benchmark: what one more app attaching and detaching costs a node with many attached.

Run from the repository root::

    .venv/bin/python benchmarks/bench_attach.py              # 800 apps attached
    .venv/bin/python benchmarks/bench_attach.py --apps 200
    .venv/bin/python benchmarks/bench_attach.py --quick      # 100 apps

One process, one event loop, the in-process memory transport (no sockets, so only the node's and
the apps' own work is measured). A node starts; ``--apps`` leaves attach to it, each with one pod
on ``sensor.*`` (the same pattern, the common case: nothing new for the others to learn). Then,
``--runs`` times, one more leaf (its pod on ``sensor.*`` too) attaches and detaches, and the process
CPU time of that attach+detach is taken (``time.process_time``: the node, the attaching leaf and
the attached leaves together, all on this loop) along with the INTERESTS frames sent meanwhile (by
every side; counted by wrapping ``PeerProtocol.send_interests``). Medians reported.

Before the incremental interests (issue 15), the node recomputed every link's interests from every
other link on each change, so one attach cost the square of the attached apps.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import time
from contextlib import AsyncExitStack
from typing import Any

from _common import Machine, finish, median, options, say, table

from gravpy import Grav
from gravpy.message import Message
from gravpy.proto import ROLE_LEAF
from gravpy.proto.peer import PeerProtocol
from gravpy.testing import MemoryNetwork, MemoryTransport


@dataclasses.dataclass
class Report:
    machine: str
    apps: int
    runs: int
    cpu_ms_median: float
    cpu_ms_max: float
    interests_frames_median: float
    failures: list[str] = dataclasses.field(default_factory=list)


class FrameCount:
    """Counts INTERESTS frames queued by every ``PeerProtocol`` of this process."""

    def __init__(self) -> None:
        self.n = 0
        original = PeerProtocol.send_interests

        def counted(proto: PeerProtocol, *args: Any, **kwargs: Any) -> None:
            self.n += 1
            original(proto, *args, **kwargs)

        PeerProtocol.send_interests = counted  # type: ignore[method-assign,assignment]


def _ignore(msg: Message) -> None:
    """A handler that takes the message."""


async def attach(stack: AsyncExitStack, net: MemoryNetwork, url: str) -> Grav:
    leaf = Grav(transport=MemoryTransport(net), role=ROLE_LEAF, attach_to=url, attach_timeout=30)
    await stack.enter_async_context(leaf)
    leaf.connect().on_type("sensor.*", _ignore)
    return leaf


async def wait_links(node: Grav, n: int) -> None:
    """Wait until the node has ``n`` open links whose interests it knows."""
    async with asyncio.timeout(60):
        while True:
            peers = node.peers()
            if len(peers) == n and all(p.state == "open" for p in peers):
                return
            await asyncio.sleep(0.01)


async def one_round(node: Grav, net: MemoryNetwork, url: str, apps: int) -> float:
    start = time.process_time()
    async with AsyncExitStack() as stack:
        await attach(stack, net, url)
        await wait_links(node, apps + 1)
    await wait_links(node, apps)
    await asyncio.sleep(0)  # the re-advertisement after the detach runs in the next turn
    return (time.process_time() - start) * 1000


async def run(apps: int, runs: int) -> Report:
    frames = FrameCount()
    net = MemoryNetwork()
    report = Report(Machine.here().describe(), apps, runs, 0.0, 0.0, 0.0)
    async with AsyncExitStack() as stack:
        node = await stack.enter_async_context(Grav(transport=MemoryTransport(net)))
        url = node.endpoints()[0]
        for _ in range(apps):
            await attach(stack, net, url)
        await wait_links(node, apps)
        cpu: list[float] = []
        counts: list[int] = []
        for _ in range(runs):
            before = frames.n
            cpu.append(await one_round(node, net, url, apps))
            counts.append(frames.n - before)
        report.cpu_ms_median = median(cpu)
        report.cpu_ms_max = max(cpu)
        report.interests_frames_median = median(counts)
    return report


def main() -> int:
    parser = options(__doc__)
    parser.add_argument("--apps", type=int, help="apps attached before measuring (800)")
    parser.add_argument("--runs", type=int, default=9, help="attach+detach rounds (9)")
    args = parser.parse_args()
    apps = args.apps or (100 if args.quick else 800)
    say(Machine.here().describe(), f"{apps} apps attached; {args.runs} attach+detach rounds")
    report = asyncio.run(run(apps, args.runs))
    say(
        table(
            ["apps", "CPU per attach+detach (median)", "max", "INTERESTS frames (median)"],
            [
                [
                    str(apps),
                    f"{report.cpu_ms_median:.1f} ms",
                    f"{report.cpu_ms_max:.1f} ms",
                    f"{report.interests_frames_median:.0f}",
                ]
            ],
        )
    )
    return finish(report, args.json)


if __name__ == "__main__":
    sys.exit(main())
