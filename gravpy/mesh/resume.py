"""Resume after a link flap: per-origin sequences, and asking the origin for what was missed.

Theory of operation
-------------------
Every message that enters the mesh at a peer node (sent by one of its pods, or by a leaf attached
to it) gets the next number of that node's *origin sequence*; the node's replay buffer keeps the
number with the message. The copy sent on a link to another peer travels with its number in the
MSGS frame (``Msgs.seqs``, one number per message: the message itself is not touched, so numbering
costs no copy on either side). Only the origin numbers, and only on its direct links, so the
origin of a numbered message is always the node at the other end of the link it came on. The
receiving node remembers, per origin, the highest number it got (``Resumption.last``).

When a link to an origin it has heard from opens again, the receiver sends a *resume request*
(type ``gravpy.resume``, data: the last number, decimal) right after its INTERESTS, and holds
back the live messages of that origin. The origin answers in the same loop turn from its buffer:
every message numbered above it that the receiver admits, oldest first, each with its number
negated (``-n``: resent); then a *resume end* (type ``gravpy.resume.end``, data: how many
numbers fell out of its buffer before they could be resent). The receiver delivers the resent
messages, counts the fallen-out ones as lost for that origin, then lets the held ones through;
the seen-set drops what arrived both live and resent, so each message is delivered once, in order.

A restarted origin is a new node (a new uuid): nothing is asked of it. A link that ends before the
resume end releases what it held (and the next link asks again from the last number).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Final, Generic, TypeVar

from gravpy import _log as logs
from gravpy.message import Message, new_id

__all__ = [
    "RESUME_END_TYPE",
    "RESUME_TYPE",
    "Resumption",
    "resend_answer",
]

RESUME_TYPE: Final = "gravpy.resume"
RESUME_END_TYPE: Final = "gravpy.resume.end"
HOLD_TIMEOUT: Final = 10.0  # an origin that never answers releases the held messages then

_log = logs.get_logger("gravpy.mesh.resume")
L = TypeVar("L")


def resume_request(last: int) -> Message:
    """The request a receiver sends an origin: resend what you numbered after ``last``."""
    return Message(new_id(), "", "", RESUME_TYPE, time.time(), str(last).encode(), None)


def resend_answer(
    request: Message,
    current: int,
    held: tuple[list[tuple[int, Message]], int],
    wants: Callable[[str], bool],
) -> tuple[list[tuple[Message, int]], int]:
    """The origin's answer to ``request`` from its buffer (``held``: ``sequenced_after`` of the
    number asked for): each message to resend with its number negated, then the resume end
    (number 0); and how many numbers fell out before they could be resent."""
    text = request.data.decode(errors="replace")
    after = int(text) if text.isdigit() and len(text) < 20 else current
    after = min(after, current)  # a number this node never gave: nothing to resend
    entries, oldest = held
    # numbers above ``after`` that are no longer held: before the oldest held, or all of them
    lost = max(0, oldest - after - 1) if entries else current - after
    answer = [(m, -seq) for seq, m in entries if wants(m.type) and not m.reply_to]
    end = Message(new_id(), "", "", RESUME_END_TYPE, time.time(), str(lost).encode(), None)
    answer.append((end, 0))
    return answer, lost


class Resumption(Generic[L]):
    """A receiver's side: the last number per origin, held live messages, losses by origin."""

    def __init__(self, deliver: Callable[[L, Message, int], None]) -> None:
        self.last: dict[str, int] = {}
        self.lost: dict[str, int] = {}
        self.resent = 0
        self._held: dict[str, list[tuple[L, Message, int]]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._deliver = deliver  # the hub's normal path for one message from a link

    def seen(self, origin: str, seq: int) -> None:
        if seq > self.last.get(origin, 0):
            self.last[origin] = seq

    def start(self, origin: str) -> Message | None:
        """A link to ``origin`` opened: the request to send it, or None if nothing to ask."""
        last = self.last.get(origin)
        if last is None:
            return None
        self._held.setdefault(origin, [])
        old = self._timers.pop(origin, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        self._timers[origin] = loop.call_later(HOLD_TIMEOUT, self.release, origin)
        return resume_request(last)

    def holding(self, origin: str) -> bool:
        """True while ``origin``'s live messages are held (its resend has not ended)."""
        return origin in self._held

    def holds(self, origin: str, link: L, msg: Message, seq: int, limit: int) -> bool:
        """True if ``msg`` (live, numbered ``seq`` by ``origin``) is held until the resend ends."""
        held = self._held.get(origin)
        if held is None:
            return False
        if len(held) < limit:
            held.append((link, msg, seq))
        else:
            self.lost[origin] = self.lost.get(origin, 0) + 1
        return True

    def ended(self, origin: str, lost: int) -> None:
        """The origin's resume end: count what fell out, let the held messages through."""
        if lost:
            self.lost[origin] = self.lost.get(origin, 0) + lost
            _log.warning("messages_lost", origin=origin, count=lost)
        self.release(origin)

    def release(self, origin: str) -> None:
        timer = self._timers.pop(origin, None)
        if timer is not None:
            timer.cancel()
        for link, msg, seq in self._held.pop(origin, []):
            self._deliver(link, msg, seq)

    def release_all(self, origins: Iterable[str]) -> None:
        for origin in list(origins):
            self.release(origin)

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._held.clear()
