"""Benchmarks of gravpy's in-process bus: fan-out, request-reply, pod memory and the codec.

Run from the repository root::

    .venv/bin/python benchmarks/bench_bus.py            # full run (about a minute)
    .venv/bin/python benchmarks/bench_bus.py --quick    # smaller sizes, a smoke test
    .venv/bin/python benchmarks/bench_bus.py --json results.json
    .venv/bin/python benchmarks/bench_bus.py --profile sync   # cProfile of one fan-out run
    .venv/bin/python benchmarks/bench_bus.py --timings  # with Grav(timings=True): histograms kept

Every figure is checked, not only timed: the fan-out verifies that each receiver got every message in
the order it was sent and that the bus counted no drop, the request-reply checks every reply. The
process exits with status 1 if any check fails (a benchmark that loses messages is worthless). Missing
a performance target is reported but is not a failure. See ``benchmarks/README.md``.
"""

from __future__ import annotations

import asyncio
import cProfile
import gc
import io
import os
import pstats
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from _common import Machine, best_rate, count, finish, options, say, table

import gravpy
from gravpy import Grav, Message, Pod

HandlerKind = Literal["sync", "async"]
HANDLER_KINDS: tuple[HandlerKind, ...] = ("sync", "async")
SECTIONS = ("fanout", "reqrep", "memory", "codec")

FANOUT_TARGET = 1_000_000  # deliveries/s that must be reached
FANOUT_AIM = 2_000_000  # deliveries/s we aim for
POD_MEMORY_TARGET = 3_000  # bytes per idle pod ("under 3 KB")
CODEC_REFERENCE = 500_000  # raw msgpack envelope pack+unpack/s, development machine (README)
MESSAGE_SIZE = 128

FANOUT_TYPE = "bench.fanout"
REQUEST_TYPE = "bench.request"
REPLY_TYPE = "bench.reply"
NODE_OPTIONS: dict[str, Any] = {}  # Grav options of the fan-out and request-reply nodes


@dataclass(frozen=True)
class Sizes:
    """How big each benchmark is (``--quick`` shrinks them)."""

    fanout_messages: int = 100_000
    fanout_receivers: int = 10
    fanout_runs: int = 3
    requests: int = 1_000
    request_warmup: int = 100
    idle_pods: int = 10_000
    codec_ops: int = 100_000
    codec_runs: int = 3


QUICK = Sizes(
    fanout_messages=10_000,
    requests=200,
    request_warmup=20,
    idle_pods=1_000,
    codec_ops=20_000,
)


# -- results ---------------------------------------------------------------------------------------


@dataclass
class FanoutRun:
    seconds: float
    deliveries_per_s: float
    delivered: int  # handler calls that recorded a message, all receivers together
    dropped: int  # overflow + failed + closed, as counted by the bus
    handler_failures: int
    receivers_complete_in_order: int  # receivers whose record equals the sent sequence

    def ok(self, receivers: int) -> bool:
        return (
            self.dropped == 0
            and self.handler_failures == 0
            and self.receivers_complete_in_order == receivers
        )


@dataclass
class FanoutResult:
    handler: HandlerKind
    messages: int
    receivers: int
    message_bytes: int
    runs: list[FanoutRun]
    best_deliveries_per_s: float
    median_deliveries_per_s: float
    ratio_to_target: float  # best / FANOUT_TARGET
    ratio_to_aim: float  # best / FANOUT_AIM
    ok: bool


@dataclass
class RequestReplyResult:
    responder: HandlerKind
    requests: int
    warmup: int
    p50_us: float
    p90_us: float
    p99_us: float
    mean_us: float
    max_us: float
    requests_per_s: float
    ok: bool


@dataclass
class PodMemoryResult:
    handler: Literal["none", "sync"]
    pods: int
    bytes_total: int
    bytes_per_pod: float
    target_bytes: int
    within_target: bool


@dataclass
class CodecResult:
    operation: str
    ops: int
    best_ops_per_s: float
    us_per_op: float


@dataclass
class Report:
    mode: str
    machine: Machine
    gravpy: str
    fanout: list[FanoutResult] = field(default_factory=list)
    request_reply: list[RequestReplyResult] = field(default_factory=list)
    pod_memory: list[PodMemoryResult] = field(default_factory=list)
    codec: list[CodecResult] = field(default_factory=list)
    codec_marshalled_bytes: int = 0
    failures: list[str] = field(default_factory=list)


# -- 1. fan-out ------------------------------------------------------------------------------------


