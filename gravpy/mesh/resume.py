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
numbers fell out of its buffer before they could be resent, its current number, and the first
number it still held). The receiver delivers at once the resent messages numbered below every
held one, holds the others with them, counts the fallen-out numbers as lost for that origin
(less those it holds: they came live), then lets the held ones through in number order; so each
message is delivered once, in order, even when the resend overlaps what is held (a restarted
node sends its request only once its apps are back, and holds what comes live meanwhile).

A link that ends before the resume end releases what it held (and the next link asks again from
the last number).

A link that replaces another to the same node (two nodes dialled each other at once) opens a
window: what the origin sent on the old link after this side closed it is ignored here. If this
side has heard nothing numbered from that origin yet, it has no number to resume from; so each
HELLO carries the sender's last origin number (``Hello.origin_seq``), and replacing a link makes
the old link's number the *baseline* (``baseline``): the new link asks the origin for everything
after it, and the seen-set drops what the old link did deliver.

Restarts
--------
An origin that restarted with a new uuid is a new node: nothing is asked of it. gravd with a data
dir keeps its uuid, its numbering and its receiver's positions across a restart
(``gravpy.daemon.node_identity``, ``gravpy.daemon.positions``), so both ends resume:

- A restarted *receiver* puts ``last`` back from the file; the first link to each origin asks
  from there (a receiver that never kept positions asks nothing: first start).
- A restarted *origin* continues above the highest number it kept. After an unclean end (SIGKILL,
  crash) it jumps ahead by ``RESTART_GAP``, because the last numbers it gave may not have reached
  its files; the numbers jumped over were never given, so the origin passes them as ``skipped``
  and they are never counted as lost.
