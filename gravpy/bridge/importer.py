"""``Importer``: NATS to mesh. The active bridge delivers what NATS carries; a standby holds it.

Theory of operation
-------------------
Every bridge of a mesh subscribes to what its mesh wants (``NatsBridge`` keeps the
subscriptions); each NATS message is turned into a ``Message`` (``from_nats``) and handed here.
While its bridge is the mesh's active one the importer delivers it into the mesh
(``BridgeHost.inject``, original uuid kept); while it stands by, it holds it in a ``Shadow`` and
strikes it again when the active bridge's copy reaches this node (``delivered``, from the hub's
``offer``), forgetting it once the active bridge announces itself ``settle`` seconds later
(``active_lives``). On ``activate`` it first delivers what the shadow still holds, in order, so a
message NATS carried while the old active bridge was dying still reaches the mesh, once (see
``gravpy.bridge.shadow``). NATS's no-responders status for a request this bridge published
fails its wait with ``NoResponders`` only if no pod of this mesh admits its type (``reply``):
else that pod's answer, which may come after the status, wins. Replies go back on the request's
NATS reply subject (``reply_subject``), whichever node answers. Another mesh's exporter gives
every message the reply subject ``<its inbox>.<uuid>.<type tokens>``, and every request a
gravpy process asks goes through its own mesh's exporters, so for a message from another
gravpy mesh the importer keeps only the last reply subject of each asking process
(``process_of`` its uuid) and builds the reply subject of any request from it: a reply comes
back however long the answer took. It
keeps a plain NATS client's reply subject per request, for the last ``request_limit // 2`` to
``request_limit`` of them; their messages get ids whose process digits are the importer's own
(``id_source``), so a reply that comes after its request's subject was forgotten is known for
what it is, and counted (``reply_forgotten``).

Losses are counted by reason through ``count``: ``bad_message`` (not a gravpy message),
``too_large`` (over the mesh's message size), ``reply_forgotten`` (a reply to a plain NATS
client's request whose reply subject was forgotten), ``shadow_overflow`` (a held message dropped to
stay within ``limit``; lost if a takeover followed), ``gap`` (numbered messages of another
mesh's exporter that never came: lost by NATS, ``gravpy.bridge.sequence``). Gaps are counted by
whoever delivers: the active bridge as messages come, a new active bridge for the held messages
it delivers that were new to its node (a gap before a message the old one delivered was the old
one's to count).
"""

from __future__ import annotations

from collections.abc import Callable

from msgspec.structs import replace

from gravpy.bridge.port import BridgeHost
from gravpy.bridge.sequence import Gaps, sequence_of
from gravpy.bridge.shadow import Held, Shadow
from gravpy.bridge.subjects import (
    H_META,
    NO_RESPONDERS_STATUS,
    ORIGIN_HEADER,
    STATUS_HEADER,
    SubjectMap,
    from_nats,
    plain_meta,
    type_of_tokens,
)
from gravpy.errors import MessageError, UsageError
from gravpy.message import Message, id_source, new_id, process_of, this_process
from gravpy.recent import RecentMap

__all__ = ["Importer"]

# asking processes whose last reply subject is kept; ids of the gravpy form made by programs
# themselves (random ones) can fill it, and then it starts over
_ASKERS_LIMIT = 65_536
_ORIGIN_CHARS = len(ORIGIN_HEADER)  # (of the one header an imported message has: the key)


def _nowhere(_: str) -> bool:
    return False


