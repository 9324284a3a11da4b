"""Groups (deliver to one): names, the mesh's "you were chosen" mark, and the member pick.

Theory of operation
-------------------
Pods that join a group share the messages their filters admit: each message goes to exactly one
live member anywhere on the mesh, while pods outside any group still get their own copy. Two
decisions make that happen, each taken once:

1. **Which node.** The node where a message enters the mesh (the sender's node) knows, from the
   interests its links advertise, how many members of each group sit behind each link; the pure
   ``Router`` picks one place per group (this node or one link), weighted by member count
   (``WeightedTurns``: smooth weighted round robin with a random phase, so 300 messages to three
   equal members give each about 100, and several senders do not move in lock step).
2. **Which member.** The chosen node's bus picks one local member (``Bus``: round robin, skipping
   members whose inbox is congested while another has room).

A copy of the message sent to a link chosen for groups carries the reserved header
``GROUP_HEADER`` naming those groups (space-separated). A node delivers grouped copies only for the
groups named there (or, for a message sent here, for the groups its router placed here); the
receiving node strips the header before any pod sees the message. Pods may not send the header
themselves (``UsageError``), so a mark always comes from a node's router.

Replies are for their asker: a message with ``reply_to`` set is never given to a group.
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Iterable, Sequence
from typing import Final

from gravpy.errors import UsageError
from gravpy.message import Message, validate_type

__all__ = [
    "GROUP_HEADER",
    "WeightedTurns",
    "check_group",
    "marked",
    "unmarked",
]

GROUP_HEADER: Final = "grav-groups"
"""The reserved header a node's router puts on a copy chosen for groups (space-separated names)."""

_TURNS_LIMIT: Final = 4096  # groups whose round-robin state is kept (oldest forgotten first)


def check_group(name: object) -> str:
    """Return ``name`` if it is a valid group name, else raise ``UsageError``.

    A group name follows the rules of a message type: dot-separated tokens without whitespace,
    ``*`` or ``>`` (``"workers"``, ``"gravctl.reply"``).
    """
    try:
        return validate_type(name)  # type: ignore[arg-type]
    except UsageError:
        raise UsageError(
            f"invalid group name {name!r}: use dot-separated tokens, no whitespace or wildcards"
        ) from None


def marked(msg: Message, groups: Sequence[str]) -> Message:
    """A copy of ``msg`` that tells the receiving node it was chosen for ``groups``."""
    headers = dict(msg.headers) if msg.headers else {}
    headers[GROUP_HEADER] = " ".join(groups)
    return Message(
        uuid=msg.uuid,
        parent_id=msg.parent_id,
        reply_to=msg.reply_to,
        type=msg.type,
        timestamp=msg.timestamp,
        data=msg.data,
        headers=headers,
    )


def unmarked(msg: Message) -> tuple[Message, tuple[str, ...]]:
    """Take the mark off a message that just arrived (in place: the receiving node owns the
    decoded message until it delivers it); return it and the groups the mark named."""
    headers = msg.headers or {}
    names = tuple(n for n in headers.pop(GROUP_HEADER, "").split(" ") if n)
    if not headers:
        msg.headers = None
    return msg, names


class WeightedTurns:
    """Smooth weighted round robin per group, over options that come and go.

    ``pick(group, options)`` takes ``(key, weight)`` pairs and returns the chosen key. Each option's
    running score grows by its weight; the highest score wins and pays back the total, so over any
    window each option is chosen in proportion to its weight, evenly spread. A new option starts at
    a random score (seeded by ``rng``), which de-synchronises senders that start together.
    """

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()
        self._scores: dict[str, dict[Hashable, float]] = {}

    def pick(self, group: str, options: Iterable[tuple[Hashable, int]]) -> Hashable | None:
        """The key chosen for ``group`` among ``options`` (None if there are none)."""
        scores = self._scores.get(group)
        if scores is None:
            if len(self._scores) >= _TURNS_LIMIT:
                del self._scores[next(iter(self._scores))]
            scores = self._scores[group] = {}
        total = 0
        best: Hashable | None = None
        best_score = 0.0
        seen: list[Hashable] = []
        for key, weight in options:
            score = scores.get(key)
            if score is None:
                score = self._rng.random() * weight
            score += weight
            scores[key] = score
            total += weight
            seen.append(key)
            if best is None or score > best_score:
                best, best_score = key, score
        if best is None:
            return None
        scores[best] -= total
        if len(scores) > len(seen):  # forget options that are gone
            for key in [k for k in scores if k not in seen]:
                del scores[key]
        return best
