"""Flood benchmark: /healthz latency of a real gravd while 2,000 clients connect at once.

Run from the repository root::

    .venv/bin/python benchmarks/bench_flood.py                # 2,000 connects, --max-connections 1024
    .venv/bin/python benchmarks/bench_flood.py --connects 500 --max-connections 100

A gravd starts on 127.0.0.1 (port 0). This process opens ``--connects`` raw sockets to its
WebSocket port at once, each asking for the upgrade (the expensive part of a connection flood
that never sends a HELLO), while a second task asks ``/healthz`` every 20 ms until the flood has
its answers. Reported: /healthz latency (median, p99, max, count) during the flood, upgrades
granted and refused, ``gravd_connections_refused_total`` afterwards, the CPU time gravd spent from
the first connect to the last answer, and gravd's resident memory (from ``/proc/PID/status``): before
the flood, its peak (``VmHWM``), and after settling (the upgraded sockets closed, then the last of
``--settle`` seconds of samples, one a second). Checks: /healthz answered every time; granted upgrades
stayed within the cap.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import http.client
import json
import multiprocessing
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
from _common import Machine, finish, median, options, say, table

ROOT = Path(__file__).resolve().parent.parent


@dataclasses.dataclass
class Report:
    machine: str
    connects: int
    max_connections: int
    healthz_ms_median: float
    healthz_ms_p99: float
    healthz_ms_max: float
    healthz_answers: int
    upgraded: int
    refused_503: int
    failed: int
    refused_metric: float
    gravd_cpu_s: float
    rss_mib_before: float
    rss_mib_peak: float
    rss_mib_after: float
    failures: list[str] = dataclasses.field(default_factory=list)


@asynccontextmanager
async def gravd(cap: int) -> AsyncIterator[tuple[str, str, int]]:
    """A gravd subprocess: (endpoint, monitor URL, pid); killed on exit."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gravpy.daemon.main", "--listen", "127.0.0.1:0",
        "--monitor", "127.0.0.1:0", "--log-format", "json", "--max-connections", str(cap),
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
        drain = asyncio.create_task(_discard(proc.stderr))
        try:
            yield record["endpoints"][0], "http://" + record["monitor"], proc.pid
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


async def upgrade(host: str, port: int, path: str) -> tuple[int, asyncio.StreamWriter | None]:
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        return 0, None
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        .encode()
    )  # fmt: skip
    try:
        line = await asyncio.wait_for(reader.readuntil(b"\r\n"), 30)
    except (OSError, asyncio.IncompleteReadError, TimeoutError):
        writer.close()
        return 0, None
    status = int(line.split()[1])
    if status == 101:
        return status, writer
    writer.close()
    return status, None


def probe(url: str, started: Event, done: Event, out: Queue[list[float]]) -> None:
    """/healthz latencies (ms), a fresh connection every 20 ms, until ``done``; a failed answer
    is NaN. Runs in a process of its own, so the flood's busy client loop adds nothing to them."""
    split = urlsplit(url)
    times: list[float] = []
    started.set()
    while True:
        start = time.perf_counter()
        conn = http.client.HTTPConnection(split.hostname or "", split.port, timeout=30)
        try:
            conn.request("GET", "/healthz")
            response = conn.getresponse()
            response.read()
            ok = response.status == 200
        except OSError:
            ok = False
        finally:
            conn.close()
        times.append((time.perf_counter() - start) * 1000 if ok else float("nan"))
        if done.is_set():
            out.put(times)
            return
        time.sleep(0.02)


def memory_mib(pid: int, field: str = "VmRSS") -> float:
    """A memory figure of process ``pid`` from ``/proc/PID/status`` (VmRSS, VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time process ``pid`` has used (``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (nearest rank) of ``values``, NaN when there is none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


async def settled_rss(pid: int, seconds: int) -> float:
    """gravd's resident memory after ``seconds`` one-second samples (the last one)."""
    rss = memory_mib(pid)
    for _ in range(seconds):
        await asyncio.sleep(1)  # a benchmark's settling time, not a test's wait
        rss = memory_mib(pid)
    return rss


