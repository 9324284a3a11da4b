"""Timings: how long requests wait for their first reply and how long handlers run, as histograms.

Theory of operation
-------------------
A node keeps two ``LatencyHistogram``s in one ``Timings`` (``Grav(timings=True)``; gravd turns it
on): ``requests``, the time from ``Pod.send`` to the first reply a wait on its receipt returns
(``gravpy.receipt``), and ``handlers``, the time of each call of a pod's handler
(``gravpy.pod``; a failing call is timed too). Off by default, nothing is timed and the hot path
pays only one ``is None`` test per send: the handler wrapper (``timed_handler``) is put in place
when a handler is set (``Pod.on``), so an untimed pod's drain is untouched.

A histogram is a fixed tuple of bucket bounds and one count per bucket: ``observe`` is a
``bisect`` and three increments (about 0.3 us). prometheus-client's ``Histogram.observe`` takes a
lock per update and costs ten times that, too much per message; gravd turns the snapshots into
prometheus-client ``HistogramMetricFamily`` samples at scrape time (``gravpy.daemon.metrics``).
A round trip is taken when the wait returns the reply, so a reply that came before anyone waited
is counted up to the wait; a wait that times out or fails records nothing.
"""

from __future__ import annotations

import inspect
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

from gravpy.message import Message
from gravpy.recent import RecentMap

__all__ = [
    "BUCKETS",
    "HistogramSnapshot",
    "LatencyHistogram",
    "RoundTrips",
    "TimingStatistics",
    "Timings",
    "clock",
    "timed_handler",
]

BUCKETS: Final = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Upper bounds in seconds (``le``): 50 us (an in-process round trip) to 10 s."""

clock: Final = time.perf_counter
Handler = Callable[[Message], Awaitable[object] | object]


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    """Counts per bucket (not cumulative; the last is past every bound), their sum and count."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    sum: float
    count: int

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, observations <= le)`` pairs as Prometheus writes them, ``+Inf`` last."""
        out: list[tuple[str, int]] = []
        running = 0
        for bound, n in zip((*map(repr, self.bounds), "+Inf"), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out


class LatencyHistogram:
    """Durations in fixed buckets (``BUCKETS``); see the module docstring."""

    __slots__ = ("_bounds", "_counts", "count", "sum")

    def __init__(self, bounds: tuple[float, ...] = BUCKETS) -> None:
        self._bounds = bounds
        self._counts = [0] * (len(bounds) + 1)
        self.count = 0
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        """Count one duration."""
        self._counts[bisect_left(self._bounds, seconds)] += 1
        self.count += 1
        self.sum += seconds

    def snapshot(self) -> HistogramSnapshot:
        return HistogramSnapshot(self._bounds, tuple(self._counts), self.sum, self.count)


class RoundTrips:
    """Requests a node relays, from when the asker said it waits (``asked``) to the first reply
    routed back (``answered``), in ``histogram``. At most ``limit`` pending requests are kept."""

    __slots__ = ("_asked_at", "_clock", "histogram", "pending")

    def __init__(self, limit: int, clock: Callable[[], float] = time.perf_counter) -> None:
        self._asked_at: RecentMap[str, float] = RecentMap(limit)
        self._clock = clock
        self.histogram = LatencyHistogram()
        # True while some request may still be answered (``answered`` is worth calling); a
        # plain field, read for every reply routed
        self.pending = False

    def asked(self, request_uuid: str) -> None:
        self._asked_at[request_uuid] = self._clock()
        self.pending = True

    def answered(self, request_uuid: str) -> None:
        """A reply to ``request_uuid`` is routed back: its round trip, if it is the first."""
        asked = self._asked_at.pop(request_uuid)
        if asked is not None:
            self.histogram.observe(self._clock() - asked)
        self.pending = len(self._asked_at) > 0


@dataclass(frozen=True, slots=True)
class TimingStatistics:
    """A snapshot of a node's ``Timings``."""

    requests: HistogramSnapshot
    handlers: HistogramSnapshot


@dataclass(slots=True)
class Timings:
    """Request round trips and handler times of one node's pods."""

    requests: LatencyHistogram = field(default_factory=LatencyHistogram)
    handlers: LatencyHistogram = field(default_factory=LatencyHistogram)

    def statistics(self) -> TimingStatistics:
        return TimingStatistics(self.requests.snapshot(), self.handlers.snapshot())


def timed_handler(handler: Handler, is_async: bool, histogram: LatencyHistogram) -> Handler:
    """``handler``, with the time of each call (raising or not) observed in ``histogram``.

    A plain function that returns an awaitable is timed up to its return, as it is called.
    """
    observe = histogram.observe
    if is_async:

        async def timed_async(msg: Message) -> object:
            start = clock()
            try:
                result = handler(msg)
                if inspect.isawaitable(result):
                    return await result
                return result
            finally:
                observe(clock() - start)

        return timed_async

    def timed(msg: Message) -> object:
        start = clock()
        try:
            return handler(msg)
        finally:
            observe(clock() - start)

    return timed
