"""The resume gate: a restarted node asks its origins for what it missed once its apps are back.

Theory of operation
-------------------
An origin resends only what the asking node wants *when it asks* (``gravpy.mesh.resume``). A node
that restarted wants little at first: the apps (leaves) that were attached to it are still
redialling. Had it asked at once, what those apps missed would be neither resent nor counted.

So a restarted gravd tells the gate which leaves were attached when it last saved its positions,
and what each wanted (``expect``). Until each of them has relinked and said what it wants, or
``grace`` seconds have passed, the gate keeps the resume requests the hub gives it (``ask``), and
the node still advertises those leaves' patterns to its peers (``patterns``; the hub puts them in
its ``InterestTable``), so the apps publishing for them meanwhile do not see ``no_responders`` and
their messages still come here. The live messages of an origin wait on this side until its
resend ends (``Resumption.holds``, bounded, each overflow counted lost, released by
``HOLD_TIMEOUT`` at the latest). Group memberships of the absent leaves are not kept. When the last expected
leaf's interests arrive (``leaf_back``), the requests go out on the next loop turn: after the
node's re-advertisement to its peers, which the hub schedules first, so each origin knows what the
node wants before it answers.

A node that did not restart, or had no leaves, has an open gate: ``ask`` sends at once. A request
whose link ended meanwhile is dropped (the next link asks again from the last number).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from gravpy import _log as logs
from gravpy.message import Message

__all__ = ["ResumeGate"]

_log = logs.get_logger("gravpy.mesh.resume_gate")


class _Link(Protocol):
    @property
    def is_open(self) -> bool: ...

    def enqueue(self, msg: Message) -> int: ...


class ResumeGate:
    """Resume requests held until the leaves a restarted node expects are back."""

    def __init__(self, readvertise: Callable[[], None] = lambda: None) -> None:
        # the node re-reads ``patterns`` and tells its peers (``Advertiser``)
        self._readvertise = readvertise
        self._patterns: frozenset[str] = frozenset()
        self._expected: set[str] = set()
        self._held: list[tuple[_Link, Message]] = []
        self._timer: asyncio.TimerHandle | None = None
        self.opened_by: str = "open"  # "open", "leaves", "grace": how the gate last opened

    @property
    def waiting(self) -> frozenset[str]:
        """The leaves still expected."""
        return frozenset(self._expected)

    @property
    def patterns(self) -> frozenset[str]:
        """What the leaves still expected wanted (advertised to peers meanwhile)."""
        return self._patterns

    def expect(self, leaves: Mapping[str, Iterable[str]], grace: float) -> None:
        """Hold requests until each of ``leaves`` (uuid: the patterns it wanted) is back, or
        ``grace`` seconds have passed."""
        self._expected = set(leaves)
        if not self._expected:
            return
        self._patterns = frozenset(p for patterns in leaves.values() for p in patterns)
        self.opened_by = ""
        self._timer = asyncio.get_running_loop().call_later(grace, self._open, "grace")
        self._readvertise()

    def ask(self, link: _Link, request: Message) -> None:
        """Send ``request`` on ``link`` now, or once the gate opens."""
        if self._expected:
            self._held.append((link, request))
        else:
            link.enqueue(request)

    def moved(self, old: _Link, new: _Link) -> None:
        """``old``'s traffic moved to ``new`` (``gravpy.mesh.upgrade``): what is held for it
        goes there."""
        self._held = [(new if link is old else link, request) for link, request in self._held]

    def leaf_back(self, uuid: str) -> None:
        """Leaf ``uuid`` relinked and said what it wants."""
        if uuid not in self._expected:
            return
        self._expected.discard(uuid)
        if not self._expected:
            asyncio.get_running_loop().call_soon(self._open, "leaves")

    def _open(self, how: str) -> None:
        if self.opened_by:
            return
        if self._expected:
            _log.warning("resume_leaves_missing", leaves=sorted(self._expected))
        self.opened_by = how
        self._expected.clear()
        self._patterns = frozenset()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._readvertise()  # scheduled first: the peers hear what we want before the requests
        asyncio.get_running_loop().call_soon(self._send_held)

    def _send_held(self) -> None:
        held, self._held = self._held, []
        for link, request in held:
            if link.is_open:
                link.enqueue(request)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._expected.clear()
        self._held.clear()
