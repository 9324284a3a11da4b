"""``Crossing``: what crosses between a mesh and NATS, and which of the mesh's bridges carries it.

Theory of operation
-------------------
A bridge keeps two views and derives everything else from them on each change:

- what **its mesh** wants (``mesh_interests``: its node's pods and peers, less what the mesh's
  other bridging nodes advertise on behalf of their remote meshes): ``mesh_wants`` and
  ``mesh_groups``;
- what **the other bridges** announced (``InterestTable``: ``heard``, ``expire``; all forgotten
  when the connection closes: ``disconnected``). Those of this mesh tell what their own nodes
  want (``bridge_wants``); those of other meshes what this mesh must publish. An announcement
  from a bridge claiming this mesh that this node has no link to is not trusted (``_unlinked``).

What follows from them:

- **Who is active**: the ready bridge (``mark_ready``) with the smallest node uuid
  (``InterestTable.exporter``). The exporter and the importer take their roles from it
  (``Exporter.active``, ``Importer.activate`` / ``stand_by``); taking over delivers what the
  importer held and publishes what the exporter held (``release_held``).
- **What to subscribe to** on NATS: ``subs_dirty`` is set for the bridge's subscription loop;
  ``announce_now`` when another bridge asks to hear from this one (a query).
- **What the node advertises** for its bridge (``advertised``): what remote meshes want, and
  while it stands by what its mesh wants too, so the active bridge's deliveries reach it; the
  hub is told (``BridgeHost.bridge_changed``).
- **Where exports go** (``ExportRoutes.remote_changed``), and a new numbering of what is
  published once the set of remote bridges changes (``gravpy.bridge.sequence``).

No I/O: the bridge (``gravpy.bridge.nats``) subscribes, publishes the announcements (from
``table``) and reads what it reports here. Nothing here runs per message: the exporter reads
``Exporter.active_node`` as set here.
"""

from __future__ import annotations

import asyncio
import time

from gravpy import _log as logs
from gravpy.bridge.config import NatsBridgeConfig
from gravpy.bridge.export import ADVERTISED_LIMIT
from gravpy.bridge.exporter import Exporter
from gravpy.bridge.importer import Importer
from gravpy.bridge.interest import InterestTable, reduce_patterns, summed_groups, widened
from gravpy.bridge.port import BridgeHost, Groups, MeshInterests
from gravpy.bridge.subjects import Announcement
from gravpy.errors import MessageError

__all__ = ["Crossing"]

_log = logs.get_logger("gravpy.bridge")
_UNLINKED_KEPT = 1024  # bridges not linked here, remembered to log each once


