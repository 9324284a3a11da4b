"""MsgBuffer: a bounded ring of recent messages, oldest evicted first. Pure.

An entry may carry an origin sequence number (> 0): the mesh numbers every message that enters
it at this node, so a peer that lost some across a link flap can ask for those after the last it
saw (``sequenced_after``); the buffer is the window such a resend can reach back.
"""

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

    def __init__(self, limit: int = 128) -> None:
        if not isinstance(limit, int) or limit < 0:
            raise UsageError(f"MsgBuffer limit must be an int >= 0, got {limit!r}")
        self.limit = limit
        self.evicted = 0
        self._items: deque[tuple[Message, object, int]] = deque(maxlen=limit)

    def push(self, msg: Message, origin: object = None, seq: int = 0) -> None:
        """Add a message (``seq``: its origin sequence here, 0 if none), evicting the oldest one
        if the buffer is full."""
        if len(self._items) == self.limit:
            if self.limit == 0:
                return
            self.evicted += 1
        self._items.append((msg, origin, seq))

    def entries(self) -> list[tuple[Message, object]]:
        """A snapshot of ``(message, origin)`` pairs, oldest first."""
        return [(m, o) for m, o, _ in self._items]

    def sequenced_after(self, after: int) -> tuple[list[tuple[int, Message]], int]:
        """``(seq, message)`` for each entry numbered above ``after``, oldest first, and the
        oldest number still held (0 if none is)."""
        numbered = [(seq, m) for m, _, seq in self._items if seq]
        oldest = numbered[0][0] if numbered else 0
        return [(seq, m) for seq, m in numbered if seq > after], oldest

    def last_seq(self) -> int:
        """The highest origin sequence held (0 if none)."""
        return max((seq for _, _, seq in self._items), default=0)

    def __iter__(self) -> Iterator[Message]:
        return iter([m for m, _, _ in self._items])

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"MsgBuffer(limit={self.limit}, len={len(self._items)})"
