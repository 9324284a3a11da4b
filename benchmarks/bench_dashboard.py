"""Dashboard benchmark: what a live tail on ``>`` costs a gravd forwarding ~20,000 msgs/s.

Run from the repository root::

    .venv/bin/python benchmarks/bench_dashboard.py            # full run (about a minute)
    .venv/bin/python benchmarks/bench_dashboard.py --quick    # shorter runs, a smoke test
    .venv/bin/python benchmarks/bench_dashboard.py --json out.json

Layout: one real gravd (a subprocess on 127.0.0.1, port 0, its monitor too). This process holds
two leaves attached to it (``gravpy.connect``): a publisher and a subscriber on ``bench.>``; so
every message goes leaf -> gravd -> leaf and gravd does the routing. With ``tail`` on, this process
also holds one browser's tail open (``GET /v1/tail?pattern=>`` read as server-sent events), so
gravd's tail pod sees every message.

Measured, alternating the two modes (off, tail, off, tail, ...), ``--rounds`` times each:

1. paced: the publisher offers 20,000 msgs/s (batches every 10 ms, ``await pod.publish``) for
   ``--seconds``; we report the rate the subscriber received, and gravd's CPU time per message
   (utime+stime from /proc, in microseconds): at a fixed rate the CPU gravd spends is what the
   tail costs, and 1/cpu-per-message is the ceiling gravd could reach on one core.
2. flat out: the publisher sends ``--count`` messages as fast as ``publish`` lets it; the rate the
   subscriber received is gravd's forwarding throughput.

First, in process: the CPU time per message of a node's bus delivering to one receiver, with and
without a tail viewer on ``>`` (what the tail adds to every message, free of socket and scheduling
noise; compare it with gravd's CPU per message below).

Memory: gravd's VmRSS (from /proc) is sampled every 0.25 s during every run; a final long tail run
(``--soak`` seconds at 20,000 msgs/s) shows whether it keeps growing. Every run checks that the
subscriber got every message once; a lost message makes the figure invalid (exit status 1).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import structlog

import gravpy
from gravpy import Message

ROOT = Path(__file__).resolve().parents[1]
RATE = 20_000
TICK = 0.01
PAYLOAD = b"x" * 120
TARGET_DROP = 0.15
_CLK = os.sysconf("SC_CLK_TCK")
STATS_WAIT = 30.0  # seconds to wait for the tail's stats after a run (it sends them each second)


class BenchError(Exception):
    """A run that gives no valid figure: said, and the benchmark exits 1."""


@dataclass
class Run:
    mode: str
    kind: str
    sent: int
    received: int
    seconds: float
    rate: float
    cpu_us_per_msg: float
    rss_kb: list[int] = field(default_factory=list)
    tail_rows: int = 0
    tail_skipped: int = 0
    gravd_dropped: int = 0


def _proc(pid: int) -> tuple[float, int]:
    """(CPU seconds, VmRSS in kB) of process ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / _CLK
    rss = next(
        int(line.split()[1])
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmRSS:")
    )
    return cpu, rss


@asynccontextmanager
async def gravd() -> AsyncIterator[tuple[int, str, str]]:
    """A gravd subprocess: (pid, endpoint, monitor URL); killed on exit."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gravpy.daemon.main", "--listen", "127.0.0.1:0",
        "--monitor", "127.0.0.1:0", "--log-format", "json",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("GRAVD_")},
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        while True:
            line = await proc.stderr.readline()
            if not line:
                raise RuntimeError("gravd ended before listening")
            record = json.loads(line) if line.startswith(b"{") else {}
            if record.get("event") == "listening":
                break
        drain = asyncio.create_task(_discard(proc.stderr))  # a full pipe would stall gravd
        try:
            yield proc.pid, record["endpoints"][0], "http://" + record["monitor"]
        finally:
            drain.cancel()
            await asyncio.wait([drain])
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def _discard(stream: asyncio.StreamReader) -> None:
    while await stream.read(65536):
        pass


class Tail:
    """One browser's tail on ``>``: reads the stream, counts rows, keeps the last stats."""

    def __init__(self, session: aiohttp.ClientSession, monitor: str) -> None:
        self.session, self.monitor = session, monitor
        self.rows, self.stats = 0, {}
        self.opened = asyncio.Event()
        self._stats_seen = asyncio.Event()

    async def next_stats(self) -> None:
        """Wait for the next stats event."""
        self._stats_seen.clear()
        await self._stats_seen.wait()

    async def run(self) -> None:
        async with self.session.get(self.monitor + "/v1/tail", params={"pattern": ">"}) as r:
            kind = ""
            async for raw in r.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    data = json.loads(line[6:])
                    if kind == "rows":
                        self.rows += len(data)
                    else:
                        self.stats = data
                        self.opened.set()
                        self._stats_seen.set()


async def _wait_interest(session: aiohttp.ClientSession, monitor: str, pattern: str) -> None:
    while True:
        async with session.get(monitor + "/v1/node") as r:
            node = await r.json()
        if pattern in node["pods"]["interests"] or any(
            pattern in leaf["interests"] for leaf in node["leaves"]
        ):
            return
        await asyncio.sleep(0.02)


