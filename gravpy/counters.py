"""The counters of pods and the bus: running counts, and the frozen snapshots users read.

A pod counts into its ``PodCounts`` (plain int fields; ``received``, bumped once per message
pushed, is a field of the pod itself); ``Pod.statistics()`` copies them into a
``PodStatistics``. When a pod leaves, the bus adds what it counted to its ``RetiredCounts``, so
``BusStatistics`` totals never go backwards: nothing dropped is forgotten because the pod that
dropped it is gone.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BusStatistics", "PodCounts", "PodStatistics", "RetiredCounts"]


@dataclass(frozen=True, slots=True)
class PodStatistics:
    """A snapshot of one pod's counters."""

    received: int  # admitted by the filters and queued
    handled: int  # taken by the handler, the iterator, or a wait on a pod with neither
    failed: int  # handler calls that raised
    redelivered: int  # failed messages given to the handler again
    pending_failures: int
    inbox: int
    inbox_limit: int
    dropped_overflow: int  # refused or evicted because the inbox was full
    dropped_failed: int  # given up after max_attempts failures
    dropped_closed: int  # queued or held for redelivery when the pod closed, or cut off mid-handler


@dataclass(slots=True)
class PodCounts:
    """The pod's running counters (``statistics()`` copies them into a frozen snapshot)."""

    handled: int = 0
    failed: int = 0
    redelivered: int = 0
    dropped_overflow: int = 0
    dropped_failed: int = 0
    dropped_closed: int = 0


@dataclass(slots=True)
class RetiredCounts:
    """What pods that have left the bus counted, kept in the bus totals."""

    dropped_overflow: int = 0
    dropped_failed: int = 0
    dropped_closed: int = 0
    handler_failures: int = 0

    def add(self, s: PodStatistics) -> None:
        self.dropped_overflow += s.dropped_overflow
        self.dropped_failed += s.dropped_failed
        self.dropped_closed += s.dropped_closed
        self.handler_failures += s.failed


@dataclass(frozen=True, slots=True)
class BusStatistics:
    """A snapshot of the bus counters (closed pods included)."""

    pods: int
    receivers: int
    sent: int  # messages sent by local pods
    delivered: int  # pushes into pod inboxes
    dropped_overflow: int
    dropped_failed: int
    dropped_closed: int
    handler_failures: int
    buffered: int
    unclaimed_replies: int
    undelivered: int = 0  # messages sent by local pods that no pod or link took
    group_misses: int = 0  # a group was placed here but had no member left to take it
