"""Scaling benchmark: gravpy against nats-py, same run, as pods, receiving nodes and payloads grow.

Run from the repository root (needs the ``bench`` extras: ``pip install -e '.[bench]'``)::

    .venv/bin/python benchmarks/bench_scaling.py                  # full run (about 2-3 minutes)
    .venv/bin/python benchmarks/bench_scaling.py --quick          # smaller sizes, a smoke test
    .venv/bin/python benchmarks/bench_scaling.py --transport tcp --loop uvloop
    .venv/bin/python benchmarks/bench_scaling.py --json results.json

Theory of operation. One publishing process A and three receiving processes B1, B2, B3 per
system, all started here (``benchmarks/mesh_node.py``) and kept for the whole run. gravpy: four
full nodes on 127.0.0.1 with one transport (``--transport``), A dialled each B, so A reaches every
receiving node over a link of its own. nats: four nats-py connections to one ``nats-server`` on
127.0.0.1 (a fifth process). Each row of the table is one case:

- fan-out to 1, 10 or 100 receiving pods in B1 (nats: 1, 10 or 100 subscriptions on B1's one
  connection), 128 B;
- 1, 2 or 3 receiving nodes (B1..Bk, one pod or subscription each), 128 B;
- payloads of 16 B, 128 B, 1 KiB, 16 KiB and 64 KiB, one pod on B1.

(The 1 pod, 1 node, 128 B case is shared by the three sweeps and measured once.) In a run, the
receivers subscribe to a type of their own for that run (no interest left over from the run
before can be mistaken for the new one), A waits until it sees every receiving node's interest
(nats: each subscriber flushed its SUBs), then publishes the case's messages (an 8-byte sequence
number, then random bytes) with ``await pod.publish(msg)`` (nats ``await nc.publish``). Figures,
with ``seconds`` = last arrival at any receiver - publish start on A, both on CLOCK_MONOTONIC:
msgs/s = messages published / seconds; deliveries/s = handler calls at all receivers / seconds.
``--runs`` rounds (5), each running every case, gravpy then nats (so a change in the machine's
load falls on all cases and both systems alike); the figures are medians of the valid runs and the
ratio is gravpy / nats of those medians.

Every run is checked: each receiving pod (nats: subscription) got exactly every message, in
order, none twice; no drop counted anywhere (gravpy: A's link queues and the receivers' pods;
nats: slow-consumer errors). A failed check marks the run and its row INVALID and the process
exits with status 1; a node that fails ends the run with status 2. Big payloads and wide
fan-outs send fewer messages (``Sizes``: a cap on messages, on deliveries and on bytes per run).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from _common import Machine, count, median, options, say, sizes_for, table
from _pairs import Worker, log_directory, run_benchmark
from bench_mesh import NatsServer

SYSTEMS = ("gravpy", "nats")
RECEIVERS = 3  # receiving processes per system


@dataclass(frozen=True)
class Case:
    """One row: how many pods (subscriptions) on each of how many receiving nodes, what payload."""

    pods: int
    nodes: int
    size: int

    @property
    def fan_out(self) -> int:
        return self.pods * self.nodes

    def label(self) -> str:
        return f"{self.pods} pod(s) x {self.nodes} node(s), {_size(self.size)}"


CASES = (
    Case(1, 1, 128),
    Case(10, 1, 128),
    Case(100, 1, 128),
    Case(1, 2, 128),
    Case(1, 3, 128),
    Case(1, 1, 16),
    Case(1, 1, 1024),
    Case(1, 1, 16 * 1024),
    Case(1, 1, 64 * 1024),
)


@dataclass(frozen=True)
class Sizes:
    """Caps on one run (the smallest wins), the rounds per case, and the warm-up."""

    messages: int = 30_000  # messages per run, at most
    deliveries: int = 300_000  # messages x fan-out, at most
    megabytes: int = 64  # messages x payload, at most (MiB)
    runs: int = 5
    warmup_messages: int = 5_000

    def messages_for(self, case: Case) -> int:
        by_bytes = (self.megabytes << 20) // case.size
        return max(100, min(self.messages, self.deliveries // case.fan_out, by_bytes))


QUICK = Sizes(messages=2_000, deliveries=20_000, megabytes=8, runs=1, warmup_messages=500)


@dataclass
class ScalingRun:
    """One run of one case on one system, and its check."""

    system: str
    case: Case
    run: int
    messages: int
    received: int  # handler calls at all receivers
    expected: int  # messages x fan-out
    complete_pods: int  # pods (subscriptions) that got every message, in order, none twice
    gaps: int
    backwards: int  # out of order or duplicated
    dropped: int  # counted by the system (link queues, pod inboxes)
    errors: list[str]  # nats: slow-consumer errors
    seconds: float  # publish start on A -> last arrival at any receiver
    msgs_per_s: float
    deliveries_per_s: float
    cpu_a: float  # CPU seconds of the publisher over the run
    cpu_b: float  # of the receivers together

    @property
    def ok(self) -> bool:
        return (
            self.received == self.expected
            and self.complete_pods == self.case.fan_out
            and self.gaps == 0
            and self.backwards == 0
            and self.dropped == 0
            and not self.errors
        )

    def problem(self) -> str:
        return (
            f"{self.system} {self.case.label()} run {self.run}: {self.received:,}/{self.expected:,} "
            f"delivered, {self.complete_pods}/{self.case.fan_out} pods complete, {self.gaps} gaps, "
            f"{self.backwards} out of order or twice, {self.dropped} dropped, errors {self.errors}"
        )


@dataclass
class Row:
    """The medians of one case's valid runs per system, and the ratio gravpy / nats."""

    case: Case
    messages: int
    msgs_per_s: dict[str, float]
    deliveries_per_s: dict[str, float]
    ratio: float
    valid: bool


