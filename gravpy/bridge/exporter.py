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
another node goes back there as a failure reply; neither if a pod of this mesh admits its type,
``home_admits``: that pod may answer). A reply goes to its request's NATS reply
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
(``gravpy.bridge.outbox``: ``queue_full``, ``too_large``, ``subject_too_long``, ``bad_subject``).
A message to cross that is lost so (``_refused``) gets a failure reply with that reason
(``gravpy.failure.dropped_reply``), unless a pod of this mesh admits its type (``home_admits``:
it may answer): the bridge takes the message and its asker's wait fails at once with
``MessageDropped`` saying why, where it would otherwise raise ``NoResponders`` (the bridge did
not take it and nothing else did) or wait out its timeout (asked on another node, which sent it
here). Nothing says whether anyone waits, so a plain message refused so gets one too (a node
that asked nothing keeps it, bounded, as it keeps NATS's no-responders status): only what is
lost pays for it. A full outbox or a lost connection may refuse a whole stream, so the failure
replies for those two reasons are at most ``FAILURE_BUDGET`` a second; past it the loss is
only counted (and ``failures_unsent``), and an asker among them waits out its timeout. A reply too large for NATS is replaced by a small failure reply on the same
subject (``_reply_refused``): the asking mesh's bridge brings it in like any reply, so its asker's
wait fails at once (``MessageDropped``, ``too_large``) rather than after its timeout; a plain
NATS client gets an empty message whose ``Grav-H-gravpy-error`` header says ``too_large``.
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
from gravpy.bridge.wire import MAX_CONTROL_LINE, refusal
from gravpy.failure import TOO_LARGE, dropped_reply
from gravpy.filter import Pattern
from gravpy.message import MAX_ID_LENGTH, Message

__all__ = ["Exporter", "dropped_detail", "too_large_detail"]

_log = logs.get_logger("gravpy.bridge")
_HOME_TYPES = 4096  # types whose answer ``home_admits`` keeps (then it starts over)
_CLEAN_LIMIT = 4096  # route subjects whose ``_never_refused`` answer is kept (then it starts over)
# losses that come with load, not with the message: their failure replies are budgeted per second
_UNDER_LOAD = frozenset({"queue_full", "disconnected"})
FAILURE_BUDGET = 256  # failure replies per second for such losses (the rest only counted lost)
# why a message was not sent, by the reason it is counted lost under (``too_large``: below)
_WHY = {
    "queue_full": "the NATS bridge's queue was full ({limit} messages waiting)",
    "subject_too_long": (
        "its type is too long for NATS once escaped (its subject and reply subject are over "
        f"nats-server's {MAX_CONTROL_LINE}-byte control line)"
    ),
    "bad_subject": "its NATS subject would hold whitespace or a control character",
    "bad_id": "its uuid {uuid!r} is not one NATS subject token (a space, dot or control character)",
    "disconnected": (
        "the NATS bridge is not connected, and no other bridge of this mesh is known to be"
    ),
}


def too_large_detail(request: Message, max_payload: int) -> str:
    """What a failure reply (``gravpy.failure.too_large_reply``) says of a request too large for
    the NATS server: its asker's wait raises ``MessageDropped`` (reason ``too_large``)."""
    return (
        f"too large for NATS ({len(request.data)} bytes of data, with its NATS headers over the "
        f"server's max_payload of {max_payload} bytes): the bridge did not send message "
        f"{request.uuid} of type {request.type!r}"
    )


def dropped_detail(request: Message, reason: str, outbox: Outbox) -> str:
    """What a failure reply (``gravpy.failure.dropped_reply``) says of a request the bridge did
    not send for ``reason`` (counted on ``outbox`` so): its wait raises ``MessageDropped``."""
    if reason == TOO_LARGE:
        return too_large_detail(request, outbox.max_payload)
    why = _WHY.get(reason, reason).format(limit=outbox.limit, uuid=request.uuid)
    return f"{why}: the bridge did not send message {request.uuid} of type {request.type!r}"


def reply_too_large_detail(reply: Message, max_payload: int, mesh: str) -> str:
    """What the failure reply sent instead of a reply too large for NATS says."""
    return (
        f"the reply was too large for NATS ({len(reply.data)} bytes of data, with its NATS "
        f"headers over the server's max_payload of {max_payload} bytes): the bridge of mesh "
        f"{mesh!r} did not send reply {reply.uuid} of type {reply.type!r}"
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
        self._inbox = ""
        # by route subject: True if no export command on it is refused (``_never_refused``)
        self._clean: dict[str, bool] = {}
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
        self._home_types: dict[str, bool] = {}  # ``home_admits``'s answers, by type
        self._budget_since, self._budget_used = 0.0, 0  # failure replies for losses under load
        self.failures_unsent = 0  # failure replies over that budget: not sent

    @property
    def inbox(self) -> str:
        """This connection's: replies and no-responders statuses come back there."""
        return self._inbox

    @inbox.setter
    def inbox(self, inbox: str) -> None:
        self._inbox = inbox
        self._clean.clear()

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
            out = (subject, "", msg.data, meta, header_lines(msg))
            return self._enqueue(out) or self._reply_refused(msg, subject)
        route = self.routes.route(msg.type)
        if route is None:
            return False
        if not self.connected:  # no connection: it cannot cross here now
            if self.active or self.alone:  # nor through another bridge of this mesh
                return self.outbox.refuse("disconnected") or self._refused(msg)
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
        # a space, dot or control character in the id would not make one token of the reply
        # subject (the usual id, ASCII letters and digits, passes the first test, on bytes: fast)
        uuid = msg.uuid
        if not (uuid.isascii() and uuid.encode().isalnum()) and uuid.strip(_SAFE_TOKEN):
            return self.outbox.refuse("bad_id") or self._refused(msg)
        reply = f"{self._inbox}.{uuid}.{route.tokens}"  # the type rides along (NoResponders)
        meta = meta_of(msg, placed=self.routes.placed(route)) if route.groups else meta_of(msg)
        extra = header_lines(msg) if msg.headers else ""
        out = (route.subject, reply, msg.data, meta, extra)
        clean = self._clean.get(route.subject)
        if clean is None:
            clean = self._never_refused(route)
        return self._enqueue(out, clean) or self._refused(msg)

    def _never_refused(self, route: Route) -> bool:
        """True (and kept) if nats-server takes the command of every export on ``route``
        (``gravpy.bridge.wire.refusal``): its subject, and its reply subject with any id that
        passes ``export``'s test (printable ASCII, no space) of up to ``MAX_ID_LENGTH``
        characters (every id that reached the mesh: sending and decoding check it)."""
        longest = f"{self._inbox}.{'0' * MAX_ID_LENGTH}.{route.tokens}"
        clean = refusal((route.subject, longest, b"", "", "")) is None
        if len(self._clean) >= _CLEAN_LIMIT:
            self._clean.clear()
        self._clean[route.subject] = clean
        return clean

    def home_changed(self, patterns: tuple[str, ...]) -> None:
        """What the pods of this mesh want (ungrouped or in groups, on any of its nodes)."""
        if patterns != self._home:
            self._home = patterns
            self._home_patterns = None  # (compiled when first asked: rarely)
            self._home_types.clear()

    def home_admits(self, msg_type: str) -> bool:
        """True if a pod of this mesh admits ``msg_type`` (``home_changed``; the asker too, as
        the bridge cannot tell it apart), so it may answer a request of it. Asked only of what
        is refused, and for NATS's no-responders status (``Importer.reply``: one for each
        message published to no subscriber), so the answer is kept by type."""
        known = self._home_types.get(msg_type)
        if known is None:
            patterns = self._home_patterns
            if patterns is None:
                patterns = self._home_patterns = matcher(self._home)
            known = any(p.matches(msg_type) for p in patterns)
            if len(self._home_types) >= _HOME_TYPES:
                self._home_types.clear()
            self._home_types[msg_type] = known
        return known

    def _refused(self, msg: Message) -> bool:
        """``msg`` was to cross but is lost (counted: ``outbox.refused`` says why). Unless a
        pod of this mesh admits its type (its asker may get an answer from there), its asker
        learns why at once: a failure reply, and True (taken: not ``NoResponders``)."""
        host = self.host
        if host is None or self.home_admits(msg.type):
            return False
        reason = self.outbox.refused
        if reason in _UNDER_LOAD and not self._within_budget():
            self.failures_unsent += 1  # (as if none were sent: its asker may wait it out)
            return False
        host.inject(dropped_reply(msg.uuid, reason, dropped_detail(msg, reason, self.outbox)))
        return True

    def _within_budget(self) -> bool:
        """True if another failure reply for a loss under load fits this second's budget: a
        full outbox or a lost connection may refuse every message of a stream, and a failure
        reply for each would add a message per message lost, where load already is."""
        now = time.monotonic()
        if now - self._budget_since >= 1.0:
            self._budget_since, self._budget_used = now, 0
        if self._budget_used >= FAILURE_BUDGET:
            return False
        self._budget_used += 1
        return True

    def _reply_refused(self, reply: Message, subject: str) -> bool:
        """The outbox refused ``reply`` (counted). If it was too large for NATS, a small
        failure reply goes to its asker on the same ``subject`` instead; False (the reply did
        not cross)."""
        outbox, host = self.outbox, self.host
        if outbox.refused != TOO_LARGE or host is None:
            return False
        detail = reply_too_large_detail(reply, outbox.max_payload, host.mesh_name)
        failure = dropped_reply(reply.reply_to, TOO_LARGE, detail)
        self._enqueue((subject, "", b"", meta_of(failure, with_type=True), header_lines(failure)))
        return False

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

    def _enqueue(self, out: Outgoing, clean: bool = False) -> bool:
        if not self.connected:
            return self.outbox.refuse("disconnected")
        return self.outbox.put(out, clean)
