"""The traffic history behind the dashboard's charts: a bounded ring of per-second rates.

Theory of operation. ``TrafficHistory.run`` wakes once per ``interval`` and reads the node's
cumulative counters (the same ones ``/v1/node`` shows: messages in and out of the mesh, drops by
reason with what its NATS bridges lost, and per link its messages in, out and dropped). Each
``Sample`` keeps the *difference* from the previous reading divided by the elapsed time, so the
page draws rates without doing arithmetic on counters that reset when a link reconnects (a
negative difference counts as 0).

The ring keeps ``capacity`` samples (300 at one per second: the last five minutes) in a
``deque(maxlen=...)``: the oldest sample falls out as a new one comes in, so memory is bounded by
capacity times the number of links of a sample. Reading counters is a few attribute reads on the
event loop; it never waits on the mesh.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Counters", "Sample", "TrafficHistory", "read_counters"]

Counters = dict[str, Any]
"""``{"in", "out", "dropped": {reason: n}, "links": {uuid: {"in", "out", "dropped"}}}``."""


@dataclass(frozen=True, slots=True)
class Sample:
    """Rates (per second) over one interval ending at ``at`` (Unix time)."""

    at: float
    rate_in: float
    rate_out: float
    rate_dropped: float
    links: Mapping[str, tuple[float, float, float]]  # uuid -> (in, out, dropped) per second

    def to_json(self) -> dict[str, Any]:
        return {
            "at": round(self.at, 3),
            "in": round(self.rate_in, 2),
            "out": round(self.rate_out, 2),
            "dropped": round(self.rate_dropped, 2),
            "links": {
                uuid: {"in": round(i, 2), "out": round(o, 2), "dropped": round(d, 2)}
                for uuid, (i, o, d) in self.links.items()
            },
        }


def read_counters(node: Mapping[str, Any]) -> Counters:
    """The cumulative counters of a ``/v1/node`` document; what its NATS bridges lost counts
    as drops too, by reason as ``bridge_<reason>``."""
    messages = node["messages"]
    dropped = dict(messages["dropped"])
    for bridge in node.get("bridges", ()):
        for reason, n in bridge["lost"].items():
            key = f"bridge_{reason}"
            dropped[key] = dropped.get(key, 0) + n
    return {
        "in": messages["in"],
        "out": messages["out"],
        "dropped": dropped,
        "links": {
            link["uuid"]: {
                "in": link["messages_in"],
                "out": link["messages_out"],
                "dropped": link["dropped"],
            }
            for link in [*node["peers"], *node["leaves"]]
        },
    }


def _rate(now: float, before: float, seconds: float) -> float:
    return max(0.0, now - before) / seconds


class TrafficHistory:
    """The last ``capacity`` samples of ``read()``, one per ``interval`` seconds."""

    def __init__(
        self, read: Callable[[], Counters], *, interval: float = 1.0, capacity: int = 300
    ) -> None:
        self._read = read
        self.interval = interval
        self.samples: deque[Sample] = deque(maxlen=capacity)
        self._last: tuple[float, Counters] | None = None

    def sample(self) -> Sample | None:
        """Read the counters now; append and return the rates since the last reading."""
        now, counters = time.monotonic(), self._read()
        last, self._last = self._last, (now, counters)
        if last is None or now <= last[0]:
            return None
        seconds, before = now - last[0], last[1]
        links: dict[str, tuple[float, float, float]] = {}
        for uuid, link in counters["links"].items():
            prev = before["links"].get(uuid, {"in": 0, "out": 0, "dropped": 0})
            links[uuid] = (
                _rate(link["in"], prev["in"], seconds),
                _rate(link["out"], prev["out"], seconds),
                _rate(link["dropped"], prev["dropped"], seconds),
            )
        dropped = sum(counters["dropped"].values()) - sum(before["dropped"].values())
        sample = Sample(
            at=time.time(),
            rate_in=_rate(counters["in"], before["in"], seconds),
            rate_out=_rate(counters["out"], before["out"], seconds),
            rate_dropped=max(0.0, dropped) / seconds,
            links=links,
        )
        self.samples.append(sample)
        return sample

    def drops_by_reason(self) -> dict[str, int]:
        """The cumulative drops by reason at the last reading."""
        return {} if self._last is None else dict(self._last[1]["dropped"])

    def to_json(self) -> dict[str, Any]:
        """The ``/v1/traffic`` document."""
        return {
            "interval_seconds": self.interval,
            "capacity": self.samples.maxlen,
            "samples": [s.to_json() for s in self.samples],
            "dropped_by_reason": self.drops_by_reason(),
        }

    async def run(self) -> None:
        """Sample every ``interval`` seconds until cancelled."""
        self.sample()
        while True:
            await asyncio.sleep(self.interval)
            self.sample()