@dataclass
class Report:
    mode: str
    machine: Machine
    nats_server: str
    sizes: dict[str, int]
    transport: str
    loop: str
    gravpy_build: str = "?"
    load_average: list[float] = field(default_factory=list)
    runs: list[ScalingRun] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


@dataclass
class System:
    """One system's publisher A and receivers B1..B3."""

    name: str
    a: Worker
    receivers: list[Worker]


# -- one run ---------------------------------------------------------------------------------------


async def scaling_run(system: System, case: Case, run: int, n: int, tag: str) -> ScalingRun:
    """The case's receivers subscribe, A publishes ``n`` messages, every receiver is collected."""
    kind = f"bench.scale.{tag}"
    receivers = system.receivers[: case.nodes]
    for b in receivers:
        await b.call("subscribe", type=kind, n=n, pods=case.pods)
    await system.a.call("await_interest", type=kind, peers=case.nodes)
    for w in (system.a, *receivers):
        await w.call("gc_reset")
    pub = await system.a.call("publish", type=kind, n=n, size=case.size)
    got = await asyncio.gather(*(b.call("collect", idle=5.0) for b in receivers))
    cpu = [(await w.call("gc"))["cpu_seconds"] for w in (system.a, *receivers)]
    return _result(system.name, case, run, n, pub, got, cpu)


def _result(
    system: str,
    case: Case,
    run: int,
    n: int,
    pub: dict[str, Any],
    got: Sequence[dict[str, Any]],
    cpu: Sequence[float],
) -> ScalingRun:
    """A run from A's ``publish`` answer, each receiver's ``collect`` answer and the CPU times."""
    received = sum(g["received"] for g in got)
    seconds = max(g["last"] for g in got) - pub["start"] if received else float("inf")
    dropped = pub.get("dropped_on_links", 0) + sum(
        g.get("dropped_overflow", 0) + g.get("dropped_failed", 0) + g.get("inbox_left", 0)
        for g in got
    )
    return ScalingRun(
        system=system,
        case=case,
        run=run,
        messages=pub["published"],
        received=received,
        expected=n * case.fan_out,
        complete_pods=sum(g["complete"] for g in got),
        gaps=sum(g["gaps"] for g in got),
        backwards=sum(g["backwards"] for g in got),
        dropped=dropped,
        errors=[e for g in got for e in g.get("errors", [])],
        seconds=seconds,
        msgs_per_s=pub["published"] / seconds,
        deliveries_per_s=received / seconds,
        cpu_a=cpu[0],
        cpu_b=sum(cpu[1:]),
    )


