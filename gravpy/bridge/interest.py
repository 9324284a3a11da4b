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

What the announcements say is worked out once per change (``_View``) and kept: every bridge
re-announces each interval, and one that says what it said before only refreshes its time (one
comparison). An announcement carries at most ``MAX_ANNOUNCED`` patterns and group entries
(``Announcement.decode``), and ``reduce_patterns`` looks each pattern up in a tree of the
others' tokens instead of comparing it with every other one.

Times are passed in (``now``), so the table is tested without a clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Final

from gravpy.bridge.subjects import MAX_ANNOUNCED, Announcement
from gravpy.errors import UsageError
from gravpy.filter import Pattern

__all__ = ["InterestTable", "fitted", "matcher", "reduce_patterns", "summed_groups", "widened"]


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
        self._view = self._work_out()

    def heard(self, ann: Announcement, now: float) -> bool:
        """Record ``ann``; True if what this bridge must publish or who exports changed. An
        announcement that repeats the bridge's last one (what every bridge does each interval)
        costs one comparison: only its time is kept."""
        if ann.node == self.node:
            return False
        old = self._heard.get(ann.node)
        if ann.bye:
            if old is None:
                return False
            del self._heard[ann.node]
        elif old is not None and _same(old.announcement, ann):
            old.announcement, old.at = ann, now  # (its sending time: ``Announcement.lag``)
            return False
        else:
            self._heard[ann.node] = _Heard(ann, now)
        return self._refresh()

    def expire(self, now: float) -> bool:
        """Forget bridges silent for longer than ``ttl``; True if that changed anything."""
        old = [n for n, h in self._heard.items() if now - h.at > self.ttl]
        if not old:
            return False
        for node in old:
            del self._heard[node]
        self.expired += len(old)
        return self._refresh()

    def forget_all(self) -> None:
        self._heard.clear()
        self._refresh()

    def _refresh(self) -> bool:
        """Work out what the announcements say, once per change; True if that changed."""
        view = self._work_out()
        changed = view != self._view
        self._view = view
        return changed

    def _work_out(self) -> _View:
        """What the announcements heard say now."""
        remote: set[str] = set()
        own: set[str] = set()
        groups: dict[tuple[str, str], dict[str, int]] = {}
        views = []
        for node, h in self._heard.items():
            ann = h.announcement
            if ann.mesh == self.mesh:
                own.update(ann.patterns)
                continue
            remote.update(ann.patterns)
            for group, pattern, members in ann.groups:
                if members > 0:
                    meshes = groups.setdefault((group, pattern), {})
                    meshes[ann.mesh] = max(members, meshes.get(ann.mesh, 0))
            subscribed = {*ann.patterns, *(p for _, p, _ in ann.groups)}
            views.append((ann.mesh, node, tuple(sorted(subscribed))))
        bridges = frozenset(n for n, h in self._heard.items() if h.announcement.mesh == self.mesh)
        return _View(
            reduce_patterns(remote),
            self.exporter(True),
            bridges,
            groups,
            frozenset(views),
            reduce_patterns(own),
        )

    def remote_patterns(self) -> tuple[str, ...]:
        """What the bridges of other meshes want, reduced (``reduce_patterns``)."""
        return self._view.remote_patterns

    def remote_groups(self) -> dict[tuple[str, str], dict[str, int]]:
        """(group, pattern) -> {mesh: members} for the groups other meshes have members of (a
        mesh's bridges announce the same counts; the largest is kept)."""
        return {key: dict(meshes) for key, meshes in self._view.remote_groups.items()}

    def remote_view(self) -> frozenset[tuple[str, str, tuple[str, ...]]]:
        """(mesh, node, patterns) for each bridge of another mesh: what it subscribed to (its
        groups' patterns included)."""
        return self._view.remote_view

    def remote_meshes(self) -> tuple[str, ...]:
        return tuple(sorted({h.announcement.mesh for h in self._heard.values()} - {self.mesh}))

    def own_bridges(self) -> frozenset[str]:
        """The other nodes of this mesh that bridge."""
        return self._view.own_bridges

    def own_mesh_patterns(self) -> tuple[str, ...]:
        """What the other bridges of this mesh announced (each its own node's and non-bridge
        peers' wants, never what it learned from another bridge: no pattern outlives its pod)."""
        return self._view.own_patterns

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


def _same(old: Announcement, new: Announcement) -> bool:
    """True if ``new`` says what ``old`` said (all but its sending time and query)."""
    return (
        old.mesh == new.mesh
        and old.ready == new.ready
        and old.patterns == new.patterns
        and old.groups == new.groups
    )