async def _child(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, __file__, *args, stdout=asyncio.subprocess.PIPE, cwd=ROOT
    )


async def _line(proc: asyncio.subprocess.Process) -> dict[str, Any]:
    assert proc.stdout is not None
    line = await proc.stdout.readline()
    if not line:
        raise RuntimeError(f"a benchmark child ended early (status {await proc.wait()})")
    value: dict[str, Any] = json.loads(line)
    return value


async def _node(session: aiohttp.ClientSession, monitor: str) -> dict[str, Any]:
    async with session.get(monitor + "/v1/node") as r:
        node: dict[str, Any] = await r.json()
    return node


def _drops(node: dict[str, Any]) -> int:
    return int(sum(node["messages"]["dropped"].values()))


async def one_run(args: Any, pid: int, endpoint: str, monitor: str, mode: str, kind: str) -> Run:
    """One run: a subscriber and a publisher process through gravd, the tail open or not."""
    total = args.count if kind == "flat" else int(RATE * args.seconds)
    async with aiohttp.ClientSession() as session:
        sub = await _child("--subscriber", endpoint, str(total))
        pub = None
        try:
            await _line(sub)  # subscribed
            await _wait_interest(session, monitor, "bench.>")
            tail, tail_task = Tail(session, monitor), None
            if mode == "tail":
                tail_task = asyncio.create_task(tail.run())
                await tail.opened.wait()
                await _wait_interest(session, monitor, ">")
            drops0 = _drops(await _node(session, monitor))
            rss: list[int] = []
            cpu0, _ = _proc(pid)
            sampler = asyncio.create_task(_sample_rss(pid, rss))
            pub = await _child("--publisher", endpoint, str(total), kind)
            try:
                started = (await _line(pub))["start"]
                got = await _line(sub)
            finally:
                sampler.cancel()
                await asyncio.wait([sampler])
            cpu1, _ = _proc(pid)
            dropped = _drops(await _node(session, monitor)) - drops0
            if tail_task is not None:
                try:  # its skipped count, after the run (the tail sends stats each second)
                    async with asyncio.timeout(STATS_WAIT):
                        await tail.next_stats()
                except TimeoutError:
                    raise BenchError(
                        f"the tail sent no stats within {STATS_WAIT:.0f} s after the run "
                        "(a machine this loaded gives no valid figure)"
                    ) from None
                tail_task.cancel()
                await asyncio.wait([tail_task])
        finally:
            for proc in (sub, pub):
                if proc is not None and proc.returncode is None:
                    proc.kill()
                if proc is not None:
                    await proc.wait()
    elapsed = got["last"] - started
    return Run(
        mode, kind, total, got["count"], elapsed, got["count"] / elapsed,
        (cpu1 - cpu0) * 1e6 / max(1, got["count"]), rss, tail.rows,
        tail.stats.get("skipped", 0), dropped,
    )  # fmt: skip


async def _sample_rss(pid: int, into: list[int]) -> None:
    while True:
        into.append(_proc(pid)[1])
        await asyncio.sleep(0.25)


async def publisher(endpoint: str, total: int, kind: str) -> None:
    """Child: publish ``total`` messages, paced at RATE or flat out; print the start time."""
    async with gravpy.connect(endpoint) as leaf:
        pod = leaf.connect()
        start = time.monotonic()
        print(json.dumps({"start": start}), flush=True)
        per_tick = int(RATE * TICK)
        for i in range(total):
            await pod.publish(Message.new("bench.load", PAYLOAD))
            if kind == "paced" and i % per_tick == per_tick - 1:
                delay = start + (i + 1) / RATE - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
        await leaf.wait_for(lambda peers: all(p.queued == 0 for p in peers), timeout=30)


async def subscriber(endpoint: str, total: int) -> None:
    """Child: count ``bench.>`` messages until ``total`` or 5 s of silence; print the count."""
    async with gravpy.connect(endpoint) as leaf:
        pod = leaf.connect(inbox_limit=1_000_000)
        count, last = 0, [0.0]
        progress = asyncio.Event()

        def on_msg(msg: Message) -> None:
            nonlocal count
            count += 1
            last[0] = time.monotonic()
            if count == total or count % 1000 == 0:
                progress.set()

        pod.on_type("bench.>", on_msg)
        print(json.dumps({"subscribed": True}), flush=True)
        while count < total:
            progress.clear()
            try:
                async with asyncio.timeout(5):
                    await progress.wait()
            except TimeoutError:
                break
        print(json.dumps({"count": count, "last": last[0]}), flush=True)


def _median(runs: list[Run], mode: str, kind: str, attr: str) -> float:
    return statistics.median(getattr(r, attr) for r in runs if r.mode == mode and r.kind == kind)


