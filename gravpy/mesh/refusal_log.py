"""RefusalLog: how many lines a flood of refused handshakes may write, decided before any is built.

Theory of operation
-------------------
Every refused handshake is worth a log line to an operator who is debugging one client, and
worth nothing a thousand times over to one who is under attack. Building a line is not free:
structlog's processors, a ``LogRecord``, its filters; about 5% of what a refused attempt cost
gravd (py-spy under ``benchmarks/bench_auth.py``), even when a ``logging.Filter`` then dropped it.
So the decision is made first, here, before the logger is called.

Per (event, reason) ``RefusalLog`` lets ``burst`` lines through every ``period`` seconds and
counts the rest; the first line it lets through after dropping some carries ``suppressed=N``, so
the log still says how many there were. The refusals themselves are never lost: the hub counts
every one by reason (``/metrics``). It is a plain object owned by ``Admission``, one per hub.
A remote may name any reason in its REJECT, so the windows are bounded (``MAX_WINDOWS``): past it,
expired windows are forgotten, and a line for a new key is dropped (counted) while all are live.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

__all__ = ["MAX_WINDOWS", "RefusalLog"]

MAX_WINDOWS: Final = 64


@dataclass(slots=True)
class _Window:
    start: float
    passed: int = 0
    dropped: int = 0


class RefusalLog:
    """At most ``burst`` refusal lines per (event, reason) every ``period`` seconds."""

    def __init__(
        self, burst: int = 5, period: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.burst, self.period, self._clock = burst, period, clock
        self._windows: dict[tuple[str, str], _Window] = {}
        self.dropped = 0  # lines not written, in all

    def admit(self, event: str, reason: str) -> dict[str, int] | None:
        """None if the line for ``event`` and ``reason`` is not to be written; else the fields
        to add to it: ``{"suppressed": N}`` after N were dropped, else ``{}``."""
        now = self._clock()
        window = self._windows.get((event, reason))
        if window is None and len(self._windows) >= MAX_WINDOWS and not self._forget(now):
            self.dropped += 1
            return None
        if window is None or now - window.start >= self.period:
            dropped = window.dropped if window is not None else 0
            self._windows[(event, reason)] = _Window(now, 1)
            return {"suppressed": dropped} if dropped else {}
        if window.passed >= self.burst:
            window.dropped += 1
            self.dropped += 1
            return None
        window.passed += 1
        return {}

    def _forget(self, now: float) -> bool:
        """Forget the windows whose period is over; True if any was."""
        expired = [k for k, w in self._windows.items() if now - w.start >= self.period]
        for key in expired:
            del self._windows[key]
        return bool(expired)
