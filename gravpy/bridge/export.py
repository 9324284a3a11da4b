"""``ExportRoutes``: which messages leave this mesh for NATS, and where their groups go. Pure.

Theory of operation
-------------------
A message of type ``T`` crosses to NATS when a remote mesh wants ``T`` (an ungrouped pattern it
announced), an ``export`` pattern admits it, or a remote mesh has members of a group admitting
``T`` that this mesh has none of. The answer for each type is cached (``Route``) until what the
meshes want changes.

Groups (deliver to one) across meshes follow one rule, decided where the message leaves its mesh:

1. **A group with a member in the origin mesh keeps its copy there.** The sender's node already
   placed it (``gravpy.groups``); nothing about that group crosses.
2. **Otherwise the exporter places it in exactly one other mesh**: of the meshes that announced
   members of the group for ``T``, one per message, weighted by member count (``WeightedTurns``,
   the same smooth round robin the router uses between links). The pick travels in the message's
   ``Grav-Meta`` (``g=<mesh>:<group>``); every mesh still receives the one NATS message (one
   uuid), and only the named mesh's importing bridge places the group, on one member of that
   mesh (``BridgeHost.inject``).

So a message reaches one member of a group across all meshes while the exporter's view of the
meshes is current; while a membership change is still being announced a copy may go to a mesh
whose member just left (counted as a group miss there) or stay home while a new remote member
waits. NATS queue groups are not used for this: a queue-group subscriber would receive a second
NATS message with the same uuid, which every node's seen-set drops once the ungrouped copy
arrived, or a different uuid, which ungrouped pods would receive twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from gravpy.bridge.interest import matcher, reduce_patterns, widened
from gravpy.bridge.port import Groups
from gravpy.bridge.subjects import SubjectMap, type_tokens, valid_pattern
from gravpy.errors import UsageError
from gravpy.filter import Pattern
from gravpy.groups import WeightedTurns
from gravpy.proto import DEFAULT_LIMITS

__all__ = ["ADVERTISED_LIMIT", "ExportRoutes", "Route"]

_CACHE_LIMIT = 4096
# patterns advertised for remote meshes: half of what an INTERESTS frame may carry, the rest left
# to the node's own pods and peers (past it, wider patterns: ``widened``)
ADVERTISED_LIMIT = DEFAULT_LIMITS.max_interests // 2
RemoteGroups = dict[tuple[str, str], dict[str, int]]  # (group, pattern) -> {mesh: members}


@dataclass(frozen=True, slots=True)
class Route:
    """Where a type goes on NATS: its ``subject``, its escaped type ``tokens`` (for the reply
    subject), and for each group to place elsewhere the (mesh, members) options."""

    subject: str
    tokens: str
    groups: tuple[tuple[str, tuple[tuple[str, int], ...]], ...] = ()


class ExportRoutes:
    """The routes of one exporting bridge; see the module docstring."""

    def __init__(self, subjects: SubjectMap, export: tuple[str, ...]) -> None:
        self._subjects = subjects
        self._export = export
        self._plain = matcher(export)
        self._own: tuple[tuple[str, Pattern], ...] = ()
        self._remote: tuple[tuple[str, Pattern, dict[str, int]], ...] = ()
        self._cache: dict[str, Route | None] = {}
        self._turns = WeightedTurns()

    def remote_changed(self, patterns: tuple[str, ...], groups: RemoteGroups) -> tuple[str, ...]:
        """What remote meshes want changed; returns what this node must advertise to its mesh
        (so its peers send those messages here): only valid patterns, and at most
        ``ADVERTISED_LIMIT`` (``widened``), since a pattern the mesh protocol refuses, or one
        too many, would make every INTERESTS frame of this node fail. What crosses is decided
        by the exact patterns (``route``)."""
        plain = {p for p in patterns if valid_pattern(p)} | set(self._export)
        wanted = reduce_patterns(plain | {p for _, p in groups if valid_pattern(p)})
        advertised = widened(wanted, ADVERTISED_LIMIT)
        self._plain = matcher(reduce_patterns(plain))
        self._remote = tuple(
            (group, compiled, meshes)
            for (group, pattern), meshes in sorted(groups.items())
            if (compiled := _compiled(pattern)) is not None
        )
        self._cache.clear()
        return advertised

    def own_groups_changed(self, groups: Groups) -> None:
        """The groups this mesh has members of changed."""
        own = {(g, p) for g, p, n in groups if n > 0}
        self._own = tuple((g, c) for g, p in sorted(own) if (c := _compiled(p)) is not None)
        self._cache.clear()

    def route(self, msg_type: str) -> Route | None:
        """The route of ``msg_type``, or None if it does not cross."""
        try:
            return self._cache[msg_type]
        except KeyError:
            pass
        route = None
        groups = self._groups_for(msg_type)
        if groups or any(p.matches(msg_type) for p in self._plain):
            route = Route(self._subjects.subject(msg_type), type_tokens(msg_type), groups)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[msg_type] = route
        return route

    def placed(self, route: Route) -> tuple[tuple[str, str], ...]:
        """(mesh, group): the mesh each of the route's groups goes to, for one message."""
        turns = self._turns
        return tuple((cast(str, turns.pick(g, options)), g) for g, options in route.groups)

    def _groups_for(self, msg_type: str) -> tuple[tuple[str, tuple[tuple[str, int], ...]], ...]:
        home = {g for g, pattern in self._own if pattern.matches(msg_type)}
        found: dict[str, dict[str, int]] = {}
        for group, pattern, meshes in self._remote:
            if group not in home and pattern.matches(msg_type):
                options = found.setdefault(group, {})
                for mesh, members in meshes.items():
                    options[mesh] = max(members, options.get(mesh, 0))
        return tuple((g, tuple(sorted(o.items()))) for g, o in sorted(found.items()))


def _compiled(pattern: str) -> Pattern | None:
    try:
        return Pattern(pattern)
    except UsageError:
        return None
