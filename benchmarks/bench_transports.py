"""Transport benchmark: node-to-node throughput and request-reply over WebSocket, HTTP and TCP, same run.

Run from the repository root (standard library and gravpy only)::

    .venv/bin/python benchmarks/bench_transports.py              # full run (about 15 s)
    .venv/bin/python benchmarks/bench_transports.py --quick      # smaller sizes, a smoke test
    .venv/bin/python benchmarks/bench_transports.py --json results.json
    .venv/bin/python benchmarks/bench_transports.py --loop uvloop   # every process on uvloop

Layout, the same for every transport, and the same as ``bench_mesh.py``'s gravpy side: process A
publishes and requests, process B subscribes and responds (``benchmarks/mesh_node.py gravpy
--transport ws|http|tcp``, driven over stdin/stdout by this script). A and B are full nodes on
127.0.0.1, port 0, each with the one transport under test; A dials B. Both pairs run side by side
for the whole run (three pairs: four of the six processes idle at any moment); every process is started here and stopped here, whatever happens.

Measured, with the same payloads (128 B: an 8-byte sequence number, then random bytes):

1. throughput: A publishes 100,000 messages with ``await pod.publish(msg)``, B counts them;
   messages/s = received / (last arrival on B - publish start on A), both on CLOCK_MONOTONIC.
   After a warm-up per transport, 3 runs each, alternating WebSocket, HTTP and TCP; the ratios
   (each transport over WebSocket) are of the medians. A run is valid only if every message arrived, in order, with no drop counted anywhere.
2. sequential request-reply: 2,000 requests one after another (after 200 warm-up) from A to a
   responder on B, ``await pod.send(msg).wait_until(2.0)``; p50/p99 of the round trip in
   microseconds. 3 runs each, alternating; the ratio is of the medians.

Exit status 1 if a check fails (a lost, duplicated, reordered or wrong message): such a figure is
not valid. 2 if a node process fails. See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench_mesh import (
    REPLY_TYPE,
    REQUEST_TYPE,
    BenchError,
    Pair,
    ThroughputRun,
    Usage,
    Worker,
    _gc_reset,
    _print,
    _table,
    _usage,
    throughput_rounds,
)

TRANSPORTS = ("websocket", "http", "tcp")  # the order of every alternation
_NODE_ARG = {"websocket": "ws", "http": "http", "tcp": "tcp"}  # mesh_node.py --transport


@dataclass(frozen=True)
class Sizes:
    """How big each measurement is (``--quick`` shrinks them)."""

    messages: int = 100_000
    message_bytes: int = 128
    runs: int = 3
    warmup_messages: int = 10_000
    requests: int = 2_000
    request_warmup: int = 200


QUICK = Sizes(messages=10_000, runs=1, warmup_messages=2_000, requests=300, request_warmup=50)


@dataclass
class LatencyRun:
    system: str  # the transport
    run: int
    count: int
    p50_us: float
    p99_us: float
    mean_us: float
    max_us: float
    wrong_replies: int
    usage: Usage

    @property
    def ok(self) -> bool:
        return self.wrong_replies == 0 and self.count > 0


@dataclass
class Ratio:
    metric: str
    medians: dict[str, float]  # per transport
    better: str  # "higher" (a rate) or "lower" (a latency)

    def ratio(self, transport: str) -> float:
        """``transport`` / WebSocket."""
        base = self.medians["websocket"]
        return self.medians[transport] / base if base else float("nan")


@dataclass
class Report:
    mode: str
    python: str
    platform: str
    cpus: int | None
    sizes: dict[str, int]
    endpoints: dict[str, str] = field(default_factory=dict)
    throughput: list[ThroughputRun] = field(default_factory=list)
    latency: list[LatencyRun] = field(default_factory=list)
    ratios: list[Ratio] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


# -- processes -------------------------------------------------------------------------------------


async def start_pairs(log_dir: Path) -> dict[str, Pair]:
    """For each transport, B listening and A linked to it; every worker stopped if one fails."""
    pairs: dict[str, Pair] = {}
    workers: list[Worker] = []
    try:
        for transport in TRANSPORTS:
            args = ["gravpy", "--transport", _NODE_ARG[transport]]
            b = await Worker.start(f"{transport}-B", args, log_dir)
            workers.append(b)
            a = await Worker.start(f"{transport}-A", args, log_dir)
            workers.append(a)
            await a.call("connect", endpoint=b.hello["endpoint"])
            pairs[transport] = Pair(transport, a, b)
    except BaseException:
        for worker in reversed(workers):
            await worker.stop()
        raise
    return pairs


# -- measurements ----------------------------------------------------------------------------------


async def latency_run(pair: Pair, run: int, sizes: Sizes) -> LatencyRun:
    """One pass of sequential requests from A to B's responder."""
    await pair.a.call("await_interest", type=REQUEST_TYPE)
    await _gc_reset(pair)
    seq = await pair.a.call(
        "request_seq",
        type=REQUEST_TYPE,
        n=sizes.requests,
        warmup=sizes.request_warmup,
        size=sizes.message_bytes,
    )
    return LatencyRun(
        system=pair.system,
        run=run,
        count=seq["count"],
        p50_us=seq["p50_us"],
        p99_us=seq["p99_us"],
        mean_us=seq["mean_us"],
        max_us=seq["max_us"],
        wrong_replies=seq["wrong_replies"],
        usage=await _usage(pair),
    )


