"""Flood benchmark: /healthz latency of a real gravd while 2,000 clients connect at once.

Run from the repository root::

    .venv/bin/python benchmarks/bench_flood.py                # 2,000 connects, --max-connections 1024
    .venv/bin/python benchmarks/bench_flood.py --connects 500 --max-connections 100

A gravd starts on 127.0.0.1 (port 0). This process opens ``--connects`` raw sockets to its
WebSocket port at once, each asking for the upgrade (the expensive part of a connection flood
that never sends a HELLO), while a second task asks ``/healthz`` every 20 ms until the flood has
its answers. Reported: /healthz latency (median, max, count) during the flood, upgrades granted and
refused, and ``gravd_connections_refused_total`` afterwards. The upgraded sockets are closed at the
end. Checks: /healthz answered every time; granted upgrades stayed within the cap.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
from _common import Machine, finish, median, options, say, table

ROOT = Path(__file__).resolve().parent.parent


@dataclasses.dataclass
class Report:
    machine: str
    connects: int
    max_connections: int
    healthz_ms_median: float
    healthz_ms_max: float
    healthz_answers: int
    upgraded: int
    refused_503: int
    failed: int
    refused_metric: float
    failures: list[str] = dataclasses.field(default_factory=list)


@asynccontextmanager
async def gravd(cap: int) -> AsyncIterator[tuple[str, str]]:
    """A gravd subprocess: (endpoint, monitor URL); killed on exit."""
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
            yield record["endpoints"][0], "http://" + record["monitor"]
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


async def probe(http: aiohttp.ClientSession, url: str, done: asyncio.Event) -> list[float]:
    """/healthz latencies (ms) every 20 ms until ``done``; a failed answer is NaN."""
    times: list[float] = []
    while True:
        start = time.perf_counter()
        try:
            async with http.get(url + "/healthz") as resp:
                await resp.read()
                ok = resp.status == 200
        except aiohttp.ClientError:
            ok = False
        times.append((time.perf_counter() - start) * 1000 if ok else float("nan"))
        if done.is_set():
            return times
        await asyncio.sleep(0.02)


def refused_total(metrics: str) -> float:
    for line in metrics.splitlines():
        if line.startswith("gravd_connections_refused_total "):
            return float(line.split()[1])
    return float("nan")


async def run(connects: int, cap: int) -> Report:
    async with gravd(cap) as (endpoint, monitor), aiohttp.ClientSession() as http:
        hostport, _, path = endpoint.removeprefix("ws://").partition("/")
        host, _, port = hostport.rpartition(":")
        done = asyncio.Event()
        probing = asyncio.ensure_future(probe(http, monitor, done))
        results = await asyncio.gather(
            *(upgrade(host, int(port), "/" + path) for _ in range(connects))
        )
        done.set()
        times = await probing
        async with http.get(monitor + "/metrics") as resp:
            metric = refused_total(await resp.text())
        upgraded = [w for s, w in results if w is not None]
        for writer in upgraded:
            writer.close()
    ok = [t for t in times if t == t]
    report = Report(
        Machine.here().describe(), connects, cap, median(ok), max(ok, default=float("nan")),
        len(ok), len(upgraded), sum(s == 503 for s, _ in results),
        sum(s == 0 for s, _ in results), metric,
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
    args = parser.parse_args()
    say(Machine.here().describe())
    r = asyncio.run(run(args.connects, args.max_connections))
    say(
        table(
            [
                "connects",
                "cap",
                "healthz p50",
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
                    f"{r.healthz_ms_max:.1f} ms",
                    str(r.healthz_answers),
                    str(r.upgraded),
                    str(r.refused_503),
                    str(r.failed),
                ]
            ],
        ),
        f"  gravd_connections_refused_total afterwards: {r.refused_metric:.0f}",
    )
    return finish(r, args.json)


if __name__ == "__main__":
    sys.exit(main())
