"""Bridge benchmark: two meshes joined through a real nats-server, against nats-py used directly.

Run: ``python benchmarks/bench_bridge.py`` (``--quick`` for a smoke run, ``--json PATH``;
``--loop uvloop`` runs every Python process on uvloop, nats-py's as well as gravpy's, as gravd
does when uvloop is installed).

One ``nats-server`` on 127.0.0.1 (port chosen by the server). The sending side runs in this
process, the receiving side in a child process (``--role``), as two machines' programs would:

- **bridge**: here, mesh ``east``: one ``Grav`` node (WebSocket transport on port 0) with a
  ``NatsBridge`` and a sending pod; in the child, mesh ``west``: the same with a counting pod and a
  responder pod. A message goes pod -> east's bus -> east's bridge (one header) -> nats-server ->
  west's bridge -> west's bus -> pod.
- **nats**: here one nats-py connection publishes; in the child another subscribes and responds.
  ``nats+meta`` publishes the one header a bridged message carries (``Grav-Meta: <uuid> <time>``),
  to show what that header alone costs nats-py; ``nats+2headers`` two headers (the bridge's
  format before it packed its fields into one), for comparison.

Both systems run in the same run, one after the other, on the same server:

1. throughput: ``messages`` messages of 16 bytes (gravpy ``await pod.publish``, nats-py
   ``await nc.publish``); the receiver answers ``bench.done`` when it has them all, and the rate
   is messages over the time from the first publish to that answer; the best of ``runs``.
   Each side's CPU time per message (the median over the runs, after a warm-up stream) is shown
   too: on a shared machine it moves far less with the other load than messages/s do.
2. request latency: ``requests`` sequential requests answered in the child (gravpy
   ``await pod.send(msg).wait_until(5)``, nats-py ``await nc.request``); p50 and p99.

Targets (issue 14): the bridge carries at least 70% of nats-py's messages/s and adds under 30%
to its request p50. A bridge that counts a loss fails the run's check (figures not valid).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import nats
from _common import Machine, count, finish, options, say, sizes_for, table
from bench_mesh import NatsServer
from nats.aio.msg import Msg

from discovery.static import StaticDiscovery
from gravpy import Grav, Message
from gravpy.bridge import NatsBridgeConfig
from gravpy.bridge.nats import NatsBridge
from gravpy.filter import Pattern
from gravpy.mesh import PeerInfo
from gravpy.message import new_id
from transports.websocket import WebSocketTransport

LOOP_ENV = "GRAVPY_BENCH_LOOP"
T = TypeVar("T")
THROUGHPUT_TARGET = 0.70  # bridge / nats messages/s, at least
LATENCY_TARGET = 1.30  # bridge / nats request p50, at most
PAYLOAD = b"0123456789abcdef"
# with --standby: the sending node's bridge is the active one (the smallest uuid is elected)
ACTIVE_UUID, STANDBY_UUID = str(uuid.UUID(int=1)), str(uuid.UUID(int=2**128 - 1))


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
    cpu_us: dict[str, list[float]] = field(default_factory=dict)  # [sender, receiver] per msg
    failures: list[str] = field(default_factory=list)


# -- the receiving side (child process) ----------------------------------------------------------


def done_text(n: int) -> str:
    """What the receiver answers after ``n`` messages: ``n`` and its CPU seconds so far."""
    return f"{n} {time.process_time()}"


class Tally:
    """Counts ``bench.n`` arrivals; every ``n``-th (n is in the data) calls ``done``."""

    def __init__(self, done: Callable[[int], object]) -> None:
        self.n = 0
        self.done = done

    def hit(self, data: bytes) -> None:
        self.n += 1
        if self.n == int(data):
            self.n = 0
            self.done(int(data))


async def serve_nats(url: str) -> None:
    nc = await nats.connect(url)
    loop = asyncio.get_running_loop()
    tally = Tally(lambda n: loop.create_task(nc.publish("bench.done", done_text(n).encode())))

    async def on_msg(msg: Msg) -> None:
        tally.hit(msg.data)

    async def on_req(msg: Msg) -> None:
        await nc.publish(msg.reply, msg.data)

    await nc.subscribe("bench.n", cb=on_msg)
    await nc.subscribe("bench.req", cb=on_req)
    await nc.flush()
    await ready_until_stdin_closes()
    await nc.close()


async def serve_bridge(url: str) -> None:
    west, bridge = bridged("west", url)
    async with west:
        counter, responder, done = (
            west.connect(inbox_limit=1_000_000),
            west.connect(),
            west.connect(),
        )
        tally = Tally(lambda n: done.send(Message.new("bench.done", done_text(n))))
        counter.on_type("bench.n", lambda m: tally.hit(m.data))
        responder.on_type("bench.req", lambda m: responder.reply_to(m, Message.new("r", m.data)))
        await until(
            lambda: (
                bridge.statistics().exporter
                and {"bench.n", "bench.req"} <= set(bridge.statistics().mesh_wants)
            )
        )
        await ready_until_stdin_closes()


async def serve_standby(url: str, peer: str) -> None:
    """A second bridging node of the sending mesh, linked to the sender's: a standby."""
    east, bridge = bridged("east", url, STANDBY_UUID, peer)
    async with east:
        await until(lambda: bridge.statistics().ready and not bridge.statistics().exporter)
        await ready_until_stdin_closes()
    stats = bridge.statistics()  # (export_*: its export shadow, docs/scaling.md)
    held = stats.export_struck + stats.export_recovered + stats.export_expired
    print(
        f"  (the standby held {held:,} exports: {stats.export_struck:,} heard back from NATS,"
        f" {stats.export_recovered} published by it, {stats.export_expired} expired,"
        f" lost {stats.lost})",
        file=sys.stderr,
    )


