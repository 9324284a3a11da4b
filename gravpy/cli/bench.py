"""``gravctl bench``: pub/sub throughput and req/reply latency between two attached clients.

Like ``nats bench``: two leaves attach to the node (``--url``), one subscribes to ``TYPE.pub`` and
answers ``TYPE.req``, the other publishes ``--msgs`` messages of ``--size`` bytes (with the
library's backpressure, ``Pod.publish``) and then sends ``--requests`` requests one at a time.
Throughput is what the subscriber received divided by the time from the first publish to the
last receipt; latency is each request's round trip, reported as p50 and p99. Publishing starts
once a probe request has come back from the subscriber (its interest reached the node: another
app's interest in the type proves nothing). Messages lost on the way (a full inbox drops them, and
the node counts it) show as received < sent, and the exit code is then 1.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import TYPE_CHECKING

from gravpy.cli.attach import Failure, attached, say
from gravpy.cli.parser import EXIT_NO_RESPONDERS, EXIT_OK, EXIT_TIMEOUT

if TYPE_CHECKING:
    from collections.abc import Callable

    from gravpy.grav import Grav
    from gravpy.message import Message

__all__ = ["bench"]

SETTLE_TIMEOUT = 10.0  # seconds the subscriber may lag behind the last publish
_PROBE_WAIT = 0.25  # seconds one probe waits for the subscriber's answer


async def bench(args: argparse.Namespace) -> int:
    from gravpy.message import Message

    pub_type, req_type = f"{args.type}.pub", f"{args.type}.req"
    async with attached(args) as server, attached(args) as client:
        pod = server.connect()
        received = asyncio.Event()
        count = 0
        last = 0.0

        def on_message(msg: Message) -> None:
            nonlocal count, last
            if msg.type == req_type:
                pod.reply_to(msg, Message.new(f"{req_type}.reply", msg.data))
                return
            count += 1
            last = time.perf_counter()
            if count == args.msgs:
                received.set()

        pod.on_type(f"{args.type}.*", on_message)
        await _wait_subscriber(client, req_type)
        rate, got = await _throughput(client, pub_type, args, received, lambda: (count, last))
        latencies = await _latencies(client, req_type, args)
    p50, p99 = _percentiles(latencies)
    print(f"pub/sub: {got}/{args.msgs} messages of {args.size} B received, {rate:,.0f} msgs/s")
    print(f"req/reply: {len(latencies)} requests, p50 {p50 * 1e3:.3f} ms, p99 {p99 * 1e3:.3f} ms")
    return EXIT_OK if got == args.msgs else EXIT_TIMEOUT


async def _wait_subscriber(client: Grav, req_type: str) -> None:
    """Wait until a probe request reaches the bench subscriber and its reply comes back: its
    interest reached the node (the same pattern carries the published messages)."""
    from gravpy.errors import NoResponders, WaitTimeout
    from gravpy.message import Message

    pod = client.connect()
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while (left := deadline - time.monotonic()) > 0:
        try:  # (another app may take the probe and not answer: each one waits briefly)
            await pod.send(Message.new(req_type, b"")).wait_until(min(_PROBE_WAIT, left))
            return
        except NoResponders:  # its interest is on the way: ask again soon
            await asyncio.sleep(min(0.02, left))
        except WaitTimeout:
            pass
    raise Failure(EXIT_NO_RESPONDERS, "the bench subscriber never became reachable")


async def _throughput(
    client: Grav,
    msg_type: str,
    args: argparse.Namespace,
    received: asyncio.Event,
    progress: Callable[[], tuple[int, float]],
) -> tuple[float, int]:
    from gravpy.message import Message

    pod = client.connect()
    data = b"x" * args.size
    start = time.perf_counter()
    for _ in range(args.msgs):
        await pod.publish(Message.new(msg_type, data))
    try:
        await asyncio.wait_for(received.wait(), SETTLE_TIMEOUT)
    except TimeoutError:
        got, _ = progress()
        say(
            f"gravctl: the subscriber received {got} of {args.msgs} messages within "
            f"{SETTLE_TIMEOUT} s of the last publish (lost ones are counted by gravd: "
            "gravctl check, /metrics)"
        )
    got, last = progress()
    elapsed = max(last - start, 1e-9)
    return got / elapsed, got


async def _latencies(client: Grav, msg_type: str, args: argparse.Namespace) -> list[float]:
    from gravpy.errors import WaitTimeout
    from gravpy.message import Message

    pod = client.connect()
    data = b"x" * args.size
    latencies: list[float] = []
    for _ in range(args.requests):
        sent = time.perf_counter()
        try:
            await pod.send(Message.new(msg_type, data)).wait_until(SETTLE_TIMEOUT)
        except WaitTimeout:
            raise Failure(
                EXIT_TIMEOUT, f"a bench request got no reply in {SETTLE_TIMEOUT} s"
            ) from None
        latencies.append(time.perf_counter() - sent)
    return latencies


def _percentiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return (values[0], values[0]) if values else (0.0, 0.0)
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[49], cuts[98]
