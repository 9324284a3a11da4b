"""Per-subject sequence numbers on what an exporter publishes, so importers count what NATS lost.

Theory of operation
-------------------
Core NATS delivers at most once: a message a bridge handed to nats-py can still vanish (written
to a server that then died, dropped by a server for a slow consumer) and the publisher never
learns it. So the exporter numbers what it publishes on each type subject (``Numbering``: one
counter per subject, starting at 1, under a tag drawn per bridge instance) and appends
`` s=<tag>:<n>`` to ``Grav-Meta`` as the message leaves (``Outbox.publish_all``; a message
dropped before that is counted by the exporter and takes no number). The exporter starts a new
epoch (``restart``: a fresh tag, every subject from 1) whenever what a remote bridge announced
it subscribed to changes, so every importer has been subscribed since number 1 of the current
epoch, and ``Gaps.seen`` counts every number that never came, the first ones included (a cluster
route may carry a remote subscription later than the announcement that made the exporter
publish). The bridge counts them (``lost["gap"]``): a loss between two meshes is counted on the
side that missed it. A number not above the last one seen starts afresh. A number is decimal
digits from 1 to ``MAX_NUMBER`` (``number_of``); anything else, from whoever may publish under
the prefix, is no number: the message crosses and no gap is counted before it. An importer that
follows more than ``_LIMIT // 2`` (tag, subject) pairs may forget one and count its numbers
again. Pure: no I/O.
"""

from __future__ import annotations

import secrets
from typing import Final

from gravpy.recent import RecentMap

__all__ = [
    "MAX_NUMBER",
    "SEQ_FIELD",
    "STAMP_MAX",
    "Gaps",
    "Numbering",
    "number_of",
    "sequence_of",
]

SEQ_FIELD: Final = " s="
MAX_NUMBER: Final = 2**63 - 1  # the largest sequence number (what a signed 64-bit integer holds)
_DIGITS: Final = len(str(MAX_NUMBER))
_LIMIT: Final = 65_536  # subjects (tags x subjects on the importer) remembered
_TAG_LENGTH: Final = 8  # hex digits of a tag
STAMP_MAX: Final = len(SEQ_FIELD) + _TAG_LENGTH + 1 + _DIGITS  # the longest ``stamp``


class Numbering:
    """The exporter's counters: ``stamp(subject)`` is the ``Grav-Meta`` suffix for the next
    message published on ``subject``."""

    def __init__(self) -> None:
        self.tag = secrets.token_hex(_TAG_LENGTH // 2)
        self._next: dict[str, int] = {}

    def restart(self) -> None:
        """A new epoch: a fresh tag, every subject from 1 (what the importers subscribed to
        changed, so each of them has been subscribed since number 1)."""
        self.tag = secrets.token_hex(_TAG_LENGTH // 2)
        self._next.clear()

    def stamp(self, subject: str) -> str:
        counters = self._next
        n = counters.get(subject, 0) + 1
        if n == 1 and len(counters) >= _LIMIT:
            counters.clear()  # importers see a restart on the forgotten subjects: no false gap
        counters[subject] = n
        return f"{SEQ_FIELD}{self.tag}:{n}"


def sequence_of(meta: str) -> tuple[str, int] | None:
    """The (tag, number) at the end of a ``Grav-Meta`` value, or None (an old or plain sender,
    or a number that is not one: ``number_of``)."""
    at = meta.rfind(SEQ_FIELD)
    if at < 0:
        return None
    tag, _, number = meta[at + len(SEQ_FIELD) :].partition(":")
    n = number_of(number)
    return None if n is None else (tag, n)


def number_of(text: str) -> int | None:
    """The sequence number ``text`` writes (decimal digits, 1 to ``MAX_NUMBER``), or None:
    anyone who may publish under the prefix can write one, and ``int`` would also read a sign,
    underscores, spaces and other scripts' digits."""
    if not (text.isascii() and text.isdigit() and len(text) <= _DIGITS):
        return None
    n = int(text)
    return n if 0 < n <= MAX_NUMBER else None


class Gaps:
    """The importer's view of each (tag, subject) numbering: how many numbers never came. The
    numbering of the last message is kept aside (a stream's next message is on it) and stored
    in the map when another one comes."""

    def __init__(self) -> None:
        self._last: RecentMap[tuple[str, str], int] = RecentMap(_LIMIT)
        self._current = ("", "")
        self._n: int | None = None

    def seen(self, tag: str, subject: str, n: int) -> int:
        """Number ``n`` of ``tag`` arrived on ``subject``: how many numbers before it are
        missing (counted from 1 for a tag or subject not seen before, or a restart). A number
        outside 1 to ``MAX_NUMBER`` is no number: 0, and nothing is remembered."""
        if not 0 < n <= MAX_NUMBER:
            return 0
        current = self._current
        if tag == current[0] and subject == current[1]:
            last = self._n
        else:
            if self._n is not None:
                self._last[current] = self._n
            self._current = key = (tag, subject)
            last = self._last.get(key)
        self._n = n
        if last is None or n <= last:
            return n - 1
        return n - last - 1