async def ready_until_stdin_closes() -> None:
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.read)  # the parent closes our stdin to stop us


async def until(check: Callable[[], bool]) -> None:
    async with asyncio.timeout(20):
        while True:  # bridge state changes on NATS traffic, with no event to wait on: re-ask
            if check():
                return
            await asyncio.sleep(0.05)


def bridged(
    mesh: str, url: str, node_uuid: str | None = None, peer: str = ""
) -> tuple[Grav, NatsBridge]:
    bridge = NatsBridge(NatsBridgeConfig(servers=(url,), announce_interval=0.2, ttl=1.0))
    grav = Grav(
        transport=WebSocketTransport("127.0.0.1", 0),
        belongs_to=mesh,
        bridges=[bridge],
        node_uuid=node_uuid,
        discovery=[StaticDiscovery([peer])] if peer else (),
    )
    return grav, bridge


# -- the sending side (this process) ------------------------------------------------------------


class Receiver:
    """The child process running one receiving side."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, role: str, url: str, *extra: str) -> Receiver:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--role", role, "--url", url, *extra,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdout is not None
        async with asyncio.timeout(30):
            line = await proc.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError(f"the {role} receiver did not start: {line!r}")
        return cls(proc)

    async def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            async with asyncio.timeout(10):
                await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


Done = asyncio.Queue[tuple[int, float]]  # (messages, the receiver's CPU seconds)


def on_done_text(done: Done, text: bytes) -> None:
    n, cpu = text.split()
    done.put_nowait((int(n), float(cpu)))


async def timed_stream(send: Callable[[bytes], Awaitable[object]], done: Done, n: int) -> tuple[float, float, float]:  # fmt: skip
    """Messages/s, and the sender's CPU seconds, and the receiver's CPU clock at the end."""
    data = str(n).encode()
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        await send(data)
    async with asyncio.timeout(120):
        count, receiver_cpu = await done.get()
    assert count == n
    return n / (time.perf_counter() - start), time.process_time() - cpu, receiver_cpu


async def streams(name: str, send: Callable[[bytes], Awaitable[object]], done: Done, sizes: Sizes, report: Report) -> None:  # fmt: skip
    """A warm-up stream, then ``runs`` timed ones: the best rate, the median CPU per message."""
    _, _, receiver_cpu = await timed_stream(send, done, min(2000, sizes.messages))
    rates, sender, receiver = [], [], []
    for _ in range(sizes.runs):
        rate, cpu, now = await timed_stream(send, done, sizes.messages)
        rates.append(rate)
        sender.append(cpu / sizes.messages * 1e6)
        receiver.append((now - receiver_cpu) / sizes.messages * 1e6)
        receiver_cpu = now
    report.throughput[name] = max(rates)
    report.cpu_us[name] = [statistics.median(sender), statistics.median(receiver)]


async def latencies(ask: Callable[[], Awaitable[object]], n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        await ask()
        out.append(time.perf_counter() - start)
    return out


async def measure_nats(url: str, sizes: Sizes, report: Report) -> None:
    receiver = await Receiver.start("nats", url)
    pub = await nats.connect(url)
    try:
        done: Done = asyncio.Queue()

        async def on_done(msg: Msg) -> None:
            on_done_text(done, msg.data)

        await pub.subscribe("bench.done", cb=on_done)

        async def send(data: bytes) -> None:
            await pub.publish("bench.n", data)

        async def send_with_meta(data: bytes) -> None:
            await pub.publish("bench.n", data, headers={"Grav-Meta": f"{new_id()} {time.time()!r}"})

        async def send_with_two(data: bytes) -> None:
            headers = {"Grav-Uuid": new_id(), "Grav-Time": repr(time.time())}
            await pub.publish("bench.n", data, headers=headers)

        systems = (("nats", send), ("nats+meta", send_with_meta), ("nats+2headers", send_with_two))
        for name, op in systems:
            await streams(name, op, done, sizes, report)
        lat = await latencies(lambda: pub.request("bench.req", PAYLOAD, timeout=5), sizes.requests)
        record_latency(report, "nats", lat)
    finally:
        await pub.close()
        await receiver.stop()


async def measure_bridge(url: str, sizes: Sizes, report: Report, standby: bool = False) -> None:
    """The bridge, or with ``standby`` the bridge with a standby bridging node in the sending
    mesh (in a third process): it receives every message too, holds it, and hears it back
    from NATS (``gravpy.bridge.export_shadow``)."""
    name = "bridge+standby" if standby else "bridge"
    receiver = await Receiver.start("bridge", url)
    east, bridge = bridged("east", url, ACTIVE_UUID if standby else None)
    second: Receiver | None = None
    try:
        async with east:
            if standby:
                second = await Receiver.start("standby", url, "--peer", east.endpoints()[0])
                await east.wait_for(lambda links: standby_takes(links, "bench.n"), 20)
            done: Done = asyncio.Queue()
            listener, sender = east.connect(), east.connect()
            listener.on_type("bench.done", lambda m: on_done_text(done, m.data))
            await until(
                lambda: (
                    bridge.statistics().exporter
                    and {"bench.n", "bench.req"} <= set(bridge.statistics().remote_wants)
                    and "bench.done" in bridge.statistics().mesh_wants
                )
            )

            async def send(data: bytes) -> None:
                await sender.publish(Message.new("bench.n", data))

            await streams(name, send, done, sizes, report)
            lat = await latencies(
                lambda: sender.send(Message.new("bench.req", PAYLOAD)).wait_until(5.0),
                sizes.requests,
            )
            record_latency(report, name, lat)
            if bridge.statistics().lost:
                report.failures.append(f"the bridge lost messages: {bridge.statistics().lost}")
    finally:
        if second is not None:
            await second.stop()
        await receiver.stop()


def standby_takes(links: list[PeerInfo], msg_type: str) -> bool:
    """The sending node's open link to the standby admits ``msg_type`` (it sends it there)."""
    return any(
        link.uuid == STANDBY_UUID
        and link.state == "open"
        and any(Pattern(p).matches(msg_type) for p in link.interests)
        for link in links
    )