class Crossing:
    """One bridge's view of its mesh and of the other bridges; sets its exporter's and importer's
    roles. ``bind`` it to the node before anything is heard."""

    def __init__(self, config: NatsBridgeConfig, exporter: Exporter, importer: Importer) -> None:
        self.config = config
        self.table = InterestTable("", "", config.ttl)  # what the other bridges announced
        self.mesh_wants: tuple[str, ...] = ()
        self.mesh_groups: Groups = ()  # (group, pattern, members) this mesh has
        self.bridge_wants: tuple[str, ...] = ()  # what the mesh's other bridges' nodes want
        self.advertised = reduce_patterns(set(config.export))  # what the node advertises
        self.subs_dirty = asyncio.Event()  # what to subscribe to changed
        self.announce_now = asyncio.Event()  # a bridge asked to hear from this one
        self._exporter = exporter
        self._importer = importer
        self._host: BridgeHost | None = None
        self._interests = MeshInterests()
        self._routed = self.advertised  # what remote meshes want
        self._remote_view: frozenset[tuple[str, str, tuple[str, ...]]] = frozenset()
        self._unlinked_heard: set[str] = set()  # bridges of this mesh's name, not linked here

    def bind(self, host: BridgeHost, mesh_token: str) -> None:
        self._host = host
        self.table = InterestTable(mesh_token, host.node_uuid, self.config.ttl)

    # -- what the mesh and the other bridges say -------------------------------------------------

    def mesh_interests(self, interests: MeshInterests) -> None:
        """What this node's pods and peers want changed: recompute what this mesh wants."""
        self._interests = interests
        self._exporter.routes.own_groups_changed(interests.groups)
        self._recompute_wants()
        self._exporter.peers_changed(interests.peers)

    def heard(self, data: bytes) -> None:
        """An announcement on NATS: keep what it says (a bad one is counted)."""
        try:
            ann = Announcement.decode(data)
        except MessageError:
            self._exporter.outbox.count("bad_announcement")
            return
        if ann.node == self.table.node:
            return
        if ann.mesh == self.table.mesh and not ann.bye and ann.node not in self._interests.peers:
            self._unlinked(ann.node)
            return
        if self.table.heard(ann, time.monotonic()):
            self._table_changed()
        elif ann.mesh == self.table.mesh:  # (its ready flag may elect it: no view change)
            self._update_exporter()
        if ann.node == self._exporter.active_node:
            # what it delivered ``announce_interval`` before it *sent* this has reached every
            # node: an announcement that reached us late (a busy NATS path) proves no later
            lag = min(ann.lag(time.time()), self.config.ttl)
            self._importer.active_lives(self.config.announce_interval + lag)
        if ann.query:
            self.announce_now.set()

    def _unlinked(self, node: str) -> None:
        """A bridge of this mesh's name that this node has no link to: not trusted with this
        mesh's traffic (it could elect itself the active bridge and import nothing). Another
        site using the same mesh name (the default ``*`` too), or a forger on NATS."""
        self._exporter.outbox.count("unlinked_bridge")
        if node not in self._unlinked_heard:
            if len(self._unlinked_heard) >= _UNLINKED_KEPT:
                self._unlinked_heard.clear()
            self._unlinked_heard.add(node)
            _log.warning(
                "bridge_not_in_mesh",
                node=node[:64],
                mesh=self.table.mesh,
                hint="a bridge on NATS claims this mesh but is not linked to this node: "
                "another site with the same mesh name? give each site its own --mesh",
            )

    def expire(self, now: float) -> None:
        """Forget the bridges silent past the ttl (counted, logged), and exports held too long."""
        self._exporter.shadow.expire(now)
        expired = self.table.expired
        if self.table.expire(now):
            self._table_changed()
        if self.table.expired > expired:
            _log.warning(
                "bridge_remote_expired",
                bridges=self.table.expired - expired,
                ttl=self.table.ttl,
                hint="silent past ttl: gone, or this node too busy to hear them",
            )

    def mark_ready(self) -> None:
        """This bridge has heard the others (``NatsBridge._announce_loop``): it may be elected."""
        self._exporter.ready = True
        self._update_exporter()

    def disconnected(self) -> None:
        """The connection closed: not ready, and what the other bridges said is forgotten (the
        exporter keeps whether this bridge was the mesh's only one, as last heard)."""
        self._exporter.ready = False
        self._exporter.alone = not self.table.own_bridges()
        self.table.forget_all()
        self._table_changed()

    # -- what follows ----------------------------------------------------------------------------

    def _table_changed(self) -> None:
        self._recompute_wants()
        bridge_wants = self.table.own_mesh_patterns()
        if bridge_wants != self.bridge_wants:  # subscribed (and advertised) as well
            self.bridge_wants = bridge_wants
            self.subs_dirty.set()
            self._home_changed()
        self._update_exporter()
        table = self.table
        view = table.remote_view()
        if view != self._remote_view:  # (gravpy.bridge.sequence)
            self._remote_view = view
            self._exporter.outbox.numbering.restart()
        self._routed = self._exporter.routes.remote_changed(
            table.remote_patterns(), table.remote_groups()
        )
        self._readvertise()

    def _readvertise(self) -> None:
        """What this node advertises for its bridge: what remote meshes want, and while it
        stands by what its mesh wants too (so the active bridge's deliveries reach it)."""
        patterns = set(self._routed)
        if not self._exporter.active:
            patterns.update(self.mesh_wants, self.bridge_wants)
            patterns.update(p for _, p, _ in self.mesh_groups)
        # (bounded: a standby adds its mesh's wants, and a node's INTERESTS are capped)
        advertised = widened(reduce_patterns(patterns), ADVERTISED_LIMIT)
        if advertised != self.advertised:
            self.advertised = advertised
            if self._host is not None:
                self._host.bridge_changed()

    def _recompute_wants(self) -> None:
        """This mesh's own wants: local pods and peers, not what other bridges advertise."""
        bridges = self.table.own_bridges()
        patterns = set(self._interests.local)
        for node, wants in self._interests.peers.items():
            if node not in bridges:
                patterns.update(wants)
        wants = reduce_patterns(patterns)
        groups = summed_groups(self._interests.groups)
        if wants != self.mesh_wants or groups != self.mesh_groups:
            self.mesh_wants = wants
            self.mesh_groups = groups
            self.subs_dirty.set()  # the subscription loop announces once subscribed
            self._readvertise()
            self._home_changed()

    def _home_changed(self) -> None:
        """Tell the exporter what the pods of this mesh want (what this bridge subscribes to
        for them): a request too large for NATS fails at once only where none admits it."""
        groups = (p for _, p, _ in self.mesh_groups)
        self._exporter.home_changed((*self.mesh_wants, *self.bridge_wants, *groups))

    def _update_exporter(self) -> None:
        out = self._exporter
        out.active_node = self.table.exporter(out.ready)  # (read per message on a standby)
        active = out.active_node == self.table.node
        if active != out.active:
            out.active = active
            if active:
                before = self._importer.recovered
                self._importer.activate()
                _log.info("bridge_active", recovered=self._importer.recovered - before)
                out.release_held()
            else:
                self._importer.stand_by()
            self.subs_dirty.set()  # a standby also hears what its mesh publishes
            self._readvertise()
