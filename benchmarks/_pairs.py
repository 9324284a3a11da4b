"""Pairs of ``mesh_node.py`` processes, driven over their stdin/stdout, and the runs that
``bench_mesh.py`` and ``bench_transports.py`` both make with them.

A pair is process A (publishes, requests) and process B (subscribes, responds). A ``Worker`` is one
such process: it is started with ``python benchmarks/mesh_node.py ARGS``, says hello with one JSON
line, then answers each command (one JSON line) with one JSON line; whatever else it prints goes to
its log file. ``running_pairs`` starts the pairs and stops every worker it started on the way out
(asked to quit, killed if it does not), also when a later one fails to start. A worker that fails
or stays silent raises ``BenchError`` with the tail of its log; ``run_benchmark`` turns that into
exit status 2.

A throughput run subscribes B, waits until A sees B's interest, lets A publish and B collect, and
checks the run: every message arrived, in order, with no drop counted on either side. A latency
run times A's sequential requests to B while B is ``responding``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from _common import finish, say, table

NODE_SCRIPT = Path(__file__).resolve().with_name("mesh_node.py")

TPUT_TYPE = "bench.tput"
REQUEST_TYPE = "bench.req"
REPLY_TYPE = "bench.rep"

CALL_TIMEOUT = 300.0  # seconds for one command to a node process
START_TIMEOUT = 15.0


class BenchError(Exception):
    """A node process failed or did not answer."""


@dataclass(frozen=True)
class PairSizes:
    """How big the measurements on a pair are (``QUICK_PAIRS`` shrinks them for ``--quick``)."""

    messages: int = 100_000
    message_bytes: int = 128
    runs: int = 5
    warmup_messages: int = 10_000
    requests: int = 2_000
    request_warmup: int = 200


QUICK_PAIRS: dict[str, int] = {
    "messages": 10_000,
    "runs": 1,
    "warmup_messages": 2_000,
    "requests": 300,
    "request_warmup": 50,
}


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


# -- processes -------------------------------------------------------------------------------------


def tail(path: Path, lines: int = 30) -> str:
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
                f"{self.name} did not answer within {timeout} s\n{tail(self.log)}"
            ) from None
        if not line:
            raise BenchError(
                f"{self.name} exited (status {self.proc.returncode})\n{tail(self.log)}"
            )
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def call(self, cmd: str, *, timeout: float = CALL_TIMEOUT, **args: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"cmd": cmd, **args}) + "\n").encode())
        await self.proc.stdin.drain()
        answer = await self._read(timeout)
        if not answer.get("ok"):
            raise BenchError(f"{self.name}: {answer.get('error')}\n{tail(self.log)}")
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


@dataclass
class LatencyRun:
    """One pass of A's sequential requests to B's responder: the round trip in microseconds."""

    system: str
    run: int
    count: int  # timed requests, after ``warmup`` untimed ones
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
        return self.wrong_replies == 0 and self.count > 0


class ThroughputReport(Protocol):
    """Where ``throughput_rounds`` records its runs and the failed checks."""

    throughput: list[ThroughputRun]
    failures: list[str]


@dataclass
class Pair:
    """Process A (publisher, requester) and process B (subscriber, responder) of one system."""

    system: str
    a: Worker
    b: Worker


# -- measurements ----------------------------------------------------------------------------------


async def gc_reset(pair: Pair) -> None:
    for worker in (pair.a, pair.b):
        await worker.call("gc_reset")


async def take_usage(pair: Pair) -> Usage:
    a = await pair.a.call("gc")
    b = await pair.b.call("gc")
    return Usage(a["cpu_seconds"], b["cpu_seconds"], a["gc_seconds"], b["gc_seconds"])


async def throughput_run(pair: Pair, run: int, n: int, size: int) -> ThroughputRun:
    await pair.b.call("subscribe", type=TPUT_TYPE, n=n)
    await pair.a.call("await_interest", type=TPUT_TYPE)
    await gc_reset(pair)
    pub = await pair.a.call("publish", type=TPUT_TYPE, n=n, size=size)
    got = await pair.b.call("collect", idle=5.0)
    usage = await take_usage(pair)
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


def invalid(r: ThroughputRun) -> str:
    what = "warm-up run" if r.run == 0 else f"run {r.run}"
    return (
        f"{r.system} throughput {what}: {r.received:,}/{r.published:,} received, "
        f"{r.dropped:,} dropped (A's link queue {r.dropped_sender:,}, B's pod {r.dropped_receiver:,}), "
        f"{r.gaps} gaps, {r.backwards} out of order, errors {r.errors}"
    )


async def throughput_rounds(
    report: ThroughputReport, sizes: PairSizes, pairs: dict[str, Pair], names: Sequence[str]
) -> None:
    """A warm-up per pair (not reported, but it must be valid), then ``sizes.runs`` rounds of
    throughput runs alternating between the pairs; invalid runs are recorded as failures."""
    size = sizes.message_bytes
    width = max(len(n) for n in names)
    for name in names:
        warm = await throughput_run(pairs[name], 0, sizes.warmup_messages, size)
        if not warm.ok:
            report.failures.append(invalid(warm))
    for run in range(1, sizes.runs + 1):
        for name in names:
            result = await throughput_run(pairs[name], run, sizes.messages, size)
            report.throughput.append(result)
            say(
                f"  throughput run {run} {name:{width}}: {result.msgs_per_s:>10,.0f} msgs/s  "
                f"({result.received:,}/{result.published:,} received"
                f"{', in order' if result.in_order else ', OUT OF ORDER'}, "
                f"{result.dropped} dropped)"
            )
            if not result.ok:
                report.failures.append(invalid(result))


async def latency_run(pair: Pair, run: int, sizes: PairSizes) -> LatencyRun:
    """One pass of sequential requests from A to B, which must be ``responding``."""
    await gc_reset(pair)
    seq = await pair.a.call(
        "request_seq",
        type=REQUEST_TYPE,
        n=sizes.requests,
        warmup=sizes.request_warmup,
        size=sizes.message_bytes,
    )
    usage = await take_usage(pair)
    fields = ("count", "p50_us", "p90_us", "p99_us", "mean_us", "min_us", "max_us")
    return LatencyRun(
        system=pair.system,
        run=run,
        warmup=sizes.request_warmup,
        wrong_replies=seq["wrong_replies"],
        usage=usage,
        **{name: seq[name] for name in fields},
    )


@contextlib.asynccontextmanager
async def responding(pair: Pair) -> AsyncIterator[None]:
    """B answers each request by echoing its data, and A has seen that interest, until the block
    ends."""
    await pair.b.call("respond", type=REQUEST_TYPE, reply_type=REPLY_TYPE)
    try:
        await pair.a.call("await_interest", type=REQUEST_TYPE)
        yield
    finally:
        await pair.b.call("unrespond")


_THROUGHPUT_CELLS: dict[str, Callable[[ThroughputRun], str]] = {
    "run": lambda r: str(r.run),
    "received": lambda r: f"{r.received:,}/{r.published:,}",
    "in order": lambda r: "yes" if r.in_order else f"NO ({r.gaps} gaps, {r.backwards} back)",
    "dropped A/B": lambda r: f"{r.dropped_sender}/{r.dropped_receiver}",
    "publish s": lambda r: f"{r.publish_seconds:.3f}",
    "total s": lambda r: f"{r.seconds:.3f}",
    "msgs/s": lambda r: f"{r.msgs_per_s:,.0f}",
    "span msgs/s": lambda r: f"{r.span_msgs_per_s:,.0f}",
    "CPU s A/B": lambda r: f"{r.usage.cpu_a:.2f}/{r.usage.cpu_b:.2f}",
    "GC s A/B": lambda r: f"{r.usage.gc_a:.2f}/{r.usage.gc_b:.2f}",
    "check": lambda r: "ok" if r.ok else "INVALID",
}


def throughput_table(runs: Sequence[ThroughputRun], first: str, columns: Sequence[str]) -> str:
    """The runs as a table: the system (headed ``first``), then ``columns`` of _THROUGHPUT_CELLS."""
    rows = [[r.system, *(_THROUGHPUT_CELLS[c](r) for c in columns)] for r in runs]
    return table([first, *columns], rows)


# -- running ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def log_directory(keep: str | None, prefix: str) -> Iterator[Path]:
    """The directory the workers' logs go to: ``keep`` (``--logs``), or a temporary one."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        log_dir = Path(keep) if keep else Path(tmp)
        log_dir.mkdir(parents=True, exist_ok=True)
        yield log_dir


