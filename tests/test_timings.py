"""Request round-trip and handler-time histograms (gravpy.timings), kept only when asked."""

from __future__ import annotations

import asyncio

import pytest

from gravpy import Grav, Message
from gravpy.timings import BUCKETS, LatencyHistogram


def test_each_duration_lands_in_the_first_bucket_whose_bound_holds_it() -> None:
    """Bounds are inclusive (Prometheus ``le``); past the last bound is +Inf; sums add up."""
    hist = LatencyHistogram((0.001, 0.01))
    for seconds in (0.0005, 0.001, 0.002, 5.0):
        hist.observe(seconds)
    snap = hist.snapshot()
    assert snap.counts == (2, 1, 1)
    assert snap.cumulative() == [("0.001", 2), ("0.01", 3), ("+Inf", 4)]
    assert snap.count == 4
    assert snap.sum == pytest.approx(5.0035)
    assert tuple(sorted(BUCKETS)) == BUCKETS


async def test_a_node_with_timings_records_round_trips_and_handler_calls() -> None:
    """Three answered requests give three round trips; every handler call, raising or not, is
    timed, sync and async alike."""
    async with Grav(timings=True) as grav:
        assert grav.timings is not None
        responder = grav.connect()
        responder.on_type("ask", lambda m: responder.reply_to(m, Message.new("answer", b"")))
        seen: asyncio.Queue[Message] = asyncio.Queue()

        async def failing_once(msg: Message) -> None:
            seen.put_nowait(msg)
            if seen.qsize() == 1:
                raise RuntimeError("first call fails")

        grav.connect().on_type("event", failing_once)
        asker = grav.connect()
        for _ in range(3):
            await asker.send(Message.new("ask", b"")).wait_until(2)
        asker.send(Message.new("event", b""))
        asker.send(Message.new("event", b""))
        async with asyncio.timeout(5):
            for _ in range(3):  # the failed one comes again
                await seen.get()
        stats = grav.timings.statistics()
    assert stats.requests.count == 3
    assert stats.requests.sum > 0
    assert stats.handlers.count == 3 + 3  # three asks answered, three event calls (one failed)


async def test_the_first_of_many_replies_is_the_round_trip() -> None:
    """replies() records one round trip for a request that gets two replies."""
    async with Grav(timings=True) as grav:
        for _ in range(2):
            pod = grav.connect()
            pod.on_type("ask", lambda m, pod=pod: pod.reply_to(m, Message.new("answer", b"")))
        receipt = grav.connect().send(Message.new("ask", b""))
        got = [reply async for reply in receipt.replies(timeout=5, max=2)]
        assert grav.timings is not None
        assert (len(got), grav.timings.requests.count) == (2, 1)


async def test_timings_are_off_by_default() -> None:
    """Without timings=True there are no histograms and nothing is recorded."""
    async with Grav() as grav:
        pod = grav.connect()
        pod.on_type("ask", lambda m: pod.reply_to(m, Message.new("answer", b"")))
        await grav.connect().send(Message.new("ask", b"")).wait_until(2)
        assert grav.timings is None
        assert grav.bus.timings is None
