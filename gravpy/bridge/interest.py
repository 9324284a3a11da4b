"""What the other bridges said: remote interests and who exports for this mesh. Pure: no I/O.

Theory of operation
-------------------
Every bridge announces, on connecting, on every change and every ``announce_interval``, what its
mesh wants (``Announcement``). The ``InterestTable`` keeps the last announcement of each bridge
until it is older than ``ttl`` or the bridge says ``bye``, and answers:

- ``remote_patterns()``: what bridges of *other* meshes want: what this mesh must publish.
- ``remote_groups()``: the groups other meshes have members of, with their patterns and member
  counts per mesh: where this mesh's exporter may place a group's copy.
- ``exporter``: which bridge of this mesh publishes. Every bridging node of a mesh receives the
  same messages from its mesh; only the ready bridge with the smallest node uuid publishes them,
  so a message crosses once. While a new bridge is not ready (it has not yet told its mesh what
  the remote meshes want) the old exporter keeps publishing; when two briefly both publish, the
  copies carry the same uuid and every node's seen-set drops the second.
- ``own_bridges()``: the nodes of this mesh that bridge, whose advertised interests include the
  remote meshes' and are therefore not this mesh's own wants; ``own_mesh_patterns()``: what
  those bridges announced their own nodes want (so every bridge subscribes for a pod on another
  bridging node too).

Times are passed in (``now``), so the table is tested without a clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from gravpy.bridge.subjects import Announcement
from gravpy.errors import UsageError
from gravpy.filter import Pattern

__all__ = ["InterestTable", "matcher", "reduce_patterns", "summed_groups"]


@dataclass(slots=True)
class _Heard:
    announcement: Announcement
    at: float


class InterestTable:
    """The announcements heard from the other bridges; see the module docstring."""

    def __init__(self, mesh: str, node: str, ttl: float) -> None:
        self.mesh = mesh
        self.node = node
        self.ttl = ttl
        self._heard: dict[str, _Heard] = {}  # node uuid -> last announcement
        # bridges forgotten for falling silent past ``ttl`` (gone, or this node too busy to hear
        # them: their meshes' wants are not exported meanwhile, so it must show)
        self.expired = 0

    def heard(self, ann: Announcement, now: float) -> bool:
        """Record ``ann``; True if what this bridge must publish or who exports changed."""
        if ann.node == self.node:
            return False
        before = self._view()
        if ann.bye:
            self._heard.pop(ann.node, None)
        else:
            self._heard[ann.node] = _Heard(ann, now)
        return self._view() != before

    def expire(self, now: float) -> bool:
        """Forget bridges silent for longer than ``ttl``; True if that changed anything."""
        old = [n for n, h in self._heard.items() if now - h.at > self.ttl]
        if not old:
            return False
        before = self._view()
        for node in old:
            del self._heard[node]
        self.expired += len(old)
        return self._view() != before

    def forget_all(self) -> None:
        self._heard.clear()

    def remote_patterns(self) -> tuple[str, ...]:
        """What the bridges of other meshes want, reduced (``reduce_patterns``)."""
        patterns: set[str] = set()
        for h in self._heard.values():
            if h.announcement.mesh != self.mesh:
                patterns.update(h.announcement.patterns)
        return reduce_patterns(patterns)

    def remote_groups(self) -> dict[tuple[str, str], dict[str, int]]:
        """(group, pattern) -> {mesh: members} for the groups other meshes have members of (a
        mesh's bridges announce the same counts; the largest is kept)."""
        found: dict[tuple[str, str], dict[str, int]] = {}
        for h in self._heard.values():
            mesh = h.announcement.mesh
            if mesh == self.mesh:
                continue
            for group, pattern, members in h.announcement.groups:
                if members > 0:
                    meshes = found.setdefault((group, pattern), {})
                    meshes[mesh] = max(members, meshes.get(mesh, 0))
        return found

    def remote_view(self) -> frozenset[tuple[str, str, tuple[str, ...]]]:
        """(mesh, node, patterns) for each bridge of another mesh: what it subscribed to (its
        groups' patterns included)."""
        return frozenset(
            (a.mesh, node, tuple(sorted({*a.patterns, *(p for _, p, _ in a.groups)})))
            for node, h in self._heard.items()
            if (a := h.announcement).mesh != self.mesh
        )

    def remote_meshes(self) -> tuple[str, ...]:
        return tuple(sorted({h.announcement.mesh for h in self._heard.values()} - {self.mesh}))

    def own_bridges(self) -> frozenset[str]:
        """The other nodes of this mesh that bridge."""
        return frozenset(n for n, h in self._heard.items() if h.announcement.mesh == self.mesh)

    def own_mesh_patterns(self) -> tuple[str, ...]:
        """What the other bridges of this mesh announced (each its own node's and non-bridge
        peers' wants, never what it learned from another bridge: no pattern outlives its pod)."""
        patterns: set[str] = set()
        for h in self._heard.values():
            if h.announcement.mesh == self.mesh:
                patterns.update(h.announcement.patterns)
        return reduce_patterns(patterns)

    def exporter(self, self_ready: bool) -> str | None:
        """The node uuid of this mesh's exporter, or None if no bridge of it is ready."""
        ready = [
            n
            for n, h in self._heard.items()
            if h.announcement.mesh == self.mesh and h.announcement.ready
        ]
        if self_ready:
            ready.append(self.node)
        return min(ready) if ready else None

    def _view(self) -> tuple[object, ...]:
        groups = sorted((k, sorted(v.items())) for k, v in self.remote_groups().items())
        view = self.remote_view()
        own = self.own_mesh_patterns()
        return self.remote_patterns(), self.exporter(True), self.own_bridges(), groups, view, own


def reduce_patterns(patterns: set[str] | frozenset[str]) -> tuple[str, ...]:
    """The patterns no other one of them covers, sorted: ``>`` alone if present."""
    if ">" in patterns:
        return (">",)
    kept = [p for p in patterns if not any(q != p and _covers(q, p) for q in patterns)]
    return tuple(sorted(kept))


def _covers(wide: str, narrow: str) -> bool:
    """True if every type ``narrow`` matches, ``wide`` matches too."""
    if wide.endswith(".>") and not narrow.endswith(".>"):
        w = wide[:-2].split(".")
        n = narrow.split(".")
        return len(n) > len(w) and all(a in ("*", b) for a, b in zip(w, n, strict=False))
    if wide.endswith(".>"):
        w, n = wide[:-2].split("."), narrow[:-2].split(".")
        return len(n) >= len(w) and all(a in ("*", b) for a, b in zip(w, n, strict=False))
    if narrow.endswith(".>"):
        return False
    w, n = wide.split("."), narrow.split(".")
    return len(w) == len(n) and all(a in ("*", b) for a, b in zip(w, n, strict=True))


def summed_groups(groups: Iterable[tuple[str, str, int]]) -> tuple[tuple[str, str, int], ...]:
    """(group, pattern, members) with the members of each (group, pattern) added up, sorted."""
    total: dict[tuple[str, str], int] = {}
    for group, pattern, members in groups:
        total[(group, pattern)] = total.get((group, pattern), 0) + members
    return tuple(sorted((g, p, n) for (g, p), n in total.items() if n > 0))


def matcher(patterns: tuple[str, ...]) -> tuple[Pattern, ...]:
    """Compiled patterns (invalid ones from a remote bridge are skipped)."""
    compiled = []
    for text in patterns:
        try:
            compiled.append(Pattern(text))
        except UsageError:
            continue
    return tuple(compiled)