@contextlib.asynccontextmanager
async def running_pairs(
    specs: dict[str, Sequence[str]], log_dir: Path
) -> AsyncIterator[dict[str, Pair]]:
    """For each name, B and then A started as ``mesh_node.py ARGS``, A linked to B if B listens;
    every worker started is stopped on exit, also when a later one fails to start."""
    async with contextlib.AsyncExitStack() as stack:
        pairs: dict[str, Pair] = {}
        for name, args in specs.items():
            b = await _started(stack, f"{name}-B", args, log_dir)
            a = await _started(stack, f"{name}-A", args, log_dir)
            if "endpoint" in b.hello:
                await a.call("connect", endpoint=b.hello["endpoint"])
            pairs[name] = Pair(name, a, b)
        yield pairs


async def _started(
    stack: contextlib.AsyncExitStack, name: str, args: Sequence[str], log_dir: Path
) -> Worker:
    worker = await Worker.start(name, args, log_dir)
    stack.push_async_callback(worker.stop)
    return worker


def run_benchmark(
    run: Callable[[argparse.Namespace], Coroutine[Any, Any, Any]], args: argparse.Namespace
) -> int:
    """Run the script's ``run(args)``; exit status 2 if a worker failed, else ``finish``'s."""
    try:
        report = asyncio.run(run(args))
    except BenchError as exc:
        say(f"benchmark error: {exc}")
        return 2
    return finish(report, args.json)