# -- the table -------------------------------------------------------------------------------------


async def measure(report: Report, sizes: Sizes, systems: dict[str, System]) -> None:
    """A warm-up per system, then ``sizes.runs`` rounds; each round runs every case, gravpy then
    nats, so that a change in the machine's load falls on every case and on both systems alike."""
    for name in SYSTEMS:
        warm = await scaling_run(systems[name], CASES[0], 0, sizes.warmup_messages, "warm")
        if not warm.ok:
            report.failures.append("warm-up: " + warm.problem())
    for run in range(1, sizes.runs + 1):
        for index, case in enumerate(CASES):
            for name in SYSTEMS:
                n = sizes.messages_for(case)
                result = await scaling_run(systems[name], case, run, n, f"{index}.{run}")
                report.runs.append(result)
                say(_progress(result))
                if not result.ok:
                    report.failures.append(result.problem())
    for case in CASES:
        runs = [r for r in report.runs if r.case == case]
        report.rows.append(row_of(case, sizes.messages_for(case), runs))


def row_of(case: Case, n: int, runs: Sequence[ScalingRun]) -> Row:
    valid = all(r.ok for r in runs)
    msgs = {s: median(r.msgs_per_s for r in runs if r.system == s and r.ok) for s in SYSTEMS}
    deliveries = {
        s: median(r.deliveries_per_s for r in runs if r.system == s and r.ok) for s in SYSTEMS
    }
    ratio = msgs["gravpy"] / msgs["nats"] if msgs["nats"] else float("nan")
    return Row(case, n, msgs, deliveries, ratio, valid)


def _size(size: int) -> str:
    return f"{size >> 10} KiB" if size >= 1024 else f"{size} B"


def _progress(r: ScalingRun) -> str:
    return (
        f"  run {r.run} {r.system:6} {r.case.label():32} x {r.messages:>6,}: "
        f"{count(r.msgs_per_s):>8} msgs/s {count(r.deliveries_per_s):>10} deliv/s"
        f"{'' if r.ok else '  INVALID'}"
    )


def print_report(report: Report, sizes: Sizes) -> None:
    say(
        "",
        f"Scaling: gravpy ({report.gravpy_build}, over {report.transport}) vs nats-py, "
        f"{report.loop} in every Python process; median of {sizes.runs} run(s) per system, "
        "alternating",
        "  msgs/s = messages / (last arrival at any receiver - publish start on A); "
        "deliv/s = handler calls / the same",
        _rows_table(report.rows),
        "",
        "Every run (CPU s: publisher A / the receivers together)",
        _runs_table(report.runs),
    )


def _rows_table(rows: Sequence[Row]) -> str:
    cells = [
        [
            str(r.case.pods),
            str(r.case.nodes),
            _size(r.case.size),
            count(r.messages),
            count(r.msgs_per_s["gravpy"]),
            count(r.deliveries_per_s["gravpy"]),
            count(r.msgs_per_s["nats"]),
            count(r.deliveries_per_s["nats"]),
            f"{r.ratio:.2f}x",
            "ok" if r.valid else "INVALID",
        ]
        for r in rows
    ]
    headers = ["pods", "nodes", "payload", "messages", "gravpy msgs/s", "gravpy deliv/s"]
    return table([*headers, "nats msgs/s", "nats deliv/s", "gravpy/nats", "check"], cells)


def _runs_table(runs: Sequence[ScalingRun]) -> str:
    cells = [
        [
            r.system,
            r.case.label(),
            str(r.run),
            f"{r.received:,}/{r.expected:,}",
            f"{r.seconds:.3f}",
            count(r.msgs_per_s),
            count(r.deliveries_per_s),
            f"{r.cpu_a:.2f}/{r.cpu_b:.2f}",
            "ok" if r.ok else "INVALID",
        ]
        for r in runs
    ]
    headers = ["system", "case", "run", "delivered", "s", "msgs/s", "deliv/s", "CPU s A/B"]
    return table([*headers, "check"], cells)