def _recorder(kind: HandlerKind, log: list[str]) -> Callable[[Message], Any]:
    """A handler that records each message's uuid (str objects are not tracked by the GC)."""
    append = log.append
    if kind == "sync":

        def on_message(msg: Message) -> None:
            append(msg.uuid)

        return on_message

    async def on_message_async(msg: Message) -> None:
        append(msg.uuid)

    return on_message_async


async def _fanout_once(kind: HandlerKind, messages: int, receivers: int) -> FanoutRun:
    payload = os.urandom(MESSAGE_SIZE)
    async with Grav(**NODE_OPTIONS) as grav:
        sender = grav.connect()
        logs: list[list[str]] = []
        pods: list[Pod] = []
        for _ in range(receivers):
            log: list[str] = []
            pod = grav.connect()
            pod.on(_recorder(kind, log))
            logs.append(log)
            pods.append(pod)
        sent: list[str] = []
        record = sent.append
        publish = sender.publish
        new = Message.new
        gc.collect()

        start = time.perf_counter()
        for _ in range(messages):
            msg = new(FANOUT_TYPE, payload)
            record(msg.uuid)
            await publish(msg)
        # Let the receivers finish; stop early if nothing is left to deliver (messages were lost).
        idle_turns = 0
        while any(len(log) < messages for log in logs):
            await asyncio.sleep(0)
            if all(pod.statistics().inbox == 0 for pod in pods):
                idle_turns += 1
                if idle_turns > 100:
                    break
        elapsed = time.perf_counter() - start

        stats = grav.statistics()
        delivered = sum(len(log) for log in logs)
        return FanoutRun(
            seconds=elapsed,
            deliveries_per_s=delivered / elapsed,
            delivered=delivered,
            dropped=stats.dropped_overflow + stats.dropped_failed + stats.dropped_closed,
            handler_failures=stats.handler_failures,
            receivers_complete_in_order=sum(1 for log in logs if log == sent),
        )


def bench_fanout(kind: HandlerKind, sizes: Sizes) -> FanoutResult:
    runs = [
        asyncio.run(_fanout_once(kind, sizes.fanout_messages, sizes.fanout_receivers))
        for _ in range(sizes.fanout_runs)
    ]
    rates = [r.deliveries_per_s for r in runs]
    best = max(rates)
    return FanoutResult(
        handler=kind,
        messages=sizes.fanout_messages,
        receivers=sizes.fanout_receivers,
        message_bytes=MESSAGE_SIZE,
        runs=runs,
        best_deliveries_per_s=best,
        median_deliveries_per_s=statistics.median(rates),
        ratio_to_target=best / FANOUT_TARGET,
        ratio_to_aim=best / FANOUT_AIM,
        ok=all(r.ok(sizes.fanout_receivers) for r in runs),
    )


# -- 2. request-reply ------------------------------------------------------------------------------


async def _request_reply(kind: HandlerKind, requests: int, warmup: int) -> tuple[list[float], bool]:
    """Latencies in microseconds of ``requests`` sequential requests, and whether all replies matched."""
    payload = os.urandom(MESSAGE_SIZE)
    async with Grav(**NODE_OPTIONS) as grav:
        responder = grav.connect()

        def answer(msg: Message) -> None:
            responder.reply_to(msg, Message.new(REPLY_TYPE, msg.data))

        async def answer_async(msg: Message) -> None:
            responder.reply_to(msg, Message.new(REPLY_TYPE, msg.data))

        responder.on_type(REQUEST_TYPE, answer if kind == "sync" else answer_async)
        requester = grav.connect()
        send = requester.send
        new = Message.new
        clock = time.perf_counter_ns
        samples: list[float] = []
        ok = True
        gc.collect()
        for i in range(warmup + requests):
            t0 = clock()
            request = new(REQUEST_TYPE, payload)
            reply = await send(request).wait_until(2.0)
            t1 = clock()
            if i >= warmup:
                samples.append((t1 - t0) / 1_000)
            if reply.reply_to != request.uuid or reply.data != payload:
                ok = False
        return samples, ok


def bench_request_reply(kind: HandlerKind, sizes: Sizes) -> RequestReplyResult:
    samples, ok = asyncio.run(_request_reply(kind, sizes.requests, sizes.request_warmup))
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return RequestReplyResult(
        responder=kind,
        requests=sizes.requests,
        warmup=sizes.request_warmup,
        p50_us=cuts[49],
        p90_us=cuts[89],
        p99_us=cuts[98],
        mean_us=statistics.fmean(samples),
        max_us=max(samples),
        requests_per_s=1e6 / statistics.fmean(samples),
        ok=ok and len(samples) == sizes.requests,
    )


# -- 3. idle pod memory ----------------------------------------------------------------------------