class Importer:
    """What one bridge brings into its mesh; see the module docstring."""

    def __init__(
        self,
        request_limit: int,
        shadow: Shadow,
        count: Callable[[str, int], None],
        clock: Callable[[], float],
    ) -> None:
        self.host: BridgeHost | None = None
        self.subjects = SubjectMap("gravpy", "*")
        # whether a pod of this mesh admits a type (``Exporter.home_admits``: NatsBridge sets it)
        self.home_admits: Callable[[str], bool] = _nowhere
        self.active = False
        self.imported = 0
        self.recovered = 0  # delivered from the shadow on taking over
        self.shadow = shadow
        self.reply_subjects: RecentMap[str, str] = RecentMap(request_limit)  # per request
        self._askers: dict[str, str] = {}  # an asking process -> its last reply subject
        self._here = this_process()  # (a mesh in this process exports ids of it: per request)
        self._plain_id = id_source()  # the ids of plain NATS clients' messages
        self._plain = process_of(self._plain_id())
        self._count = count
        self._clock = clock
        self._overflow = 0
        self._gaps = Gaps()

    def message(
        self, subject: str, reply: str, data: bytes, headers: dict[str, str] | None
    ) -> None:
        """A NATS message on one of the mesh's subscriptions (``gravpy.bridge.wire.Sink``)."""
        try:
            mesh, msg_type = self.subjects.split(subject)
            if self.subjects.is_own(mesh):
                return  # an echo of what this mesh exported
            msg, groups, missing, checked = self._read(subject, mesh, msg_type, data, headers)
        except MessageError:
            self._count("bad_message", 1)
            return
        if self.active:
            if missing:
                self._count("gap", missing)
            self._deliver(msg, groups, reply, checked=checked)
            return
        shadow = self.shadow
        shadow.hold(Held(msg, groups, reply, self._clock(), missing))
        if shadow.overflow != self._overflow:
            self._overflow = shadow.overflow
            self._count("shadow_overflow", 1)

    def _read(
        self, subject: str, mesh: str, msg_type: str, data: bytes, headers: dict[str, str] | None
    ) -> tuple[Message, tuple[str, ...] | None, int, bool]:
        """The message, the groups placed here, the numbers missing before it (``from_nats``;
        the usual message, its one header read in one pass), and True if the message is known
        to pass ``check_sendable`` (the usual one: ``BridgeHost.fits_plain``); raises
        ``MessageError``."""
        plain = plain_meta(headers.get(H_META)) if headers and len(headers) == 1 else None
        if plain is None:
            missing = 0 if headers is None else self._missing(subject, headers)
            here = self.subjects.mesh_token
            msg, groups = from_nats(msg_type, data, headers, mesh, "", here, self._plain_id)
            return msg, groups, missing, False
        uuid, stamp, tag, number = plain
        missing = self._gaps.seen(tag, subject, number) if tag else 0
        host = self.host
        checked = (  # (its type was validated by ``split``, its uuid's length by ``plain_meta``)
            host is not None
            and uuid.isascii()
            and host.fits_plain(len(data), _ORIGIN_CHARS + len(mesh))
        )
        msg = Message(uuid, "", "", msg_type, stamp, data, {ORIGIN_HEADER: mesh})
        return msg, (), missing, checked

    def reply(self, tail: str, data: bytes, headers: dict[str, str]) -> None:
        """A reply on the bridge's inbox; ``tail`` is ``<request uuid>.<request type tokens>``.
        NATS's no-responders status becomes the asker's ``NoResponders``, unless a pod of this
        mesh admits the type (``home_admits``): that pod may answer, so the wait goes on (as in
        one mesh: it runs out its timeout if that pod does not answer)."""
        request, _, tokens = tail.partition(".")
        try:
            if headers.get(STATUS_HEADER) == NO_RESPONDERS_STATUS:
                msg_type = type_of_tokens(tokens)
                if not self.home_admits(msg_type):  # (nothing else anywhere may answer it)
                    assert self.host is not None
                    self.host.no_responders(request, msg_type)
                return
            msg = from_nats(None, data, headers, "reply", reply_to=request)[0]
        except MessageError:
            self._count("bad_message", 1)
            return
        if msg.uuid == request:  # a plain responder echoed the request's headers (nats-py's
            msg = replace(msg, uuid=new_id())  # Msg.respond): a new message, not the request
        self.inject(msg)

    def _missing(self, subject: str, headers: dict[str, str]) -> int:
        """The numbers missing before this message (``gravpy.bridge.sequence``)."""
        meta = headers.get(H_META)
        seq = None if meta is None else sequence_of(meta)
        return 0 if seq is None else self._gaps.seen(seq[0], subject, seq[1])

    def delivered(self, msg: Message) -> None:
        """The hub offered ``msg``, which came from NATS through another bridge of this mesh."""
        if not self.active:
            self.shadow.delivered(msg, self._clock())

    def active_lives(self, settle: float) -> None:
        """The active bridge announced itself: what it delivered ``settle`` seconds before has
        had time to reach every node."""
        if not self.active:
            self.shadow.settled(self._clock() - settle)

    def activate(self) -> None:
        """This bridge became its mesh's active one: deliver what the shadow holds, then import."""
        if self.active:
            return
        self.active = True
        for held in self.shadow.take(self._clock()):
            if self._deliver(held.msg, held.groups, held.reply, again=True):  # the old one did not
                self.recovered += 1
                if held.missing:  # nor did it see this message, so it counted no gap before it
                    self._count("gap", held.missing)

    def stand_by(self) -> None:
        """Another bridge became active: hold from now on."""
        self.active = False

    def _deliver(
        self,
        msg: Message,
        groups: tuple[str, ...] | None,
        reply: str,
        *,
        again: bool = False,
        checked: bool = False,
    ) -> bool:
        if reply:
            uuid = msg.uuid
            process = process_of(uuid)
            if process and process != self._here and process != self._plain:
                askers = self._askers
                if len(askers) >= _ASKERS_LIMIT:
                    askers.clear()
                askers[process] = reply
            else:
                self.reply_subjects[uuid] = reply
        return self.inject(msg, groups, again=again, checked=checked)

    def reply_subject(self, request: str) -> str | None:
        """The NATS reply subject of ``request``, if it came from NATS through this bridge."""
        subject = self.reply_subjects.get(request)
        if subject is not None:
            return subject
        process = process_of(request)
        if process == self._plain:  # a plain NATS client's request (never "": ids of other forms)
            self._count("reply_forgotten", 1)
            return None
        last = self._askers.get(process) if process else None
        if last is None:
            return None
        at = last.find("." + process)  # <inbox>.<uuid of the same process>.<type tokens>
        return None if at < 0 else f"{last[:at]}.{request}"

    def inject(
        self,
        msg: Message,
        groups: tuple[str, ...] | None = (),
        *,
        again: bool = False,
        checked: bool = False,
    ) -> bool:
        """Deliver ``msg`` into the mesh; True if it was new there. ``again``: a held message
        on taking over; if this node has it (the old active bridge's copy came here: struck),
        the others may not, so it is passed on to them (``BridgeHost.redeliver``).
        ``checked``: known to pass ``check_sendable`` (``_read``)."""
        host = self.host
        assert host is not None
        if not checked:
            try:
                host.check_sendable(msg)
            except UsageError:
                self._count("too_large", 1)
                return False
        if host.inject(msg, groups) >= 0:
            self.imported += 1
            return True
        if again:
            host.redeliver(msg)
        return False