async def measure(report: Report, sizes: Sizes, pairs: dict[str, Pair]) -> None:
    await throughput_rounds(report, sizes, pairs, TRANSPORTS)
    for pair in pairs.values():
        await pair.b.call("respond", type=REQUEST_TYPE, reply_type=REPLY_TYPE)
    try:
        for run in range(1, sizes.runs + 1):
            for transport in TRANSPORTS:
                latency = await latency_run(pairs[transport], run, sizes)
                report.latency.append(latency)
                _print(
                    f"  request-reply run {run} {transport:9}: p50 {latency.p50_us:,.0f} us, "
                    f"p99 {latency.p99_us:,.0f} us"
                )
                if not latency.ok:
                    report.failures.append(
                        f"{transport} request-reply run {run}: {latency.wrong_replies} wrong "
                        f"replies of {latency.count}"
                    )
    finally:
        for pair in pairs.values():
            await pair.b.call("unrespond")


def ratios(report: Report) -> list[Ratio]:
    """Medians of the valid runs per transport (each compared with WebSocket when printed)."""

    def median(values: list[float]) -> float:
        return statistics.median(values) if values else float("nan")

    out: list[Ratio] = []
    tput = {
        t: [r.msgs_per_s for r in report.throughput if r.system == t and r.ok] for t in TRANSPORTS
    }
    out.append(
        Ratio("throughput msgs/s (median)", {t: median(v) for t, v in tput.items()}, "higher")
    )
    for label, attr in (
        ("request p50 us (median)", "p50_us"),
        ("request p99 us (median)", "p99_us"),
    ):
        lat = {
            t: [getattr(r, attr) for r in report.latency if r.system == t and r.ok]
            for t in TRANSPORTS
        }
        out.append(Ratio(label, {t: median(v) for t, v in lat.items()}, "lower"))
    return out


# -- output ----------------------------------------------------------------------------------------