# -- processes -------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def running_systems(
    args: argparse.Namespace, server_url: str, log_dir: Path
) -> AsyncIterator[dict[str, System]]:
    """Both systems' A and B1..B3, linked; every worker started is stopped on the way out."""
    node_args = {
        "gravpy": ["gravpy", "--transport", args.transport],
        "nats": ["nats", server_url],
    }
    async with contextlib.AsyncExitStack() as stack:

        async def started(name: str, system: str) -> Worker:
            worker = await Worker.start(name, node_args[system], log_dir)
            stack.push_async_callback(worker.stop)
            return worker

        systems: dict[str, System] = {}
        for system in SYSTEMS:
            receivers = [await started(f"{system}-B{i}", system) for i in range(1, RECEIVERS + 1)]
            a = await started(f"{system}-A", system)
            for b in receivers:
                if "endpoint" in b.hello:
                    await a.call("connect", endpoint=b.hello["endpoint"])
            systems[system] = System(system, a, receivers)
        yield systems


async def run(args: argparse.Namespace) -> Report:
    sizes = sizes_for(args, Sizes(), QUICK)
    report = Report(
        mode=f"{'quick' if args.quick else 'full'}, gravpy over {args.transport}, {args.loop}",
        machine=Machine.here(),
        nats_server="",
        sizes=asdict(sizes),
        transport=args.transport,
        loop=args.loop,
        load_average=list(os.getloadavg()),
    )
    say(f"gravpy scaling benchmark ({report.mode}): {report.machine.describe()}")
    say(f"load average at start: {' '.join(f'{x:.2f}' for x in report.load_average)}")
    with log_directory(args.logs, "bench_scaling_") as log_dir:
        server = await NatsServer.start(log_dir)
        try:
            report.nats_server = server.version
            say(f"nats-server {server.version} at {server.url}; logs in {log_dir}")
            async with running_systems(args, server.url, log_dir) as systems:
                report.gravpy_build = systems["gravpy"].a.hello.get("build", "?")
                say(_layout(systems, args.loop), await _links(systems["gravpy"]))
                await measure(report, sizes, systems)
                print_report(report, sizes)
        finally:
            await server.stop()
    say(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return report


def _layout(systems: dict[str, System], loop: str) -> str:
    g = systems["gravpy"]
    loops = sorted(
        {w.hello.get("loop", "?") for s in systems.values() for w in (s.a, *s.receivers)}
    )
    fair = " (nats-py on uvloop too, for a fair comparison)" if loop == "uvloop" else ""
    return (
        f"gravpy A {g.a.hello['endpoint']} -> "
        + ", ".join(b.hello["endpoint"] for b in g.receivers)
        + f"\nevent loop of every Python process: {', '.join(loops)}{fair}"
    )


async def _links(system: System) -> str:
    """How many open links each gravpy node has (A dialled each B; gossip may link the Bs)."""
    parts = []
    for worker in (system.a, *system.receivers):
        stats = await worker.call("stats")
        parts.append(f"{worker.name} {sum(p['state'] == 'open' for p in stats['peers'])}")
        parts[-1] += " open link(s)"
    return "gravpy links: " + ", ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = options(__doc__, processes=True)
    parser.add_argument(
        "--transport",
        choices=("ws", "tcp", "http"),
        default="ws",
        help="gravpy's peer transport (default ws: WebSocket)",
    )
    parser.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="the event loop of every process, gravpy's and nats-py's (uvloop: the speed extra)",
    )
    args = parser.parse_args(argv)
    os.environ["GRAVPY_BENCH_LOOP"] = args.loop  # mesh_node.py reads it
    return run_benchmark(run, args)


if __name__ == "__main__":
    sys.exit(main())
