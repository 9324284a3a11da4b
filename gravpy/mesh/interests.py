"""What a node tells each link it may send: kept incrementally, so one attach costs one link's work.

Theory of operation
-------------------
What a node advertises on a link is what can be reached *through* it from there: the local pods'
patterns and groups, plus what other links contributed: every other link for a leaf, the leaves and
the peers it relays for (``gravpy.mesh.routing.relays``) for a peer. Recomputing that for every
link on every change costs the square of the links; with hundreds of apps attached, one attach
blocked the loop for a second.

``InterestTable`` keeps, instead, what each open link contributes (its patterns, its group
members), which links hold each pattern, how many leaves hold it, and the summed group members.
A change to one link's contribution marks *dirty* only the links whose advertisement can change:

- a pattern held by no link before (or by none after): every leaf but the holder, and, when it
  is the first (or last) leaf holding it, every peer;
- a pattern held by exactly one other link before: that link (a leaf is never told its own);
- a peer's pattern: the peers that relay for it;
- group members: every link that adds them up (all others for a leaf's; leaves and relaying peers
  for a peer's); the local bus changing: every link.

``flush`` recomputes the advertisement of the dirty links only (each from the kept counts, not
from the other links) and asks each to ``advertise``; the link sends INTERESTS only when what it
says changed. ``statistics`` counts both, so a test can see the work stay flat.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import Callable, Iterable, Iterator

from gravpy.mesh.peer_link import PeerLink
from gravpy.mesh.routing import relays

__all__ = ["AbsentPeers", "InterestStatistics", "InterestTable"]

Groups = tuple[tuple[str, str, int], ...]
Local = Callable[[], tuple[tuple[str, ...], Groups]]


@dataclasses.dataclass(frozen=True, slots=True)
class InterestStatistics:
    """Totals since start: advertisements computed, and INTERESTS frames they sent."""

    computed: int
    sent: int


@dataclasses.dataclass(frozen=True, slots=True)
class _Contribution:
    patterns: frozenset[str]
    members: Counter[tuple[str, str]]
    leaf: bool


_NOTHING = _Contribution(frozenset(), Counter(), False)


class InterestTable:
    """Per-link contributions, reference-counted unions, and the links to re-advertise."""

    def __init__(self) -> None:
        self._links: dict[PeerLink, _Contribution] = {}
        self._leaves: set[PeerLink] = set()
        self._peers: set[PeerLink] = set()
        self._holders: dict[str, set[PeerLink]] = {}
        self._leaf_holders: Counter[str] = Counter()
        self._members_all: Counter[tuple[str, str]] = Counter()
        self._members_leaf: Counter[tuple[str, str]] = Counter()
        self._local_patterns: frozenset[str] = frozenset()
        self._local_members: Counter[tuple[str, str]] = Counter()
        self._local_dirty = True
        self._absent: frozenset[str] = frozenset()  # peers away for a moment (resume window)
        self._expected: frozenset[str] = frozenset()  # leaves a restarted node waits for
        self._dirty: set[PeerLink] = set()
        self._computed = 0
        self._sent = 0

    # -- changes ---------------------------------------------------------------------------------

    def local_changed(self) -> None:
        """The local pods' interests may have changed (read again at the next ``flush``)."""
        self._local_dirty = True

    def absent_changed(self, patterns: Iterable[str]) -> None:
        """The interests of peers whose link dropped a moment ago: still advertised to leaves,
        so their apps keep publishing while the peer relinks (``gravpy.mesh.resume``)."""
        new = frozenset(patterns)
        if new != self._absent:
            self._absent = new
            self._dirty.update(self._leaves)

    def expected_changed(self, patterns: Iterable[str]) -> None:
        """The interests of the leaves a restarted node waits for (``gravpy.mesh.resume_gate``):
        still advertised to peers, so what is sent for those apps meanwhile comes here."""
        new = frozenset(patterns)
        if new != self._expected:
            self._expected = new
            self._dirty.update(self._peers)

    def add(self, link: PeerLink) -> None:
        """An open link: it contributes what it said so far and is told what it may send."""
        if link in self._links:
            return
        self._links[link] = _Contribution(frozenset(), Counter(), link.is_leaf)
        (self._leaves if link.is_leaf else self._peers).add(link)
        self._dirty.add(link)
        self.update(link)

    def update(self, link: PeerLink) -> None:
        """``link`` said new interests: apply the difference to the counts."""
        old = self._links.get(link)
        if old is None:
            return
        members: Counter[tuple[str, str]] = Counter()
        rules = link.identity.subscribe if link.identity is not None else None
        for g, p, n in link.group_interests:
            # a member behind an identity that may not receive part of its pattern is offered
            # only the rest: no other node places a copy here that no member may take
            for part in (p,) if rules is None else rules.narrowed(p):
                members[g, part] += n
        new = _Contribution(frozenset(link.interests), members, old.leaf)
        self._apply(link, old, new)

    def remove(self, link: PeerLink) -> None:
        """``link`` ended (or was replaced): take back what it contributed."""
        old = self._links.get(link)
        if old is None:
            return
        self._apply(link, old, dataclasses.replace(_NOTHING, leaf=old.leaf))
        del self._links[link]
        self._leaves.discard(link)
        self._peers.discard(link)
        self._dirty.discard(link)

    def neighbours_changed(self, link: PeerLink) -> None:
        """Peer ``link`` said whom it links to: whom we relay for towards it may have changed."""
        if link in self._peers:
            self._dirty.add(link)

    # -- advertising -----------------------------------------------------------------------------

    def flush(self, local: Local) -> None:
        """Tell each dirty open link its advertisement (``local`` is read only if it changed)."""
        if self._local_dirty:
            self._local_dirty = False
            patterns, groups = local()
            members = Counter({(g, p): n for g, p, n in groups})
            if frozenset(patterns) != self._local_patterns or members != self._local_members:
                self._local_patterns = frozenset(patterns)
                self._local_members = members
                self._dirty.update(self._links)
        dirty, self._dirty = self._dirty, set()
        for link in dirty:
            self.advertise(link)

    def advertise(self, link: PeerLink) -> None:
        """Tell ``link`` (now) what it may send us, if that changed."""
        if not link.is_open or link not in self._links:
            return
        self._computed += 1
        patterns, groups = self.advertisement(link)
        if link.advertise(patterns, groups):
            self._sent += 1

    def advertisement(self, to: PeerLink) -> tuple[tuple[str, ...], Groups]:
        """What can be reached through this node from ``to``: patterns, then group members."""
        patterns = set(self._local_patterns)
        members = Counter(self._local_members)
        if to in self._leaves:
            patterns.update(p for p, hs in self._holders.items() if len(hs) > 1 or to not in hs)
            patterns.update(self._absent)
            members.update(self._members_all)
            members.subtract(self._links[to].members)
        else:
            patterns.update(self._leaf_holders)
            patterns.update(self._expected)
            members.update(self._members_leaf)
            for peer in self._relayed_for(to):
                patterns.update(self._links[peer].patterns)
                members.update(self._links[peer].members)
        groups = tuple(sorted((g, p, n) for (g, p), n in members.items() if n > 0))
        return ((">",) if ">" in patterns else tuple(sorted(patterns))), groups

    def statistics(self) -> InterestStatistics:
        return InterestStatistics(computed=self._computed, sent=self._sent)

    # -- the counts ------------------------------------------------------------------------------

    def _relayed_for(self, to: PeerLink) -> Iterable[PeerLink]:
        return (peer for peer in self._peers if peer is not to and relays(to, peer))

    def _relaying(self, link: PeerLink) -> Iterable[PeerLink]:
        """The peers whose advertisement includes what peer ``link`` contributes."""
        return (peer for peer in self._peers if peer is not link and relays(peer, link))

    def _apply(self, link: PeerLink, old: _Contribution, new: _Contribution) -> None:
        self._links[link] = new
        for pattern in old.patterns - new.patterns:
            self._release(link, pattern, new.leaf)
        for pattern in new.patterns - old.patterns:
            self._hold(link, pattern, new.leaf)
        if old.members != new.members:
            self._members_all.update(new.members)
            self._members_all.subtract(old.members)
            if new.leaf:
                self._members_leaf.update(new.members)
                self._members_leaf.subtract(old.members)
                self._mark_all_but(self._links, link)
            else:
                self._dirty.update(self._leaves)
                self._dirty.update(self._relaying(link))

    def _hold(self, link: PeerLink, pattern: str, leaf: bool) -> None:
        holders = self._holders.setdefault(pattern, set())
        self._holders_changed(link, holders)
        holders.add(link)
        if leaf:
            self._leaf_holders[pattern] += 1
            if self._leaf_holders[pattern] == 1:
                self._dirty.update(self._peers)
        else:
            self._dirty.update(self._relaying(link))

    def _release(self, link: PeerLink, pattern: str, leaf: bool) -> None:
        holders = self._holders.get(pattern, set())
        holders.discard(link)
        self._holders_changed(link, holders)
        if not holders:
            self._holders.pop(pattern, None)
        if leaf:
            self._leaf_holders[pattern] -= 1
            if self._leaf_holders[pattern] <= 0:
                del self._leaf_holders[pattern]
                self._dirty.update(self._peers)
        else:
            self._dirty.update(self._relaying(link))

    def _mark_all_but(self, links: Iterable[PeerLink], changed: PeerLink) -> None:
        """Mark ``links`` except ``changed`` (whose own advertisement this change leaves alone),
        never un-marking ``changed``: another change in this loop turn may have marked it."""
        self._dirty.update(link for link in links if link is not changed)

    def _holders_changed(self, link: PeerLink, others: set[PeerLink]) -> None:
        """``link`` starts or stops holding a pattern ``others`` hold: mark whom that changes."""
        if not others:  # the pattern appears for (or disappears from) every other leaf
            self._mark_all_but(self._leaves, link)
        elif len(others) == 1:  # the one holder now sees (or stops seeing) it from elsewhere
            self._dirty.update(others)


