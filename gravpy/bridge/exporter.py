"""``Exporter``: mesh to NATS. The active bridge publishes what crosses; a standby holds it.

Theory of operation
-------------------
The hub offers the bridge every message new to its node (``NatsBridge.offer``, which hands it
here). A message crosses if a bridge of another mesh announced a pattern admitting it, an
``export`` pattern does, or a group's copy is placed in another mesh (``ExportRoutes``,
``gravpy.bridge.export``). It goes on the ``Outbox`` (bounded: a full one drops the newest,
counted ``queue_full``), with a reply subject on this bridge's inbox,
``<inbox>.<uuid>.<type tokens>``, so answers and NATS's no-responders status come back without
the bridge keeping any per-message state (``Importer.reply``: a status for a message asked on
this node fails its wait here, or one that starts later, and makes no message; one asked on
another node goes back there as a failure reply). A reply goes to its request's NATS reply
subject (``Importer.reply_subject``), whichever node it reached, however late. A message that came in
from NATS (``ORIGIN_HEADER``) never goes back: that is what makes loops impossible; the hub's
offer of it tells the importer that another bridge of this mesh delivered it (``delivered``).

Only the mesh's active bridge (``active``, kept by ``NatsBridge`` from its ``InterestTable``)
exports. A standby leaves a message to the active bridge when that bridge is an open peer of its
node admitting the type (``BridgeHost.peer_wants``: in a full mesh the sender's node sent it
there too), and holds it in an ``ExportShadow`` until NATS echoes the active bridge's copy
(``on_echo``, on ``<prefix>.<mesh>.>`` while standing by). Otherwise it exports the message
itself (``standby_exported``), first publishing what it holds, oldest first (``release_held``):
its link to the active bridge closed, or the active bridge does not route the type yet. A bridge
not ``ready`` (it may not have heard the active bridge yet) holds what it would export, and
publishes it once it takes over; a standby publishes it as soon as its link to the active
bridge closes (``peers_changed``). So nothing a dying active bridge had in hand is lost, and each
sender's order holds (a copy published twice keeps its uuid: every seen-set drops the second).

Losses are counted by reason on the outbox: ``disconnected`` (no NATS connection, and no other
bridge of this mesh known to carry it: ``alone``), ``bad_id`` (a uuid or ``reply_to`` that is not
one subject token: it would not fit the reply subject), and what the outbox refuses
(``gravpy.bridge.outbox``). A message the outbox refuses as ``too_large`` (its data and NATS
headers over the server's ``max_payload``) gets a failure reply (``too_large_reply``), unless a
pod of this mesh admits its type (``home_changed``: it may answer): the bridge takes the message
and its asker's wait fails at once saying why, where it would otherwise raise ``NoResponders``
(the bridge did not take it and nothing else did) or wait out its timeout (asked on another
node, which sent it here).
"""

from __future__ import annotations

import time
from collections.abc import Collection

from gravpy import _log as logs
from gravpy.bridge.config import NatsBridgeConfig
from gravpy.bridge.export import ExportRoutes, Route
from gravpy.bridge.export_shadow import ExportShadow
from gravpy.bridge.importer import Importer
from gravpy.bridge.interest import matcher
from gravpy.bridge.outbox import Outbox, Outgoing
from gravpy.bridge.port import BridgeHost
from gravpy.bridge.subjects import (
    _SAFE_TOKEN,
    H_META,
    ORIGIN_HEADER,
    SubjectMap,
    header_lines,
    meta_of,
)
from gravpy.failure import too_large_reply
from gravpy.filter import Pattern
from gravpy.message import Message

__all__ = ["Exporter", "too_large_detail"]

_log = logs.get_logger("gravpy.bridge")


def too_large_detail(request: Message, max_payload: int) -> str:
    """What a failure reply (``gravpy.failure.too_large_reply``) says of a request too large for
    the NATS server: its asker's wait raises ``MessageDropped`` (reason ``too_large``)."""
    return (
        f"too large for NATS ({len(request.data)} bytes of data, with its NATS headers over the "
        f"server's max_payload of {max_payload} bytes): the bridge did not send message "
        f"{request.uuid} of type {request.type!r}"
    )


