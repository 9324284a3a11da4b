"""MsgBuffer: a bounded ring of recent messages, oldest evicted first. Pure."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from gravpy.errors import UsageError
from gravpy.message import Message

__all__ = ["MsgBuffer"]


class MsgBuffer:
    """The last ``limit`` messages pushed, iterated oldest to newest.

    Each entry may carry an opaque ``origin`` tag (the bus records which pod sent it, so a replaying pod
    never receives its own messages). Pushing past the limit evicts the oldest entry; ``evicted`` counts
    how many were, so nothing leaves the buffer without a count.
    """

    __slots__ = ("_items", "evicted", "limit")

    def __init__(self, limit: object = 128) -> None:
        if not isinstance(limit, int) or limit < 0:
            raise UsageError(f"MsgBuffer limit must be an int >= 0, got {limit!r}")
        self.limit = limit
        self.evicted = 0
        self._items: deque[tuple[Message, object]] = deque(maxlen=limit)

    def push(self, msg: Message, origin: object = None) -> None:
        """Add a message, evicting the oldest one if the buffer is full."""
        if len(self._items) == self.limit:
            if self.limit == 0:
                return
            self.evicted += 1
        self._items.append((msg, origin))

    def entries(self) -> list[tuple[Message, object]]:
        """A snapshot of ``(message, origin)`` pairs, oldest first."""
        return list(self._items)

    def __iter__(self) -> Iterator[Message]:
        return iter([m for m, _ in self._items])

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"MsgBuffer(limit={self.limit}, len={len(self._items)})"