class AbsentPeers:
    """Peers whose link dropped without a withdraw: their interests stay advertised to leaves for
    the resume window, so a leaf's messages keep flowing (and are resent) when the peer is back."""

    def __init__(self, window: float, changed: Callable[[], None]) -> None:
        self._window = window
        self._changed = changed  # interests changed: re-advertise
        self._absent: dict[str, tuple[frozenset[str], asyncio.TimerHandle]] = {}

    def keep(self, peer: PeerLink) -> None:
        """``peer``'s link dropped: keep its interests for the window (if it had any)."""
        if not self._window or peer.info().withdrawn or not peer.interests:
            return
        self.forget(peer.uuid)
        timer = asyncio.get_running_loop().call_later(self._window, self.forget, peer.uuid)
        self._absent[peer.uuid] = (frozenset(peer.interests), timer)

    def forget(self, uuid: str) -> None:
        """``uuid`` is back (or its window passed): its kept interests go."""
        entry = self._absent.pop(uuid, None)
        if entry is not None:
            entry[1].cancel()
            self._changed()

    def patterns(self) -> Iterator[str]:
        return (p for patterns, _ in self._absent.values() for p in patterns)

    def close(self) -> None:
        for _, timer in self._absent.values():
            timer.cancel()
        self._absent.clear()