def _noop(msg: Message) -> None:
    """The shared sync handler of the memory benchmark (one function object for every pod)."""


async def _pod_memory(pods: int, with_handler: bool) -> int:
    """Bytes tracemalloc sees allocated (and still held) by connecting ``pods`` pods."""
    async with Grav(**NODE_OPTIONS) as grav:
        grav.connect()  # the first connect binds the loop; not counted
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(pods):
                pod = grav.connect()  # the bus keeps every pod; no list of ours is counted
                if with_handler:
                    pod.on(_noop)
            del pod
            gc.collect()
            after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        assert len(grav.bus.pods()) == pods + 1
        return after - before


def bench_pod_memory(with_handler: bool, sizes: Sizes) -> PodMemoryResult:
    total = asyncio.run(_pod_memory(sizes.idle_pods, with_handler))
    per_pod = total / sizes.idle_pods
    return PodMemoryResult(
        handler="sync" if with_handler else "none",
        pods=sizes.idle_pods,
        bytes_total=total,
        bytes_per_pod=per_pod,
        target_bytes=POD_MEMORY_TARGET,
        within_target=per_pod < POD_MEMORY_TARGET,
    )


# -- 4. codec --------------------------------------------------------------------------------------


def bench_codec(sizes: Sizes) -> tuple[list[CodecResult], int]:
    payload = os.urandom(MESSAGE_SIZE)
    msg = Message.new(FANOUT_TYPE, payload)
    raw = msg.marshal()
    if Message.unmarshal(raw) != msg:
        raise AssertionError("Message.unmarshal(msg.marshal()) != msg")
    new, marshal, unmarshal = Message.new, msg.marshal, Message.unmarshal
    operations: list[tuple[str, Callable[[], object]]] = [
        ("Message.new", lambda: new(FANOUT_TYPE, payload)),
        ("Message.marshal", marshal),
        ("Message.unmarshal", lambda: unmarshal(raw)),
        ("marshal + unmarshal", lambda: unmarshal(marshal())),
    ]
    results = []
    for name, op in operations:
        rate = best_rate(op, sizes.codec_ops, sizes.codec_runs)
        results.append(CodecResult(name, sizes.codec_ops, rate, 1e6 / rate))
    return results, len(raw)


# -- output ----------------------------------------------------------------------------------------


def print_fanout(results: list[FanoutResult], sizes: Sizes) -> None:
    say(
        "",
        f"1. Fan-out: 1 sender -> {sizes.fanout_receivers} pods, {sizes.fanout_messages:,} messages "
        f"x {MESSAGE_SIZE} B, sender awaits pod.publish(msg)",
        f"   Message.new in the timed loop; best and median of {sizes.fanout_runs} runs; "
        f"target {count(FANOUT_TARGET)}/s, aim {count(FANOUT_AIM)}/s",
    )
    rows = []
    for r in results:
        complete = min(run.receivers_complete_in_order for run in r.runs)
        rows.append(
            [
                r.handler,
                count(r.best_deliveries_per_s),
                count(r.median_deliveries_per_s),
                f"{r.ratio_to_target:.2f}x",
                f"{r.ratio_to_aim:.2f}x",
                f"{min(run.seconds for run in r.runs):.3f}",
                str(max(run.dropped for run in r.runs)),
                f"{complete}/{r.receivers}",
                "ok" if r.ok else "FAIL",
            ]
        )
    say(
        table(
            [
                "handlers",
                "best deliv/s",
                "median deliv/s",
                "vs 1M",
                "vs 2M",
                "best s",
                "drops",
                "all in order",
                "check",
            ],
            rows,
        )
    )


def print_request_reply(results: list[RequestReplyResult], sizes: Sizes) -> None:
    say(
        "",
        f"2. Request-reply: {sizes.requests:,} sequential `await pod.send(msg).wait_until(2.0)` "
        f"({sizes.request_warmup} warm-up not counted), responder replies in its handler",
    )
    rows = [
        [
            r.responder,
            f"{r.p50_us:.1f}",
            f"{r.p90_us:.1f}",
            f"{r.p99_us:.1f}",
            f"{r.mean_us:.1f}",
            f"{r.max_us:.1f}",
            count(r.requests_per_s),
            "ok" if r.ok else "FAIL",
        ]
        for r in results
    ]
    say(
        table(
            ["responder", "p50 us", "p90 us", "p99 us", "mean us", "max us", "req/s", "check"], rows
        )
    )