def report(runs: list[Run], soak: Run | None) -> bool:
    ok = all(r.received == r.sent for r in runs + ([soak] if soak else []))
    print(f"{'kind':<6} {'mode':<5} {'sent':>7} {'recv':>7} {'msgs/s':>9} {'gravd cpu us/msg':>17} "
          f"{'rss kB min..max':>17} {'tail rows':>9} {'skipped':>8} {'gravd drops':>11}")  # fmt: skip
    for r in runs + ([soak] if soak else []):
        print(f"{r.kind:<6} {r.mode:<5} {r.sent:>7} {r.received:>7} {r.rate:>9,.0f} "
              f"{r.cpu_us_per_msg:>17.1f} {min(r.rss_kb):>8}..{max(r.rss_kb):<8} "
              f"{r.tail_rows:>9} {r.tail_skipped:>8} {r.gravd_dropped:>11}")  # fmt: skip
    for kind, attr, better in (("paced", "cpu_us_per_msg", "lower"), ("flat", "rate", "higher")):
        off, on = _median(runs, "off", kind, attr), _median(runs, "tail", kind, attr)
        cost = (on - off) / off if attr == "cpu_us_per_msg" else (off - on) / off
        verdict = "meets" if cost < TARGET_DROP else "MISSES"
        print(f"{kind}: median {attr} off {off:,.1f} / tail {on:,.1f} ({better} is better): "
              f"tail costs {cost:.1%} ({verdict} the < {TARGET_DROP:.0%} target)")  # fmt: skip
    if soak is not None:
        per = 40  # samples every 0.25 s: one figure per 10 s
        steps = [max(soak.rss_kb[k : k + per]) for k in range(0, len(soak.rss_kb), per)]
        print(f"soak {soak.seconds:.0f} s, tail on '>': gravd RSS max per 10 s (kB): {steps}")
    if not ok:
        print("CORRECTNESS FAILURES: a run lost messages; its figures are not valid")
    return ok


async def bus_cost(count: int = 200_000) -> tuple[float, float]:
    """CPU microseconds per message of one node's bus delivering to one receiver, without and
    with a tail viewer on ``>``: the tail's own cost, without sockets or other processes."""
    from gravpy import Grav
    from gravpy.daemon.dashboard.tail import Tail
    from gravpy.filter import Pattern
    from gravpy.testing import wait_idle

    costs = []
    for with_tail in (False, True):
        async with Grav() as node:
            node.connect().on_type("bench.>", lambda msg: None)
            tail = Tail(node)
            if with_tail:
                tail.open(Pattern(">"))
            messages = [Message.new("bench.load", PAYLOAD) for _ in range(count)]
            started = time.process_time()
            for i in range(0, count, 1000):
                for msg in messages[i : i + 1000]:
                    node.bus.deliver(msg, None)
                await asyncio.sleep(0)  # let the drains run, as a link's reader does
            await wait_idle(node, 60)
            costs.append((time.process_time() - started) * 1e6 / count)
            tail.close()
    return costs[0], costs[1]


async def main(args: Any) -> tuple[list[Run], Run | None]:
    for _ in range(3):
        off, on = await bus_cost()
        print(f"bus, in process: {off:.2f} us/msg without a tail, {on:.2f} with one on '>' "
              f"(+{on - off:.2f} us)")  # fmt: skip
    runs: list[Run] = []
    async with gravd() as (pid, endpoint, monitor):
        for _ in range(args.rounds):
            for kind in ("paced", "flat"):
                for mode in ("off", "tail"):
                    runs.append(await one_run(args, pid, endpoint, monitor, mode, kind))
                    print(f"  {kind} {mode}: {runs[-1].rate:,.0f} msgs/s", file=sys.stderr)
        soak = None
        if args.soak:
            soak_args = argparse.Namespace(**{**vars(args), "seconds": args.soak})
            soak = await one_run(soak_args, pid, endpoint, monitor, "tail", "paced")
    return runs, soak


def run_benchmark(args: argparse.Namespace) -> int:
    runs, soak = asyncio.run(main(args))
    ok = report(runs, soak)
    if args.json:
        every = runs + ([soak] if soak else [])
        Path(args.json).write_text(json.dumps([asdict(r) for r in every], indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs, a smoke test")
    parser.add_argument("--json", help="also write every run as JSON here")
    parser.add_argument("--soak", type=float, help="seconds of the final tail run (default 30)")
    parser.add_argument("--rounds", type=int, help="rounds of the four runs (default 3)")
    parser.add_argument(
        "--publisher", nargs=3, metavar=("URL", "N", "KIND"), help=argparse.SUPPRESS
    )
    parser.add_argument("--subscriber", nargs=2, metavar=("URL", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with suppress(KeyboardInterrupt):
        if args.publisher:
            asyncio.run(publisher(args.publisher[0], int(args.publisher[1]), args.publisher[2]))
        elif args.subscriber:
            asyncio.run(subscriber(args.subscriber[0], int(args.subscriber[1])))
        else:
            args.rounds = args.rounds if args.rounds is not None else 1 if args.quick else 3
            args.seconds = 2.0 if args.quick else 5.0
            args.count = 20_000 if args.quick else 60_000
            args.soak = args.soak if args.soak is not None else 0 if args.quick else 30
            try:
                code = run_benchmark(args)
            except BenchError as exc:
                print(f"bench_dashboard: {exc}", file=sys.stderr)
                code = 1
            raise SystemExit(code)