- A request for a number *above* the origin's current one means the origin lost its numbering (its
  files were lost or set aside, but it kept its uuid). The origin logs ``resume_ahead`` and answers
  as if asked from 0 (everything it holds; the receiver's seen-set drops what it already had); its
  resume end carries its current number too (data ``"<lost> <current>"``), and the receiver logs
  ``origin_numbering_restarted`` and moves ``last`` back to it, so the next resume asks from the
  right place. What the origin numbered before it lost its state, and the receiver never got, is
  unknowable to both: not counted, only logged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Final, Generic, TypeVar

from gravpy import _log as logs
from gravpy.message import Message, new_id

__all__ = [
    "RESTART_GAP",
    "RESUME_END_TYPE",
    "RESUME_TYPE",
    "Resumption",
    "asked_after",
    "resend_answer",
    "resume_end",
]

RESUME_TYPE: Final = "gravpy.resume"
RESUME_END_TYPE: Final = "gravpy.resume.end"
HOLD_TIMEOUT: Final = 10.0  # an origin that never answers releases the held messages then
RESTART_GAP: Final = 1 << 20  # numbers an origin jumps over after an unclean end

_log = logs.get_logger("gravpy.mesh.resume")
L = TypeVar("L")


def resume_request(last: int) -> Message:
    """The request a receiver sends an origin: resend what you numbered after ``last``."""
    return Message(new_id(), "", "", RESUME_TYPE, time.time(), str(last).encode(), None)


def asked_after(request: Message, current: int) -> int:
    """The number to resend after: the one asked for, or 0 if it is above ``current`` (this
    origin lost its numbering: everything it holds is resent; see the module docstring)."""
    text = request.data.decode(errors="replace")
    after = int(text) if text.isdigit() and len(text) < 20 else current
    if after > current:
        _log.warning("resume_ahead", asked_after=after, current=current)
        return 0
    return after


def resend_answer(
    after: int,
    current: int,
    held: tuple[list[tuple[int, Message]], int],
    wants: Callable[[str], bool],
    skipped: tuple[range, ...] = (),
) -> tuple[list[tuple[Message, int]], int]:
    """The origin's answer to a resume request from its buffer (``after``: ``asked_after`` the
    request; ``held``: ``sequenced_after`` that number): each message to resend with its number
    negated, then the resume end (number 0); and how many numbers fell out before they could be
    resent (``skipped``: the ranges of numbers this origin never gave, one per unclean restart,
    not counted)."""
    entries, oldest = held
    # numbers above ``after`` that are no longer held: before the oldest held, or all of them
    missing = range(after + 1, oldest if entries else current + 1)
    lost = max(0, len(missing) - sum(_overlap(missing, gap) for gap in skipped))
    answer = [(m, -seq) for seq, m in entries if wants(m.type) and not m.reply_to]
    data = f"{lost} {current} {missing.stop}".encode()
    answer.append((Message(new_id(), "", "", RESUME_END_TYPE, time.time(), data, None), 0))
    return answer, lost


def _overlap(a: range, b: range) -> int:
    return max(0, min(a.stop, b.stop) - max(a.start, b.start))


def resume_end(data: bytes) -> tuple[int, int | None, int | None]:
    """``(lost, the origin's current number, the first number it still held)`` from a resume
    end's data (None for a number it does not carry: an origin that sends only some)."""
    lost, current, kept = [*data.decode(errors="replace").split(" "), "", ""][:3]
    return _number(lost) or 0, _number(current), _number(kept)


def _number(text: str) -> int | None:
    return int(text) if text.isdigit() and len(text) < 20 else None


class Resumption(Generic[L]):
    """A receiver's side: the last number per origin, held live messages, losses by origin."""

    def __init__(self, deliver: Callable[[L, Message, int], None]) -> None:
        self.last: dict[str, int] = {}
        self.lost: dict[str, int] = {}
        self.resent = 0
        # per origin being resumed: what is held, by number (released in that order), and the
        # number it was asked after
        self._held: dict[str, dict[int, tuple[L, Message]]] = {}
        self._asked: dict[str, int] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._deliver = deliver  # the hub's normal path for one message from a link

    def restore(self, positions: Mapping[str, int]) -> None:
        """Positions kept across a restart of this node (``gravpy.daemon.positions``)."""
        self.last.update(positions)

    def baseline(self, origin: str, seq: int) -> None:
        """A number to resume ``origin`` from, if none is known: the next link asks after it."""
        self.last.setdefault(origin, seq)

    def seen(self, origin: str, seq: int) -> None:
        if seq > self.last.get(origin, 0):
            self.last[origin] = seq

    def start(self, origin: str) -> Message | None:
        """A link to ``origin`` opened: the request to send it, or None if nothing to ask."""
        last = self.last.get(origin)
        if last is None:
            return None
        self._held.setdefault(origin, {})
        self._asked[origin] = last
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
            held[seq] = (link, msg)
        else:
            self.lost[origin] = self.lost.get(origin, 0) + 1
        return True

    def resent_now(self, origin: str, link: L, msg: Message, seq: int, limit: int) -> bool:
        """True if ``msg``, resent by ``origin`` as number ``seq``, is to be delivered now: it
        comes before every live message held. One numbered after the first held is held with
        them instead (or dropped, if it is held already or the hold is full: the live copy was
        then counted), so the origin's order holds even when the request went out late (a
        restarted node waits for its apps first) and the resend overlaps what is held."""
        held = self._held.get(origin)
        if not held or seq < next(iter(held)):  # (live messages come in order: the first is
            return True  # the lowest)
        if seq not in held and len(held) < limit:
            held[seq] = (link, msg)
        return False

    def ended(
        self, origin: str, lost: int, current: int | None = None, kept_from: int | None = None
    ) -> None:
        """The origin's resume end: count what fell out (``lost`` numbers before ``kept_from``,
        the first it still held, less those held here: they came live), let the held messages
        through in the origin's order (and move ``last`` back if the origin's numbering
        restarted below it)."""
        asked = self._asked.pop(origin, None)
        held = self._held.get(origin)
        if lost and held and asked is not None and kept_from is not None:
            lost = max(0, lost - sum(1 for seq in held if asked < seq < kept_from))
        if lost:
            self.lost[origin] = self.lost.get(origin, 0) + lost
            _log.warning("messages_lost", origin=origin, count=lost)
        if current is not None and current < self.last.get(origin, 0):
            _log.warning(
                "origin_numbering_restarted", origin=origin, last=self.last[origin], now=current
            )
            self.last[origin] = current
        self.release(origin)

    def release(self, origin: str) -> None:
        timer = self._timers.pop(origin, None)
        if timer is not None:
            timer.cancel()
        self._asked.pop(origin, None)
        held = self._held.pop(origin, {})
        for seq in sorted(held):
            link, msg = held[seq]
            self._deliver(link, msg, seq)

    def release_all(self, origins: Iterable[str]) -> None:
        for origin in list(origins):
            self.release(origin)

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._held.clear()
        self._asked.clear()