class Exporter:
    """What one bridge carries out of its mesh; see the module docstring."""

    def __init__(self, config: NatsBridgeConfig, importer: Importer) -> None:
        self._export = config.export
        self.outbox = Outbox(config.queue_limit, config.high_water)
        self.routes = ExportRoutes(SubjectMap(config.prefix, "*"), config.export)
        self.shadow = ExportShadow(config.shadow_limit, 2 * config.ttl)  # while standing by
        self.importer = importer
        self.host: BridgeHost | None = None
        self.inbox = ""  # this connection's: replies and no-responders statuses come back there
        self.connected = False  # a connection is served (nats-py may be reconnecting it)
        self.active = False  # this bridge is its mesh's active one: it exports
        self.active_node: str | None = None  # the node uuid of this mesh's active bridge
        self.ready = False  # this bridge has heard the others: it may be elected
        # no other bridge of this mesh heard while connected (none yet): while not connected
        # this bridge counts what it would export as lost (``disconnected``), since no other
        # bridge of the mesh is known to carry it
        self.alone = True
        self.recovered = 0  # held exports published: the active bridge could not
        self.standby_exported = 0  # exported while standing by: the active could not take them
        # what pods of this mesh want (``home_changed``), compiled when first needed
        self._home: tuple[str, ...] = ()
        self._home_patterns: tuple[Pattern, ...] | None = ()

    def bind(self, host: BridgeHost, subjects: SubjectMap) -> None:
        self.host = host
        self.outbox.backpressure = host
        self.routes = ExportRoutes(subjects, self._export)

    def offer(self, msg: Message) -> bool:
        """A message new to this node: queue it for NATS if it crosses; True if queued."""
        headers = msg.headers
        if headers and ORIGIN_HEADER in headers:
            self.importer.delivered(msg)  # another bridge of this mesh brought it in
            if not msg.reply_to:  # (a reply goes back to its asker whatever headers it copied)
                return False  # every mesh that wanted it got it from NATS
        if msg.reply_to:
            if msg.reply_to.strip(_SAFE_TOKEN):  # (see ``export``)
                self.outbox.count("bad_id")
                return False
            subject = self.importer.reply_subject(msg.reply_to)
            if subject is None:
                return False
            meta = meta_of(msg, with_type=True)
            return self._enqueue((subject, "", msg.data, meta, header_lines(msg)))
        route = self.routes.route(msg.type)
        if route is None:
            return False
        if not self.connected:  # no connection: it cannot cross here now
            if self.active or self.alone:  # nor through another bridge of this mesh
                self.outbox.count("disconnected")
            return False
        if not self.active:
            if self._active_takes(msg.type):
                self.shadow.hold(msg, time.monotonic())  # until NATS echoes its export
                return False
            self.release_held()  # (older: first)
            self.standby_exported += 1  # it reached this standby only: carry it, not lose it
        return self.export(msg, route)

    def export(self, msg: Message, route: Route) -> bool:
        """Queue ``msg`` on ``route``, its reply subject on this bridge's inbox."""
        if msg.uuid.strip(_SAFE_TOKEN):  # a space, dot or control character: it would not be
            self.outbox.count("bad_id")  # one token of the reply subject (a newline: a command)
            return False
        reply = f"{self.inbox}.{msg.uuid}.{route.tokens}"  # the type rides along (NoResponders)
        meta = meta_of(msg, placed=self.routes.placed(route)) if route.groups else meta_of(msg)
        extra = header_lines(msg) if msg.headers else ""
        out = (route.subject, reply, msg.data, meta, extra)
        return self._enqueue(out) or self._refused(msg, out)

    def home_changed(self, patterns: tuple[str, ...]) -> None:
        """What the pods of this mesh want (ungrouped or in groups, on any of its nodes)."""
        if patterns != self._home:
            self._home = patterns
            self._home_patterns = None  # (compiled when a message is refused: rarely)

    def _refused(self, msg: Message, out: Outgoing) -> bool:
        """The outbox refused ``msg`` (counted there). If it was too large for NATS and no pod
        of this mesh admits its type (nothing else may answer it), its asker learns why at
        once: a failure reply, and True (taken: not ``NoResponders``)."""
        outbox, host = self.outbox, self.host
        if not (self.connected and host is not None and outbox.too_large(out)):
            return False
        if self._home_admits(msg.type):  # (its asker may get an answer from there)
            return False
        host.inject(too_large_reply(msg.uuid, too_large_detail(msg, outbox.max_payload)))
        return True

    def _home_admits(self, msg_type: str) -> bool:
        patterns = self._home_patterns
        if patterns is None:
            patterns = self._home_patterns = matcher(self._home)
        return any(p.matches(msg_type) for p in patterns)

    def release_held(self) -> None:
        """Publish what the export shadow holds, oldest first (``gravpy.bridge.export_shadow``):
        the active bridge may not have, and this one takes over, or no longer hears it."""
        if not self.shadow:
            return
        released = 0
        for msg in self.shadow.take(time.monotonic()):
            route = self.routes.route(msg.type)
            if route is not None:  # (else no other mesh wants it any more)
                self.export(msg, route)
                released += 1
        self.recovered += released
        _log.info("bridge_exports_released", messages=released, exporter=self.active)

    def on_echo(self, _: str, __: str, ___: bytes, headers: dict[str, str] | None) -> None:
        """What this mesh published on NATS (``SubjectMap.echo_subject``, while standing by)."""
        meta = headers.get(H_META) if headers else None
        if meta is not None:
            self.shadow.heard(meta.partition(" ")[0])

    def peers_changed(self, peers: Collection[str]) -> None:
        """This node's open links changed: a standby whose link to the active bridge closed
        publishes what it held (that bridge may have died with it in hand)."""
        if not self.active and self.active_node is not None and self.active_node not in peers:
            self.release_held()

    def _active_takes(self, msg_type: str) -> bool:
        """True if the mesh's active bridge is linked to this node and admits ``msg_type``: the
        node that sent a message to this standby (full mesh: any node) sent it there too."""
        if not self.ready:  # it may not have heard the active bridge yet: leave it the export
            return True
        active, host = self.active_node, self.host
        return active is not None and host is not None and host.peer_wants(active, msg_type)

    def _enqueue(self, out: Outgoing) -> bool:
        if not self.connected:
            self.outbox.count("disconnected")
            return False
        return self.outbox.put(out)
