"""Transport benchmark: node-to-node throughput and request-reply over HTTP and WebSocket, same run.

Run from the repository root (standard library and gravpy only)::

    .venv/bin/python benchmarks/bench_transports.py              # full run (about 15 s)
    .venv/bin/python benchmarks/bench_transports.py --quick      # smaller sizes, a smoke test
    .venv/bin/python benchmarks/bench_transports.py --json results.json

Layout, the same for both transports, and the same as ``bench_mesh.py``'s gravpy side: process A
publishes and requests, process B subscribes and responds (``benchmarks/mesh_node.py gravpy
--transport ws|http``, driven over stdin/stdout by this script). A and B are full nodes on
127.0.0.1, port 0, each with the one transport under test; A dials B. Both pairs run side by side
for the whole run; every process is started here and stopped here, whatever happens.

Measured, with the same payloads (128 B: an 8-byte sequence number, then random bytes):

1. throughput: A publishes 100,000 messages with ``await pod.publish(msg)``, B counts them;
   messages/s = received / (last arrival on B - publish start on A), both on CLOCK_MONOTONIC.
   After a warm-up per transport, 3 runs each, alternating WebSocket and HTTP; the ratio is of the
   medians. A run is valid only if every message arrived, in order, with no drop counted anywhere.
2. sequential request-reply: 2,000 requests one after another (after 200 warm-up) from A to a
   responder on B, ``await pod.send(msg).wait_until(2.0)``; p50/p99 of the round trip in
   microseconds. 3 runs each, alternating; the ratio is of the medians.

Exit status 1 if a check fails (a lost, duplicated, reordered or wrong message): such a figure is
not valid. 2 if a node process fails. See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from _common import Machine, median, options, say, sizes_for, table
from _pairs import (
    QUICK_PAIRS,
    LatencyRun,
    Pair,
    PairSizes,
    ThroughputRun,
    latency_run,
    log_directory,
    responding,
    run_benchmark,
    running_pairs,
    throughput_rounds,
    throughput_table,
)

TRANSPORTS = ("websocket", "http")  # the order of every alternation
_NODE_ARG = {"websocket": "ws", "http": "http"}  # mesh_node.py --transport


Sizes = PairSizes
FULL = Sizes(runs=3)
QUICK = Sizes(**QUICK_PAIRS)


@dataclass
class Ratio:
    metric: str
    websocket: float
    http: float
    better: str  # "higher" (a rate) or "lower" (a latency)

    @property
    def ratio(self) -> float:
        """HTTP / WebSocket."""
        return self.http / self.websocket if self.websocket else float("nan")


@dataclass
class Report:
    mode: str
    machine: Machine
    sizes: dict[str, int]
    endpoints: dict[str, str] = field(default_factory=dict)
    throughput: list[ThroughputRun] = field(default_factory=list)
    latency: list[LatencyRun] = field(default_factory=list)
    ratios: list[Ratio] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


# -- measurements ----------------------------------------------------------------------------------


async def measure(report: Report, sizes: Sizes, pairs: dict[str, Pair]) -> None:
    await throughput_rounds(report, sizes, pairs, TRANSPORTS)
    async with contextlib.AsyncExitStack() as stack:
        for pair in pairs.values():
            await stack.enter_async_context(responding(pair))
        for run in range(1, sizes.runs + 1):
            for transport in TRANSPORTS:
                latency = await latency_run(pairs[transport], run, sizes)
                report.latency.append(latency)
                say(
                    f"  request-reply run {run} {transport:9}: p50 {latency.p50_us:,.0f} us, "
                    f"p99 {latency.p99_us:,.0f} us"
                )
                if not latency.ok:
                    report.failures.append(
                        f"{transport} request-reply run {run}: {latency.wrong_replies} wrong "
                        f"replies of {latency.count}"
                    )


def ratios(report: Report) -> list[Ratio]:
    """Medians of the valid runs per transport, HTTP over WebSocket."""

    out: list[Ratio] = []
    tput = {
        t: [r.msgs_per_s for r in report.throughput if r.system == t and r.ok] for t in TRANSPORTS
    }
    out.append(
        Ratio(
            "throughput msgs/s (median)", median(tput["websocket"]), median(tput["http"]), "higher"
        )
    )
    for label, attr in (
        ("request p50 us (median)", "p50_us"),
        ("request p99 us (median)", "p99_us"),
    ):
        lat = {
            t: [getattr(r, attr) for r in report.latency if r.system == t and r.ok]
            for t in TRANSPORTS
        }
        out.append(Ratio(label, median(lat["websocket"]), median(lat["http"]), "lower"))
    return out


# -- output ----------------------------------------------------------------------------------------


def print_report(report: Report, sizes: Sizes) -> None:
    say(
        "",
        f"Throughput: {sizes.messages:,} messages x {sizes.message_bytes} B, A -> B, "
        f"{sizes.runs} runs per transport (alternating) after a {sizes.warmup_messages:,}-message "
        "warm-up",
        "  msgs/s = received / (last arrival on B - publish start on A)",
    )
    columns = ["run", "received", "in order", "dropped A/B", "total s", "msgs/s", "CPU s A/B"]
    say(throughput_table(report.throughput, "transport", [*columns, "check"]))
    say(
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
    say(table([*headers, "check"], rows))
    say("", "HTTP vs WebSocket (ratio = HTTP / WebSocket; valid runs only)")
    rows = [
        [
            r.metric,
            f"{r.websocket:,.0f}",
            f"{r.http:,.0f}",
            f"{r.ratio:.2f}x",
            f"{r.better} is better",
        ]
        for r in report.ratios
    ]
    say(table(["metric", "websocket", "http", "ratio", ""], rows))


# -- main ------------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> Report:
    sizes = sizes_for(args, FULL, QUICK)
    report = Report(
        mode="quick" if args.quick else "full", machine=Machine.here(), sizes=asdict(sizes)
    )
    say(f"gravpy transport benchmark ({report.mode}): {report.machine.describe()}")
    specs = {t: ["gravpy", "--transport", _NODE_ARG[t]] for t in TRANSPORTS}
    with log_directory(args.logs, "bench_transports_") as log_dir:
        async with running_pairs(specs, log_dir) as pairs:
            for transport, pair in pairs.items():
                report.endpoints[transport] = pair.b.hello["endpoint"]
                say(f"{transport}: A -> B {pair.b.hello['endpoint']}")
            await measure(report, sizes, pairs)
            report.ratios = ratios(report)
            print_report(report, sizes)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    return run_benchmark(run, options(__doc__, processes=True).parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