def refused_total(metrics: str) -> float:
    for line in metrics.splitlines():
        if line.startswith("gravd_connections_refused_total "):
            return float(line.split()[1])
    return float("nan")


async def run(connects: int, cap: int, settle: int) -> Report:
    async with gravd(cap) as (endpoint, monitor, pid), aiohttp.ClientSession() as http:
        hostport, _, path = endpoint.removeprefix("ws://").partition("/")
        host, _, port = hostport.rpartition(":")
        async with http.get(monitor + "/healthz") as resp:
            await resp.read()
        rss_before, cpu_before = memory_mib(pid), cpu_seconds(pid)
        context = multiprocessing.get_context("spawn")
        started, done, out = context.Event(), context.Event(), context.Queue()
        prober = context.Process(target=probe, args=(monitor, started, done, out))
        prober.start()
        try:
            await asyncio.to_thread(started.wait, 30)  # the probe process imports first
            results = await asyncio.gather(
                *(upgrade(host, int(port), "/" + path) for _ in range(connects))
            )
            done.set()
            times: list[float] = await asyncio.to_thread(out.get, True, 60)
        finally:
            prober.join(5)
            if prober.is_alive():
                prober.kill()
        cpu = cpu_seconds(pid) - cpu_before
        async with http.get(monitor + "/metrics") as resp:
            metric = refused_total(await resp.text())
        upgraded = [w for s, w in results if w is not None]
        for writer in upgraded:
            writer.close()
        rss_after = await settled_rss(pid, settle)
        rss_peak = memory_mib(pid, "VmHWM")
    ok = [t for t in times if t == t]
    report = Report(
        Machine.here().describe(), connects, cap, median(ok), percentile(ok, 0.99),
        max(ok, default=float("nan")), len(ok), len(upgraded), sum(s == 503 for s, _ in results),
        sum(s == 0 for s, _ in results), metric, cpu, rss_before, rss_peak, rss_after,
    )  # fmt: skip
    if len(ok) != len(times):
        report.failures.append(f"/healthz failed {len(times) - len(ok)} of {len(times)} times")
    if len(upgraded) > cap:
        report.failures.append(f"{len(upgraded)} upgrades granted, over the cap of {cap}")
    return report


def main() -> int:
    parser = options(__doc__, quick=False)
    parser.add_argument("--connects", type=int, default=2000)
    parser.add_argument("--max-connections", type=int, default=1024)
    parser.add_argument("--settle", type=int, default=5, help="seconds before the memory figure")
    args = parser.parse_args()
    say(Machine.here().describe())
    r = asyncio.run(run(args.connects, args.max_connections, args.settle))
    say(
        table(
            [
                "connects",
                "cap",
                "healthz p50",
                "healthz p99",
                "healthz max",
                "answers",
                "upgraded",
                "503",
                "failed",
            ],
            [
                [
                    str(r.connects),
                    str(r.max_connections),
                    f"{r.healthz_ms_median:.1f} ms",
                    f"{r.healthz_ms_p99:.1f} ms",
                    f"{r.healthz_ms_max:.1f} ms",
                    str(r.healthz_answers),
                    str(r.upgraded),
                    str(r.refused_503),
                    str(r.failed),
                ]
            ],
        ),
        f"  gravd_connections_refused_total afterwards: {r.refused_metric:.0f}",
        f"  gravd CPU during the flood: {r.gravd_cpu_s:.2f} s",
        f"  gravd resident memory: {r.rss_mib_before:.1f} MiB before, {r.rss_mib_peak:.1f} MiB "
        f"peak, {r.rss_mib_after:.1f} MiB {args.settle} s after the sockets closed",
    )
    return finish(r, args.json)


if __name__ == "__main__":
    sys.exit(main())
