"""Link benchmark: what each transport costs on its own, without the hub, same run.

Run from the repository root::

    .venv/bin/python benchmarks/bench_links.py                 # asyncio
    .venv/bin/python benchmarks/bench_links.py --loop uvloop   # the same on uvloop
    .venv/bin/python benchmarks/bench_links.py --quick

One process, one event loop: for each transport (WebSocket, HTTP, TCP, on 127.0.0.1 port 0) a
transport listens and another dials it, and the two ends of that link are driven directly through
the ``Link`` interface -- no handshake, no routing, no messages, only frames. Both ends share the
loop (and the CPU), so the figures are for comparing transports, not absolute.

1. round trip: 2,000 ping-pongs of a 128-byte frame (after 200 warm-up), one at a time; p50 and p99.
2. throughput: the dialler sends 100,000 frames of 128 bytes as fast as ``send`` lets it while the
   acceptor receives them; frames/s = frames / (last received - first sent). Each frame carries its
   sequence number: a lost, duplicated or reordered frame fails the run (exit 1).

3 rounds, alternating the transports; medians reported.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Callable

from gravpy.plugins import Link, Transport
from transports.http import HttpTransport
from transports.tcp import TcpTransport
from transports.websocket import WebSocketTransport

KINDS: dict[str, Callable[[], Transport]] = {
    "websocket": lambda: WebSocketTransport("127.0.0.1", 0),
    "http": lambda: HttpTransport("127.0.0.1", 0),
    "tcp": lambda: TcpTransport("127.0.0.1", 0),
}
SIZE = 128


class BenchError(Exception):
    """A run lost, duplicated or reordered a frame: its figure is not valid."""


async def linked(kind: str) -> tuple[Transport, Link, Link, asyncio.Event]:
    """A listening transport, a dialled link to it and the accepted end; set the event to end."""
    accepted: asyncio.Queue[Link] = asyncio.Queue(1)
    done = asyncio.Event()

    async def on_link(link: Link) -> None:
        await accepted.put(link)
        await done.wait()

    server = KINDS[kind]()
    await server.start(on_link)
    dialled = await KINDS[kind]().dial(server.endpoints()[0], timeout=5)
    return server, dialled, await accepted.get(), done


async def round_trips(a: Link, b: Link, n: int, warmup: int) -> tuple[float, float]:
    async def echo() -> None:
        for _ in range(n + warmup):
            await b.send(await b.recv())

    frame, times = bytes(SIZE), []
    async with asyncio.TaskGroup() as tg:
        tg.create_task(echo())
        for i in range(n + warmup):
            start = time.perf_counter()
            await a.send(frame)
            await a.recv()
            if i >= warmup:
                times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2] * 1e6, times[int(len(times) * 0.99)] * 1e6


async def throughput(a: Link, b: Link, n: int) -> float:
    async def receive() -> float:
        for i in range(n):
            frame = await b.recv()
            if int.from_bytes(frame[:8], "big") != i:
                raise BenchError(f"frame {i} arrived as {int.from_bytes(frame[:8], 'big')}")
        return time.perf_counter()

    pad = bytes(SIZE - 8)
    async with asyncio.TaskGroup() as tg:
        got = tg.create_task(receive())
        start = time.perf_counter()
        for i in range(n):
            await a.send(i.to_bytes(8, "big") + pad)
    return n / (got.result() - start)


async def measure(kind: str, n: int, requests: int) -> tuple[float, float, float]:
    server, a, b, done = await linked(kind)
    try:
        p50, p99 = await round_trips(a, b, requests, requests // 10)
        rate = await throughput(a, b, n)
    finally:
        await a.close()
        done.set()
        await server.stop()
    return p50, p99, rate


async def run(args: argparse.Namespace) -> int:
    n, requests = (20_000, 500) if args.quick else (100_000, 2_000)
    results: dict[str, list[tuple[float, float, float]]] = {k: [] for k in KINDS}
    for rnd in range(1, args.runs + 1):
        for kind in KINDS:
            p50, p99, rate = await measure(kind, n, requests)
            results[kind].append((p50, p99, rate))
            print(
                f"  run {rnd} {kind:9}: round trip p50 {p50:6.0f} us, p99 {p99:6.0f} us; "
                f"{rate:10,.0f} frames/s",
                flush=True,
            )
    print(f"\nMedians of {args.runs} runs ({args.loop}; {SIZE}-byte frames, one process)")
    print(f"  {'transport':9}  {'p50 us':>7}  {'p99 us':>7}  {'frames/s':>10}  p50/ws  rate/ws")
    base = {i: statistics.median(r[i] for r in results["websocket"]) for i in range(3)}
    for kind, rows in results.items():
        med = [statistics.median(r[i] for r in rows) for i in range(3)]
        print(
            f"  {kind:9}  {med[0]:7.0f}  {med[1]:7.0f}  {med[2]:10,.0f}  "
            f"{med[0] / base[0]:5.2f}x  {med[2] / base[2]:6.2f}x"
        )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, one run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = parser.parse_args()
    if args.quick:
        args.runs = 1
    print(f"gravpy link benchmark: Python {sys.version.split()[0]}, loop {args.loop}", flush=True)
    try:
        if args.loop == "uvloop":
            import uvloop

            return uvloop.run(run(args))
        return asyncio.run(run(args))
    except BenchError as exc:
        print(f"CHECK FAILED (figures not valid): {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
