"""MsgBuffer: a bounded ring of recent messages, oldest evicted first. Pure.

An entry may carry an origin sequence number (> 0): the mesh numbers every message that enters
it at this node, so a peer that lost some across a link flap can ask for those after the last it
saw (``sequenced_after``); the buffer is the window such a resend can reach back.

gravd's durable replay store (``gravpy.daemon.replay_store``) mirrors the buffer without a cost
per push: it reads what was pushed since its last turn from the buffer itself (``take_new``).
The class is compiled with the hot modules (``setup.py``), so nothing subclasses it.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import TypeGuard

from gravpy.errors import UsageError
from gravpy.message import Message

__all__ = ["MsgBuffer"]


def _is_count(value: object) -> TypeGuard[int]:
    """True if ``value`` is an int >= 0 (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class MsgBuffer:
    """The last ``limit`` messages pushed, iterated oldest to newest.

    Each entry may carry an opaque ``origin`` tag (the bus records which pod sent it, so a replaying pod
    never receives its own messages). Pushing past the limit evicts the oldest entry; ``evicted`` counts
    how many were, so nothing leaves the buffer without a count.

    ``max_bytes`` (of message data) and ``max_age`` (seconds since it was pushed, by ``clock``)
    bound it further when above 0 (set when it is made); the oldest entries go first whichever
    bound is reached.
    """

    __slots__ = (
        "_bytes",
        "_clock",
        "_items",
        "_taken",
        "evicted",
        "limit",
        "max_age",
        "max_bytes",
    )

    def __init__(
        self,
        limit: object = 128,
        *,
        max_bytes: object = 0,
        max_age: object = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # object, checked here: a wrong type is a UsageError in the mypyc-compiled build too
        if not _is_count(limit):
            raise UsageError(f"MsgBuffer limit must be an int >= 0, got {limit!r}")
        if not _is_count(max_bytes):
            raise UsageError(f"MsgBuffer max_bytes must be an int >= 0, got {max_bytes!r}")
        if (
            isinstance(max_age, bool)
            or not isinstance(max_age, (int, float))
            or not max_age >= 0  # (nan is not)
        ):
            raise UsageError(f"MsgBuffer max_age must be a number of seconds >= 0, got {max_age!r}")
        self.limit: int = limit
        self.max_bytes: int = max_bytes
        self.max_age = float(max_age)
        self.evicted = 0
        self._clock = clock
        self._bytes = 0
        self._taken = 0  # pushes already handed to a store (``take_new``)
        # (message, origin, seq, pushed at): one entry, one append and one popleft per push
        self._items: deque[tuple[Message, object, int, float]] = deque()

    def push(self, msg: Message, origin: object = None, seq: int = 0, at: float = 0.0) -> None:
        """Add a message (``seq``: its origin sequence here, 0 if none; ``at``: when it was
        pushed, now if 0), evicting the oldest ones past the bounds."""
        if self.limit == 0:
            return
        items = self._items
        items.append((msg, origin, seq, at or self._clock()))
        if self.max_bytes or self.max_age:
            if self.max_bytes:  # (the bytes are summed only where they bound the buffer)
                self._bytes += len(msg.data)
            self._trim()
        elif len(items) > self.limit:  # the usual case once full: one out for one in, inline
            items.popleft()
            self.evicted += 1

    def _trim(self) -> None:
        items = self._items
        while len(items) > self.limit or (self.max_bytes and self._bytes > self.max_bytes):
            self._evict()
        if self.max_age and items:
            oldest = self._clock() - self.max_age
            while items and items[0][3] < oldest:
                self._evict()

    def _evict(self) -> None:
        msg = self._items.popleft()[0]
        if self.max_bytes:
            self._bytes -= len(msg.data)
        self.evicted += 1

    def expire(self) -> None:
        """Evict what is older than ``max_age`` now (pushes do it too)."""
        self._trim()

    @property
    def size_bytes(self) -> int:
        """The data bytes the buffer holds."""
        if self.max_bytes:
            return self._bytes
        return sum(len(m.data) for m, _, _, _ in self._items)

    def pushed_at(self) -> list[float]:
        """When each entry was pushed, oldest first (the durable store keeps it)."""
        return [at for _, _, _, at in self._items]

    def entries(self) -> list[tuple[Message, object]]:
        """A snapshot of ``(message, origin)`` pairs, oldest first."""
        if self.max_age:
            self._trim()
        return [(m, o) for m, o, _, _ in self._items]

    def sequenced_after(self, after: int) -> tuple[list[tuple[int, Message]], int]:
        """``(seq, message)`` for each entry numbered above ``after``, oldest first, and the
        oldest number still held (0 if none is)."""
        numbered = [(seq, m) for m, _, seq, _ in self._items if seq]
        oldest = numbered[0][0] if numbered else 0
        return [(seq, m) for seq, m in numbered if seq > after], oldest

    @property
    def pushed(self) -> int:
        """Pushes since the buffer was made: those held and those evicted."""
        return len(self._items) + self.evicted

    def restore(self, rows: list[tuple[float, Message, int]]) -> None:
        """Put back ``(pushed at, message, number)`` rows a store held, oldest first, without
        handing them to the store again."""
        for at, msg, seq in rows:
            self.push(msg, None, seq, at)
        self._taken = self.pushed

    def take_new(self) -> list[tuple[float, Message, int]]:
        """``(pushed at, message, number)`` of each push since the last call that is still held,
        oldest first (what was pushed and evicted in between has left the buffer: not kept)."""
        pushed = self.pushed
        new = min(pushed - self._taken, len(self._items))
        self._taken = pushed
        if new <= 0:
            return []
        items = list(itertools.islice(reversed(self._items), new))
        items.reverse()
        return [(at, msg, seq) for msg, _, seq, at in items]

    def last_seq(self) -> int:
        """The highest origin sequence held (0 if none)."""
        return max((seq for _, _, seq, _ in self._items), default=0)

    def __iter__(self) -> Iterator[Message]:
        return iter([m for m, _, _, _ in self._items])

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"MsgBuffer(limit={self.limit}, len={len(self._items)})"
