"""ServiceBus and group benchmarks: dispatch vs a plain request, publish fan-out, grouped delivery.

Run from the repository root::

    .venv/bin/python benchmarks/bench_service.py            # full run, about a minute
    .venv/bin/python benchmarks/bench_service.py --quick    # smaller sizes: a smoke test

Sections (each checks what it measures; a wrong count fails the run with status 1):

1. **Round trip node→node.** This process runs node A; a child process (this script with
   ``--serve``) runs node B, linked over WebSocket on 127.0.0.1. From A: sequential
   ``pod.send(Message.new("plain.echo", 64 B)).wait_until(2)`` answered by a plain responder pod
   on B, against ``ServiceBus.dispatch(Echo(...))`` handled by a ServiceBus handler on B (a
   dataclass command, one group member). Blocks of 200 alternate between the two; p50/p90 in µs.
   Target: dispatch p50 within 1.2x of the plain request's. Section 1b repeats it with both
   nodes in this process (one event loop, so no scheduling between processes in the figure).
2. **Publish to 10 listeners, in one process.** ``await bus.publish(Tick(i))`` to 10 sync
   listeners (one ServiceBus: one pod decodes each event once and calls the 10), until every
   listener has seen every event. Figures: listener calls/s and events/s. A second row puts the
   10 listeners on 10 ServiceBuses (10 pods: 10 decodes per event). Target: 300,000 calls/s.
3. **Grouped vs ungrouped, node→node.** A publishes 50,000 messages of 128 B with
   ``pod.publish``; B counts them in an ungrouped pod (``tp.plain``) or in a one-member group
   (``tp.grouped``: A's router places each message and marks its copy; B unmarks it). Time until B
   has counted all. Target: grouped throughput at least 90% of ungrouped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gravpy import Grav, Message
from gravpy.errors import WaitTimeout
from gravpy.service import ServiceBus
from transports.websocket import WebSocketTransport


@dataclass
class Echo:
    text: str
    n: int


@dataclass
class Tick:
    seq: int
    source: str


def _ws() -> WebSocketTransport:
    return WebSocketTransport(host="127.0.0.1", port=0)


# -- the child: node B -------------------------------------------------------------------------------


async def serve() -> None:
    """Node B: a plain responder, a ServiceBus handler, and counting sinks; stdin says when to stop."""
    async with Grav(transport=_ws()) as grav, ServiceBus(grav) as bus:
        responder = grav.connect()
        responder.on_type(
            "plain.echo", lambda m: responder.reply_to(m, Message.new("plain.answer", m.data))
        )
        bus.add_handler(lambda_echo)
        sink: dict[str, Any] = {"expected": 0, "count": 0, "waiting": None}

        def finish() -> None:
            control.reply_to(sink["waiting"], Message.new("tp.finished", str(sink["count"])))
            sink["waiting"] = None

        def count(msg: Message) -> None:
            sink["count"] += 1
            if sink["count"] == sink["expected"] and sink["waiting"] is not None:
                finish()

        def reset(msg: Message) -> None:
            sink.update(expected=int(msg.text()), count=0, waiting=None)
            control.reply_to(msg, Message.new("tp.ready"))

        def wait(msg: Message) -> None:  # asked after the last message: its uuid is recent
            sink["waiting"] = msg
            if sink["count"] >= sink["expected"]:
                finish()

        def report(msg: Message) -> None:
            control.reply_to(msg, Message.new("tp.counted", str(sink["count"])))

        grouped = grav.connect(inbox_limit=100_000)
        grouped.on_type("tp.grouped", count, group="sink")
        plain = grav.connect(inbox_limit=100_000)
        plain.on_type("tp.plain", count)
        control = grav.connect()
        control.on_type("tp.reset", reset)
        waiter = grav.connect()
        waiter.on_type("tp.wait", wait)
        counter = grav.connect()
        counter.on_type("tp.count", report)
        print(json.dumps({"endpoint": grav.endpoints()[0]}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


def lambda_echo(cmd: Echo) -> None:
    cmd.n += 1


# -- the parent: node A ------------------------------------------------------------------------------


async def start_child() -> tuple[asyncio.subprocess.Process, str]:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--serve",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdout is not None
    line = await asyncio.wait_for(child.stdout.readline(), 20)
    return child, json.loads(line)["endpoint"]


async def wait_known(grav: Grav, *types: str) -> None:
    from gravpy import Pattern

    async with asyncio.timeout(10):
        while True:
            pats = [p for peer in grav.peers() for p in peer.interests]
            pats += [g[1] for peer in grav.peers() for g in peer.groups]
            if all(any(Pattern(p).matches(t) for p in pats) for t in types):
                return
            await grav.hub.wait_changed()  # type: ignore[union-attr]


async def round_trips(grav: Grav, bus: ServiceBus, n: int) -> dict[str, list[float]]:
    pod = grav.connect()
    samples: dict[str, list[float]] = {"plain": [], "dispatch": []}
    data = b"x" * 64
    for _ in range(50):  # warm-up
        await pod.send(Message.new("plain.echo", data)).wait_until(2)
        await bus.dispatch(Echo("x" * 50, 0), timeout=2)
    clock = time.perf_counter
    for block in range(max(1, n // 200) * 2):
        kind = "plain" if block % 2 == 0 else "dispatch"
        out = samples[kind]
        for i in range(200):
            if kind == "plain":
                t0 = clock()
                reply = await pod.send(Message.new("plain.echo", data)).wait_until(2)
                out.append(clock() - t0)
                assert reply.data == data
            else:
                t0 = clock()
                done = await bus.dispatch(Echo("x" * 50, i), timeout=2)
                out.append(clock() - t0)
                assert done.n == i  # a command comes back as sent (the handler's change is its own)
    return samples


async def round_trips_one_process(n: int) -> dict[str, list[float]]:
    """Section 1b: the same comparison with both nodes in this process (one event loop)."""
    async with Grav(transport=_ws()) as a, Grav(transport=_ws()) as b, ServiceBus(b) as bus_b:
        responder = b.connect()
        responder.on_type(
            "plain.echo", lambda m: responder.reply_to(m, Message.new("plain.answer", m.data))
        )
        bus_b.add_handler(lambda_echo)
        await a.connect_endpoint(b.endpoints()[0])
        await wait_known(a, "plain.echo", "command.Echo")
        async with ServiceBus(a) as bus_a:
            return await round_trips(a, bus_a, n)


async def publish_fanout(events: int, buses: int) -> tuple[float, int]:
    """Seconds to publish ``events`` to 10 listeners spread over ``buses`` ServiceBuses."""
    async with Grav() as grav:
        sbs = [ServiceBus(grav) for _ in range(buses)]
        calls = [0]
        done = asyncio.Event()
        target = events * 10

        def listener(event: Tick) -> None:
            calls[0] += 1
            if calls[0] == target:
                done.set()

        for i in range(10):
            sbs[i % buses].add_event_listener(listener)
        publisher = ServiceBus(grav)
        t0 = time.perf_counter()
        for i in range(events):
            await publisher.publish(Tick(i, "bench"))
        await asyncio.wait_for(done.wait(), 60)
        elapsed = time.perf_counter() - t0
        for sb in [*sbs, publisher]:
            await sb.close()
        return elapsed, calls[0]


async def throughput(grav: Grav, msg_type: str, n: int) -> float:
    """Seconds for B to count ``n`` messages of ``msg_type`` published from A."""
    control = grav.connect()
    ready = await control.send(Message.new("tp.reset", str(n))).wait_until(5)
    assert ready.type == "tp.ready"
    pod = grav.connect()
    body = b"y" * 128
    t0 = time.perf_counter()
    for _ in range(n):
        await pod.publish(Message.new(msg_type, body))
    try:
        finished = await control.send(Message.new("tp.wait")).wait_until(300)
    except WaitTimeout:
        counted = await control.send(Message.new("tp.count")).wait_until(5)
        raise SystemExit(f"{msg_type}: B counted {counted.text()} of {n} in 300 s") from None
    elapsed = time.perf_counter() - t0
    assert finished.text() == str(n), finished
    control.disconnect()
    pod.disconnect()
    return elapsed


def pct(samples: list[float], q: int) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1] * 1e6


async def main_async(quick: bool) -> int:
    failures: list[str] = []
    child, endpoint = await start_child()
    try:
        async with Grav(transport=_ws()) as grav, ServiceBus(grav) as bus:
            await grav.connect_endpoint(endpoint)
            await wait_known(grav, "plain.echo", "command.Echo", "tp.plain", "tp.grouped")
            n = 400 if quick else 2000
            rt = await round_trips(grav, bus, n)
            p50 = {k: pct(v, 50) for k, v in rt.items()}
            p90 = {k: pct(v, 90) for k, v in rt.items()}
            ratio = p50["dispatch"] / p50["plain"]
            print("1. round trip node->node (WebSocket, 127.0.0.1), sequential, µs")
            for k in ("plain", "dispatch"):
                print(f"   {k:9} n={len(rt[k]):5}  p50 {p50[k]:7.1f}  p90 {p90[k]:7.1f}")
            verdict = "meets" if ratio <= 1.2 else "MISSES"
            print(f"   dispatch / plain p50 = {ratio:.3f}  ({verdict} the 1.2x target)")
            rt1 = await round_trips_one_process(n)
            p50 = {k: pct(v, 50) for k, v in rt1.items()}
            ratio = p50["dispatch"] / p50["plain"]
            print("1b. the same, both nodes in this process (one event loop), µs")
            for k in ("plain", "dispatch"):
                print(f"   {k:9} n={len(rt1[k]):5}  p50 {p50[k]:7.1f}  p90 {pct(rt1[k], 90):7.1f}")
            verdict = "meets" if ratio <= 1.2 else "MISSES"
            print(f"   dispatch / plain p50 = {ratio:.3f}  ({verdict} the 1.2x target)")

            tp_n = 20_000 if quick else 50_000
            runs: dict[str, list[float]] = {"tp.plain": [], "tp.grouped": []}
            for _ in range(3):
                for t in ("tp.plain", "tp.grouped"):
                    runs[t].append(tp_n / await throughput(grav, t, tp_n))
            best = {t: max(v) for t, v in runs.items()}
            med = {t: statistics.median(v) for t, v in runs.items()}
            share = med["tp.grouped"] / med["tp.plain"]
            print(f"3. node->node throughput, {tp_n} x 128 B, msgs/s (best / median of 3)")
            for t in runs:
                print(f"   {t:11} {best[t]:9,.0f} / {med[t]:9,.0f}")
            verdict = "meets" if share >= 0.9 else "MISSES"
            print(f"   grouped / ungrouped (median) = {share:.3f}  ({verdict} the >= 0.90 target)")
    finally:
        assert child.stdin is not None
        child.stdin.close()
        await asyncio.wait_for(child.wait(), 20)

    events = 10_000 if quick else 50_000
    print(f"2. in-process publish of {events} events to 10 sync listeners")
    for buses in (1, 10):
        times = []
        for _ in range(3):
            elapsed, calls = await publish_fanout(events, buses)
            if calls != events * 10:
                failures.append(f"fan-out over {buses} bus(es): {calls} calls")
            times.append(elapsed)
        best_t = min(times)
        rate = events * 10 / best_t
        verdict = "meets" if rate >= 300_000 else "MISSES"
        print(
            f"   10 listeners on {buses:2} ServiceBus(es): {rate:10,.0f} listener calls/s, "
            f"{events / best_t:9,.0f} events/s (best of 3; {verdict} 300k calls/s)"
        )
    if failures:
        print("CORRECTNESS FAILURES:", *failures, sep="\n  ")
        return 1
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke test)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve())
        return 0
    return asyncio.run(main_async(args.quick))


if __name__ == "__main__":
    raise SystemExit(main())