def print_pod_memory(results: list[PodMemoryResult], sizes: Sizes) -> None:
    say(
        "",
        f"3. Idle pods: {sizes.idle_pods:,} pods connected, tracemalloc traced-memory difference; "
        f"target < {count(POD_MEMORY_TARGET)} B/pod",
    )
    rows = [
        [
            r.handler,
            count(r.bytes_total),
            count(r.bytes_per_pod),
            f"{r.bytes_per_pod / r.target_bytes:.2f}",
            "yes" if r.within_target else "NO",
        ]
        for r in results
    ]
    say(table(["handler", "bytes", "bytes/pod", "of target", "within"], rows))


def print_codec(results: list[CodecResult], marshalled: int, sizes: Sizes) -> None:
    say(
        "",
        f"4. Codec: {MESSAGE_SIZE} B of data ({marshalled} B marshalled), best of "
        f"{sizes.codec_runs} x {sizes.codec_ops:,}; reference ~{count(CODEC_REFERENCE)}/s "
        "envelope pack+unpack (DESIGN 7)",
    )
    rows = [
        [
            r.operation,
            count(r.best_ops_per_s),
            f"{r.us_per_op:.2f}",
            f"{r.best_ops_per_s / CODEC_REFERENCE:.2f}x" if "+" in r.operation else "",
        ]
        for r in results
    ]
    say(table(["operation", "ops/s", "us/op", "vs ref"], rows))


# -- profiling -------------------------------------------------------------------------------------


def profile_fanout(kind: HandlerKind, sizes: Sizes, top: int) -> None:
    """One fan-out run under cProfile; print the top functions by own time and by cumulative time."""
    coro: Coroutine[Any, Any, FanoutRun] = _fanout_once(
        kind, sizes.fanout_messages, sizes.fanout_receivers
    )
    profiler = cProfile.Profile()
    profiler.enable()
    run = asyncio.run(coro)
    profiler.disable()
    say(
        f"cProfile of one fan-out run ({kind} handlers): {run.deliveries_per_s:,.0f} deliveries/s "
        "under the profiler (slower than unprofiled)",
        "",
    )
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).strip_dirs().sort_stats(order).print_stats(top)
        say(out.getvalue())


# -- main ------------------------------------------------------------------------------------------


def run_sections(report: Report, sections: set[str], sizes: Sizes) -> None:
    """Run the chosen sections in order, print each table, and record results and failures."""
    if "fanout" in sections:
        report.fanout = [bench_fanout(kind, sizes) for kind in HANDLER_KINDS]
        print_fanout(report.fanout, sizes)
        report.failures += [
            f"fan-out with {r.handler} handlers lost, dropped or reordered messages: {r.runs}"
            for r in report.fanout
            if not r.ok
        ]
    if "reqrep" in sections:
        report.request_reply = [bench_request_reply(kind, sizes) for kind in HANDLER_KINDS]
        print_request_reply(report.request_reply, sizes)
        report.failures += [
            f"request-reply with a {r.responder} responder got a wrong or missing reply"
            for r in report.request_reply
            if not r.ok
        ]
    if "memory" in sections:
        report.pod_memory = [bench_pod_memory(h, sizes) for h in (False, True)]
        print_pod_memory(report.pod_memory, sizes)
    if "codec" in sections:
        report.codec, report.codec_marshalled_bytes = bench_codec(sizes)
        print_codec(report.codec, report.codec_marshalled_bytes, sizes)


def main(argv: Sequence[str] | None = None) -> int:
    parser = options(__doc__)
    parser.add_argument(
        "--only",
        choices=SECTIONS,
        action="append",
        help="run only this section (repeatable)",
    )
    parser.add_argument(
        "--profile",
        choices=HANDLER_KINDS,
        help="instead of benchmarking, run one fan-out under cProfile and print the top functions",
    )
    parser.add_argument("--top", type=int, default=25, help="functions shown by --profile")
    parser.add_argument(
        "--timings",
        action="store_true",
        help="nodes keep request and handler histograms (Grav(timings=True), as gravd does)",
    )
    args = parser.parse_args(argv)
    if args.timings:
        NODE_OPTIONS["timings"] = True
    sizes = QUICK if args.quick else Sizes()

    if args.profile:
        profile_fanout(args.profile, sizes, args.top)
        return 0

    report = Report(
        mode="quick" if args.quick else "full",
        machine=Machine.here(),
        gravpy=gravpy.__version__,
    )
    say(
        f"gravpy {report.gravpy} bus benchmarks ({report.mode}): {report.machine.describe()}, "
        "asyncio default loop"
    )
    run_sections(report, set(args.only or SECTIONS), sizes)
    return finish(report, args.json)


if __name__ == "__main__":
    sys.exit(main())