def record_latency(report: Report, system: str, lat: list[float]) -> None:
    lat.sort()
    report.p50_ms[system] = statistics.median(lat) * 1000
    report.p99_ms[system] = lat[max(0, int(len(lat) * 0.99) - 1)] * 1000


def on_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on the event loop ``--loop`` chose (children inherit it: ``LOOP_ENV``)."""
    if os.environ.get(LOOP_ENV) == "uvloop":
        import uvloop  # the speed extra

        return uvloop.run(main)
    return asyncio.run(main)


async def run(sizes: Sizes, standby: bool) -> Report:
    loop = os.environ.get(LOOP_ENV, "asyncio")
    report = Report(f"{Machine.here().describe()}, every process on {loop}", vars(sizes))
    with tempfile.TemporaryDirectory() as log_dir:
        server = await NatsServer.start(Path(log_dir))
        try:
            await measure_nats(server.url, sizes, report)
            await measure_bridge(server.url, sizes, report)
            if standby:
                await measure_bridge(server.url, sizes, report, standby=True)
        finally:
            await server.stop()
    return report


def show(report: Report) -> None:
    t, p50, p99, cpu = report.throughput, report.p50_ms, report.p99_ms, report.cpu_us
    rows = [
        [
            s,
            count(t[s]),
            f"{cpu[s][0]:.1f}",
            f"{cpu[s][1]:.1f}",
            f"{p50[s]:.3f}" if s in p50 else "-",
            f"{p99[s]:.3f}" if s in p99 else "-",
        ]
        for s in ("nats", "nats+meta", "nats+2headers", "bridge", "bridge+standby")
        if s in t
    ]
    headers = ["system", "msgs/s", "send CPU us/msg", "recv CPU us/msg", "p50 ms", "p99 ms"]
    say(report.machine, table(headers, rows))
    if "bridge" in t and "nats" in t:
        ratio = t["bridge"] / t["nats"]
        added = p50["bridge"] / p50["nats"]
        say(
            f"  bridge throughput = {ratio:.0%} of nats-py (target >= {THROUGHPUT_TARGET:.0%}: "
            f"{'ok' if ratio >= THROUGHPUT_TARGET else 'MISSED'})",
            f"  bridge throughput = {t['bridge'] / t['nats+meta']:.0%} of nats-py sending the "
            "same one header",
            f"  bridge request p50 = {added:.2f} x nats-py (target <= {LATENCY_TARGET:.2f}: "
            f"{'ok' if added <= LATENCY_TARGET else 'MISSED'})",
        )
    if "bridge+standby" in t and "bridge" in t:
        say(
            f"  with a standby bridge in the sending mesh: {t['bridge+standby'] / t['bridge']:.0%}"
            f" of the bridge's msgs/s, p50 {p50['bridge+standby'] / p50['bridge']:.2f} x"
        )


def main() -> int:
    parser = options(__doc__, processes=True)
    parser.add_argument(
        "--standby",
        action="store_true",
        help="also measure with a standby bridging node in the sending mesh (a third process)",
    )
    parser.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="the event loop of every process, gravpy's and nats-py's (uvloop: the speed extra)",
    )
    parser.add_argument("--role", choices=("nats", "bridge", "standby"), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--peer", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role is not None:
        roles = {"nats": serve_nats, "bridge": serve_bridge}
        if args.role == "standby":
            on_loop(serve_standby(args.url, args.peer))
        else:
            on_loop(roles[args.role](args.url))
        return 0
    os.environ[LOOP_ENV] = args.loop  # (the children it starts read it)
    sizes = sizes_for(args, Sizes(), Sizes(messages=5_000, runs=1, requests=200))
    report = on_loop(run(sizes, args.standby))
    show(report)
    return finish(report, args.json)


if __name__ == "__main__":
    sys.exit(main())