@dataclass(frozen=True, slots=True)
class _View:
    """What the table's announcements say, worked out once per change (``InterestTable``)."""

    remote_patterns: tuple[str, ...]
    exporter: str | None
    own_bridges: frozenset[str]
    remote_groups: dict[tuple[str, str], dict[str, int]]
    remote_view: frozenset[tuple[str, str, tuple[str, ...]]]
    own_patterns: tuple[str, ...]


def reduce_patterns(patterns: set[str] | frozenset[str]) -> tuple[str, ...]:
    """The patterns no other one of them covers, sorted: ``>`` alone if present.

    The patterns are put in a tree of their tokens, and each is looked up in it along the
    tokens that could cover its own (the same token, or ``*``): a pattern meets only the few
    that share its first tokens, not every other one (``_covered``)."""
    if ">" in patterns:
        return (">",)
    tree: _Tree = {}
    split = [(p, p.split(".")) for p in patterns]
    for _, tokens in split:
        node = tree
        for token in tokens[:-1]:
            node = node.setdefault(token, {})
        node.setdefault(_TAIL if tokens[-1] == ">" else tokens[-1], {})[_END] = {}
    return tuple(sorted(p for p, tokens in split if not _covered(tree, tokens)))


# A tree of patterns by token: ``_END`` under the node of a pattern's last token (``>`` is the
# token ``_TAIL``). Neither can be a token: tokens hold no whitespace.
_Tree = dict[str, "_Tree"]
_END: Final = " "
_TAIL: Final = " >"


def _covered(tree: _Tree, tokens: list[str]) -> bool:
    """True if another pattern in ``tree`` matches every type the pattern ``tokens`` does: a
    ``*`` covers any token and only ``*`` covers ``*``; ``x.>`` covers what has more tokens
    after ``x`` (or as many, ending in ``>`` too)."""
    tail = tokens[-1] == ">"
    body = len(tokens) - 1 if tail else len(tokens)
    stack = [(tree, 0, True)]  # (tree node, tokens matched, along the pattern's own tokens)
    while stack:
        node, i, same = stack.pop()
        wide = node.get(_TAIL)
        if wide is not None and _END in wide and (i < body or (tail and not same)):
            return True
        if i == body:
            if not tail and not same and _END in node:
                return True
            continue
        token = tokens[i]
        child = node.get(token)
        if child is not None:
            stack.append((child, i + 1, same))
        if token != "*":
            star = node.get("*")
            if star is not None:
                stack.append((star, i + 1, False))
    return False


def widened(patterns: tuple[str, ...], limit: int) -> tuple[str, ...]:
    """``patterns`` (reduced) if there are at most ``limit``, else fewer, wider ones covering
    them all: each of two or more tokens becomes its first token and ``>``; ``>`` alone if
    even those are too many."""
    if len(patterns) <= limit:
        return patterns
    wide = _first_tokens(patterns)
    return wide if len(wide) <= limit else (">",)


def _first_tokens(patterns: tuple[str, ...]) -> tuple[str, ...]:
    """``patterns`` widened to their first token and ``>`` (one token: as it is), reduced."""
    return reduce_patterns({p.split(".", 1)[0] + ".>" if "." in p else p for p in patterns})


def fitted(ann: Announcement, max_bytes: int) -> tuple[bytes, bool]:
    """``ann`` encoded as the others accept it (at most ``MAX_ANNOUNCED`` patterns, widened,
    and group entries: more, and they would refuse it whole) within ``max_bytes`` (NATS's
    ``max_payload``: nats-py refuses to publish more), and whether it was cut: group entries
    dropped (a group name cannot be widened: other meshes place no copies here for them), or
    patterns widened to fit ``max_bytes``. To fit, the patterns are widened first (to their
    first tokens, then ``>``): that only makes the other meshes publish more than this one
    subscribes to; then the group entries are cut, to half as many each time."""
    groups = ann.groups[:MAX_ANNOUNCED]
    patterns = widened(ann.patterns, MAX_ANNOUNCED)
    for stage in (patterns, _first_tokens(patterns), (">",)):
        data = replace(ann, patterns=stage, groups=groups).encode()
        if len(data) <= max_bytes:
            return data, len(ann.groups) > MAX_ANNOUNCED or stage is not patterns
    while len(data) > max_bytes and groups:
        groups = groups[: len(groups) // 2]
        data = replace(ann, patterns=(">",), groups=groups).encode()
    return data, True


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
