"""Bridge benchmark: two meshes joined through a real nats-server, against nats-py used directly.

Run: ``python benchmarks/bench_bridge.py`` (``--quick`` for a smoke run, ``--json PATH``).

One ``nats-server`` on 127.0.0.1 (port chosen by the server), and in this one process:

- **bridge**: mesh ``east`` and mesh ``west``, each one ``Grav`` node (WebSocket transport on port
  0) with a ``NatsBridge`` to the server; a pod on east publishes, a pod on west receives. Each
  message goes pod -> east's bus -> bridge (headers) -> nats-server -> west's bridge -> west's
  bus -> pod.
- **nats**: two nats-py connections to the same server: one publishes, one subscribes;
  ``nats+headers`` publishes the same two headers a bridged message carries (``Grav-Uuid``,
  ``Grav-Time``), to show what the headers alone cost nats-py.

Both systems run in the same process and the same run, so they share the machine's load equally:

1. throughput: ``messages`` messages of 16 bytes (gravpy ``await pod.publish``, nats-py
   ``await nc.publish``), timed until the receiver has them all; the best of ``runs``.
2. request latency: ``requests`` sequential requests answered on the other side (gravpy
   ``await pod.send(msg).wait_until(5)``, nats-py ``await nc.request``); p50 and p99.

Targets (from issue 14): the bridge carries at least 70% of nats-py's messages/s and adds under
30% to its request p50. A run that loses a message fails its check (figures not valid).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import nats
from _common import Machine, count, finish, options, say, sizes_for, table
from bench_mesh import NatsServer

from gravpy import Grav, Message
from gravpy.bridge import NatsBridgeConfig
from gravpy.bridge.nats import NatsBridge
from gravpy.message import new_id
from transports.websocket import WebSocketTransport

THROUGHPUT_TARGET = 0.70  # bridge / nats messages/s, at least
LATENCY_TARGET = 1.30  # bridge / nats request p50, at most
PAYLOAD = b"0123456789abcdef"


@dataclass(frozen=True)
class Sizes:
    messages: int = 50_000
    runs: int = 3
    requests: int = 2_000


@dataclass
class Report:
    machine: str
    sizes: dict[str, int]
    throughput: dict[str, float] = field(default_factory=dict)
    p50_ms: dict[str, float] = field(default_factory=dict)
    p99_ms: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


class Counter:
    """Counts arrivals; ``done`` is set when ``target`` have arrived."""

    def __init__(self) -> None:
        self.n = 0
        self.target = 0
        self.done = asyncio.Event()

    def reset(self, target: int) -> None:
        self.n, self.target = 0, target
        self.done.clear()

    def hit(self, *_: object) -> None:
        self.n += 1
        if self.n >= self.target:
            self.done.set()


async def timed_stream(send: Callable[[int], Awaitable[object]], counter: Counter, n: int) -> float:
    counter.reset(n)
    start = time.perf_counter()
    for i in range(n):
        await send(i)
    async with asyncio.timeout(120):
        await counter.done.wait()
    return n / (time.perf_counter() - start)


async def latencies(ask: Callable[[], Awaitable[object]], n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        await ask()
        out.append(time.perf_counter() - start)
    return out


async def measure_nats(url: str, sizes: Sizes, report: Report) -> None:
    pub, sub = await nats.connect(url), await nats.connect(url)
    try:
        counter = Counter()

        async def on_msg(msg: object) -> None:
            counter.hit()

        async def on_req(msg: nats.aio.msg.Msg) -> None:
            await sub.publish(msg.reply, msg.data)

        await sub.subscribe("bench.n", cb=on_msg)
        await sub.subscribe("bench.req", cb=on_req)
        await sub.flush()

        async def send(i: int) -> None:
            await pub.publish("bench.n", PAYLOAD)

        async def send_with_headers(i: int) -> None:
            headers = {"Grav-Uuid": new_id(), "Grav-Time": repr(time.time())}
            await pub.publish("bench.n", PAYLOAD, headers=headers)

        rates = [await timed_stream(send, counter, sizes.messages) for _ in range(sizes.runs)]
        report.throughput["nats"] = max(rates)
        rates = [
            await timed_stream(send_with_headers, counter, sizes.messages)
            for _ in range(sizes.runs)
        ]
        report.throughput["nats+headers"] = max(rates)
        lat = await latencies(lambda: pub.request("bench.req", PAYLOAD, timeout=5), sizes.requests)
        record_latency(report, "nats", lat)
    finally:
        await pub.close()
        await sub.close()


def bridged(mesh: str, url: str) -> tuple[Grav, NatsBridge]:
    bridge = NatsBridge(NatsBridgeConfig(servers=(url,), announce_interval=0.2, ttl=1.0))
    grav = Grav(transport=WebSocketTransport("127.0.0.1", 0), belongs_to=mesh, bridges=[bridge])
    return grav, bridge


async def measure_bridge(url: str, sizes: Sizes, report: Report) -> None:
    (east, east_bridge), (west, _) = bridged("east", url), bridged("west", url)
    async with east, west:
        counter = Counter()
        receiver = west.connect(inbox_limit=sizes.messages + 10)
        receiver.on_type("bench.n", counter.hit)
        responder = west.connect()
        responder.on_type(
            "bench.req", lambda m: responder.reply_to(m, Message.new("bench.r", m.data))
        )
        sender = east.connect()
        async with asyncio.timeout(10):
            while True:  # announcements have no event to wait on: re-ask
                stats = east_bridge.statistics()
                if stats.exporter and {"bench.n", "bench.req"} <= set(stats.remote_wants):
                    break
                await asyncio.sleep(0.05)

        async def send(i: int) -> None:
            await sender.publish(Message.new("bench.n", PAYLOAD))

        rates = [await timed_stream(send, counter, sizes.messages) for _ in range(sizes.runs)]
        report.throughput["bridge"] = max(rates)
        lat = await latencies(
            lambda: sender.send(Message.new("bench.req", PAYLOAD)).wait_until(5.0),
            sizes.requests,
        )
        record_latency(report, "bridge", lat)
        lost = east_bridge.statistics().lost
        if lost:
            report.failures.append(f"the bridge lost messages: {lost}")


def record_latency(report: Report, system: str, lat: list[float]) -> None:
    lat.sort()
    report.p50_ms[system] = statistics.median(lat) * 1000
    report.p99_ms[system] = lat[int(len(lat) * 0.99) - 1] * 1000


async def run(sizes: Sizes) -> Report:
    report = Report(Machine.here().describe(), vars(sizes))
    with tempfile.TemporaryDirectory() as log_dir:
        server = await NatsServer.start(Path(log_dir))
        try:
            await measure_nats(server.url, sizes, report)
            await measure_bridge(server.url, sizes, report)
        finally:
            await server.stop()
    return report


def show(report: Report) -> None:
    t, p50, p99 = report.throughput, report.p50_ms, report.p99_ms
    rows = [
        [s, count(t[s]), f"{p50[s]:.3f}" if s in p50 else "-", f"{p99[s]:.3f}" if s in p99 else "-"]
        for s in ("nats", "nats+headers", "bridge")
        if s in t
    ]
    say(report.machine, table(["system", "msgs/s", "p50 ms", "p99 ms"], rows))
    if "bridge" in t and "nats" in t:
        ratio = t["bridge"] / t["nats"]
        added = p50["bridge"] / p50["nats"]
        mark = lambda ok: "ok" if ok else "MISSED"  # noqa: E731
        say(
            f"  bridge throughput = {ratio:.0%} of nats-py (target >= {THROUGHPUT_TARGET:.0%}: "
            f"{mark(ratio >= THROUGHPUT_TARGET)})",
            f"  bridge request p50 = {added:.2f} x nats-py (target <= {LATENCY_TARGET:.2f}: "
            f"{mark(added <= LATENCY_TARGET)})",
        )


def main() -> int:
    parser = options(__doc__, processes=True)
    args = parser.parse_args()
    sizes = sizes_for(args, Sizes(), Sizes(messages=5_000, runs=1, requests=200))
    report = asyncio.run(run(sizes))
    show(report)
    return finish(report, args.json)


if __name__ == "__main__":
    sys.exit(main())