def print_report(report: Report, sizes: Sizes) -> None:
    _print(
        "",
        f"Throughput: {sizes.messages:,} messages x {sizes.message_bytes} B, A -> B, "
        f"{sizes.runs} runs per transport (alternating) after a {sizes.warmup_messages:,}-message "
        "warm-up",
        "  msgs/s = received / (last arrival on B - publish start on A)",
    )
    rows = [
        [
            r.system,
            str(r.run),
            f"{r.received:,}/{r.published:,}",
            "yes" if r.in_order else f"NO ({r.gaps} gaps, {r.backwards} back)",
            f"{r.dropped_sender}/{r.dropped_receiver}",
            f"{r.seconds:.3f}",
            f"{r.msgs_per_s:,.0f}",
            f"{r.usage.cpu_a:.2f}/{r.usage.cpu_b:.2f}",
            "ok" if r.ok else "INVALID",
        ]
        for r in report.throughput
    ]
    headers = ["transport", "run", "received", "in order", "dropped A/B", "total s", "msgs/s"]
    _print(_table([*headers, "CPU s A/B", "check"], rows))
    _print(
        "",
        f"Sequential request-reply: {sizes.requests:,} requests after {sizes.request_warmup} "
        f"warm-up, {sizes.runs} runs per transport (alternating)",
    )
    rows = [
        [
            r.system,
            str(r.run),
            f"{r.p50_us:,.0f}",
            f"{r.p99_us:,.0f}",
            f"{r.mean_us:,.0f}",
            f"{r.max_us:,.0f}",
            f"{r.usage.cpu_a / (r.count + sizes.request_warmup) * 1e6:.0f}/"
            f"{r.usage.cpu_b / (r.count + sizes.request_warmup) * 1e6:.0f}",
            "ok" if r.ok else "INVALID",
        ]
        for r in report.latency
    ]
    headers = ["transport", "run", "p50 us", "p99 us", "mean us", "max us", "CPU us/req A/B"]
    _print(_table([*headers, "check"], rows))
    others = [t for t in TRANSPORTS if t != "websocket"]
    _print("", "Each transport vs WebSocket (ratio = transport / WebSocket; valid runs only)")
    rows = [
        [
            r.metric,
            *(f"{r.medians[t]:,.0f}" for t in TRANSPORTS),
            *(f"{r.ratio(t):.2f}x" for t in others),
            f"{r.better} is better",
        ]
        for r in report.ratios
    ]
    headers = [*TRANSPORTS, *(f"{t}/ws" for t in others)]
    _print(_table(["metric", *headers, ""], rows))
    if report.failures:
        _print("", "CHECKS FAILED (these figures are not valid):", *report.failures)


# -- main ------------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> Report:
    sizes = QUICK if args.quick else Sizes()
    if args.messages:
        sizes = Sizes(**{**asdict(sizes), "messages": args.messages})
    if args.runs:
        sizes = Sizes(**{**asdict(sizes), "runs": args.runs})
    report = Report(
        mode=("quick" if args.quick else "full") + f", {args.loop}",
        python=sys.version.split()[0],
        platform=platform.platform(),
        cpus=os.cpu_count(),
        sizes=asdict(sizes),
    )
    _print(
        f"gravpy transport benchmark ({report.mode}): Python {report.python}, "
        f"{report.platform}, {report.cpus} CPUs"
    )
    with tempfile.TemporaryDirectory(prefix="bench_transports_") as tmp:
        log_dir = Path(args.logs) if args.logs else Path(tmp)
        log_dir.mkdir(parents=True, exist_ok=True)
        pairs: dict[str, Pair] = {}
        try:
            pairs = await start_pairs(log_dir)
            for transport, pair in pairs.items():
                report.endpoints[transport] = pair.b.hello["endpoint"]
                _print(f"{transport}: A -> B {pair.b.hello['endpoint']}")
            await measure(report, sizes, pairs)
            report.ratios = ratios(report)
            print_report(report, sizes)
        finally:
            for pair in pairs.values():
                await pair.a.stop()
                await pair.b.stop()
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke test)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    parser.add_argument("--messages", type=int, help="messages per throughput run")
    parser.add_argument("--runs", type=int, help="runs per transport")
    parser.add_argument("--logs", metavar="DIR", help="keep the processes' logs in DIR")
    parser.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="the event loop of every node process (uvloop: pip install 'gravpy[speed]')",
    )
    args = parser.parse_args(argv)
    os.environ["GRAVPY_BENCH_LOOP"] = args.loop  # mesh_node.py reads it
    try:
        report = asyncio.run(run(args))
    except BenchError as exc:
        _print(f"benchmark error: {exc}")
        return 2
    if args.json:
        data = asdict(report)
        Path(args.json).write_text(json.dumps(data, indent=2) + "\n")
        _print(f"results written to {args.json}")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
