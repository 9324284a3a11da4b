"""Rate limits on the log lines an attacker can make gravd write: one pair per refused handshake.

Theory of operation
-------------------
Every refused handshake logs ``handshake_refused`` (the hub said no) and ``handshake_rejected``
(the link ended so), or the latter alone when the protocol refused (a bad signature). 1,000 bad
attempts were up to 2,000 lines, and formatting and writing them was about a tenth of what each
attempt cost gravd (profiled under ``benchmarks/bench_auth.py``). ``RefusalLogLimit`` is a
``logging.Filter`` on the hub's logger: per (event, reason) it passes ``burst`` records each
``period`` seconds and drops the rest, and the first record it passes after a drop carries
``suppressed=N``, so the log still says how many there were. The refusals themselves are never
lost: ``/metrics`` counts every one by reason. ``link_closed`` is limited the same way: anyone who
can connect writes one by sending CLOSE (or a bad frame) before its HELLO, with up to 1 KB of its
own text (a link that was open also says ``peer_disconnected``, which is never limited).

A remote chooses the reason it sends: a reason this version does not know shares one window with
every other such reason (the line still says it as it came), so a new reason per connection
passes one burst, not one each, and the filter holds a fixed few windows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

from gravpy.mesh.upgrade import REASON_MOVED
from gravpy.proto.handshake import CLOSE_REASONS, REJECT_REASONS

__all__ = ["HUB_LOGGER", "RefusalLogLimit"]

HUB_LOGGER: Final = "gravpy.mesh.hub"
_LIMITED: Final = frozenset({"handshake_refused", "handshake_rejected", "link_closed"})
# the reasons this version refuses handshakes and closes links for
_KNOWN: Final = CLOSE_REASONS | REJECT_REASONS | {REASON_MOVED}
_UNKNOWN: Final = ""  # the window of every other reason


class RefusalLogLimit(logging.Filter):
    """Pass at most ``burst`` refusal and ``link_closed`` records per (event, reason) every
    ``period`` seconds; see the module."""

    def __init__(
        self, burst: int = 5, period: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.burst, self.period, self._clock = burst, period, clock
        self._windows: dict[tuple[str, str], tuple[float, int, int]] = {}  # start, passed, dropped

    def filter(self, record: logging.LogRecord) -> bool:
        event = str(record.msg)
        if event not in _LIMITED:
            return True
        reason = str(getattr(record, "reason", ""))
        key = (event, reason if reason in _KNOWN else _UNKNOWN)
        now = self._clock()
        start, passed, dropped = self._windows.get(key, (now - self.period, 0, 0))
        if now - start >= self.period:
            if dropped:
                record.suppressed = dropped
            self._windows[key] = (now, 1, 0)
            return True
        if passed >= self.burst:
            self._windows[key] = (start, passed, dropped + 1)
            return False
        self._windows[key] = (start, passed + 1, dropped)
        return True
