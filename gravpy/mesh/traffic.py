"""Traffic: the path of every message through this node, between its links, its bus and bridges.

Theory of operation
-------------------
Messages reach the mesh from two sides. A local pod's message comes through the bus's port
(``forward_local``): the ``Router`` names the links that want it, the permission rules keep only
those whose identity may receive it, bridges are offered it, and a group's copy goes to the one
link (or local pod) the router places it on; a uuid the router's seen-set holds is refused there,
before anything is delivered or forwarded (every node that saw it would drop it). A batch from a link comes through ``from_link``: each
message is admitted (the sender's publish rules), unmarked, numbered or resumed, then delivered
to the bus and forwarded to what the router names, exactly as a local one.

Resume (``gravpy.mesh.resume``) lives on this path too: a message entering the mesh here gets the
next number of this node's *origin sequence* (``sequence``); a numbered message from a peer is
held while that origin resends what this node missed, and its number is remembered. Requests a
neighbour makes of this node (resend from a number, a leaf's replay, a leaf's reply wait) are
consumed here and never forwarded.

While a local pod is congested, ``from_link`` stops and returns how many it took: the rest stays
with the link, whose reader then holds off reading, so TCP pushes back to the sender.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from gravpy import _log as logs
from gravpy.bus import Bus, resent_error
from gravpy.errors import LinkClosedError, UsageError
from gravpy.failure import WAITING_TYPE, link_closed_reply, wait_notice
from gravpy.groups import GROUP_HEADER, marked, unmarked
from gravpy.mesh.config import HubConfig
from gravpy.mesh.enforcement import PermissionGate, check_publish, check_subscribe, receivers
from gravpy.mesh.permissions import GRANT_TYPE, Authority, Identity, read_grant
from gravpy.mesh.resume import (
    RESTART_GAP,
    RESUME_END_TYPE,
    RESUME_TYPE,
    Resumption,
    asked_after,
    resend_answer,
    resume_end,
)
from gravpy.mesh.routing import Placement, Router
from gravpy.message import MAX_ID_LENGTH, VALIDATED_TYPES, Message, check_message
from gravpy.proto import ROLE_PEER, NodeInfo
from gravpy.proto.frames import MAX_HEADERS
from gravpy.replay import REPLAY_HEADER, REPLAY_TYPE, LeafReplays, replay_answer

if TYPE_CHECKING:
    from gravpy.mesh.bridge_host import Bridges
    from gravpy.mesh.peer_link import PeerLink
    from gravpy.pod import Pod

__all__ = ["Traffic"]

_log = logs.get_logger("gravpy.mesh.traffic")
# a frame's room for a message beyond its data and headers: ids (3 x 64), type (255), timestamp,
# msgpack headers of the arrays and maps, the frame's own header
_ENVELOPE = 1024
_CONTROL_TYPES = frozenset((WAITING_TYPE, REPLAY_TYPE, RESUME_TYPE, RESUME_END_TYPE))


class Traffic:
    """Delivers, forwards, numbers and resumes the messages of one node; the bus's ``MeshPort``."""

    def __init__(
        self,
        bus: Bus,
        router: Router[PeerLink],
        local: NodeInfo,
        config: HubConfig,
        authority: Authority | None,
        *,
        changed: Callable[[], None],
        stopping: Callable[[], bool],
    ) -> None:
        self.bus = bus
        self.router = router
        self.node_uuid = local.node_uuid
        self.on_peer = local.role == ROLE_PEER
        self.config = config
        limits = config.protocol.limits  # (frozen: read once, checked for every message)
        self._max_data = limits.max_message_bytes
        self._frame_room = limits.max_frame_bytes - _ENVELOPE  # data and headers, in bytes
        self._changed = changed  # the local interests changed: re-advertise
        self._stopping = stopping
        self.bridges: Bridges | None = None
        self.authority = authority  # the auth file in force; None: every message is admitted
        self.gate = PermissionGate()
        self.grant: Identity | None = None  # on an app: what its node lets it publish/receive
        self.replays = LeafReplays(bus.own_replay)
        self.resumption: Resumption[PeerLink] = Resumption(self._resumed)
        self.origin_seq = 0  # the last number given to a message entering the mesh here
        # numbers never given: the jump over each unclean restart's (``continue_numbering``)
        self.origin_skipped: tuple[range, ...] = ()
        self._log = _log.bind(node=local.node_uuid)

    def bridge_to(self, bridges: Bridges) -> None:
        """Offer what passes here to ``bridges`` from now on."""
        self.bridges = bridges

    def govern(self, authority: Authority | None) -> None:
        """Admit and deliver under new auth rules from now on (SIGHUP)."""
        self.authority = authority

    # -- from links ------------------------------------------------------------------------------

    def from_link(self, peer: PeerLink, messages: list[Message], seqs: list[int]) -> int:
        """Deliver messages from ``peer`` here and forward them on (``seqs``: their origin
        numbers); return how many were taken (fewer while a local pod is congested: the rest
        stays with the link)."""
        congestion = self.bus.congestion
        governed = self.authority is not None
        numbered = peer.is_peer and any(seqs)
        # the usual case: the origin is not resending, so its live messages go straight through
        # and only the highest number of the batch is remembered
        holding = numbered and self.resumption.holding(peer.uuid)
        top = 0
        for i, msg in enumerate(messages):
            if congestion.pods_congested:
                self.resumption.seen(peer.uuid, top)
                return i
            if msg.type == GRANT_TYPE and peer.is_peer and not self.on_peer:
                self.grant = read_grant(msg.data)  # what this app's node lets it publish/receive
                continue
            if governed and not self.gate.admits(peer, msg, self._answers(peer, msg)):
                continue
            if numbered:
                seq = seqs[i]
                if seq > 0 and not holding:
                    if seq > top:
                        top = seq
                    self._take(peer, msg)
                    continue
                if seq:
                    self._sequenced(peer, msg, seq)
                    continue
            headers = msg.headers
            if headers is not None and REPLAY_HEADER in headers and not peer.is_leaf:
                self.replays.arrived(msg)
                continue
            if msg.type in _CONTROL_TYPES:
                self._control(peer, msg)
                continue
            self._take(peer, msg)
        if top:
            self.resumption.seen(peer.uuid, top)
        return len(messages)

    def _answers(self, peer: PeerLink, msg: Message) -> bool:
        """True if ``msg`` from ``peer`` answers a message sent to ``peer`` (as far as it
        remembers: ``PeerLink.answers``) whose asker is known here: it travels back only to
        that asker, and may pass whatever its type (``gravpy.mesh.enforcement``)."""
        request = msg.reply_to
        return bool(request) and peer.answers(request) and self.router.knows_asker(request)

    def _take(self, peer: PeerLink, msg: Message) -> None:
        """Route one message from ``peer``: deliver here, forward on (numbered, from a leaf)."""
        targets = self.router.arrived(msg, peer)
        if targets is None:
            return
        if self.authority is not None and targets:
            targets = self.permitted(msg, targets)
        seq = self.sequence() if peer.is_leaf else 0
        headers = msg.headers
        if headers is not None and GROUP_HEADER in headers:
            msg = self._arrived_for_groups(msg, peer, targets, seq)
        else:
            self.bus.deliver(msg, None, (), seq)
            self._send_to(targets, msg, seq)
        bridges = self.bridges
        if bridges is not None and bridges.attached:  # marked or not: the bridges carry it on
            bridges.offer(msg)

    def _arrived_for_groups(
        self, msg: Message, peer: PeerLink, targets: tuple[PeerLink, ...], seq: int = 0
    ) -> Message:
        """A marked message: place the groups it names here or behind us; nothing sees the mark.
        Returns it unmarked."""
        plain, wanted = unmarked(msg)
        if plain.reply_to:
            wanted = ()
        if not self.router.has_groups(plain.type, peer):  # nothing behind us: the bus places
            self.bus.deliver(plain, None, wanted, seq)  # (and counts a group it has no member of)
            self._send_to(targets, plain, seq)
            return plain
        placement = self.router.place(plain, peer, self.bus.group_weights(plain.type), wanted)
        self.bus.deliver(plain, None, placement.local, seq)
        self._send_placed(plain, targets, placement, seq)
        return plain

    # -- to links --------------------------------------------------------------------------------

    def forward_local(
        self, msg: Message, local: Mapping[str, int], seq: int = 0
    ) -> tuple[int, tuple[str, ...]]:
        """A local pod sent ``msg`` (numbered ``seq``): forward it (links, bridges); return how
        many took it and the groups placed here (``local``: members per local group for it).

        ``UsageError``, before anything is forwarded, if its uuid was sent or arrived here
        recently: every node that saw it would drop it as a duplicate (``_sent_again``)."""
        router = self.router
        targets = router.from_local(msg)
        if targets is None:
            raise self._sent_again(msg, seq)
        if self.authority is not None and targets:
            targets = self.permitted(msg, targets)
        bridges = self.bridges
        bridged = bridges.offer(msg) if bridges is not None and bridges.attached else 0
        if msg.reply_to or not router.has_groups(msg.type):
            return self._send_to(targets, msg, seq) + bridged, tuple(local)
        placement = router.place(msg, None, local)
        return self._send_placed(msg, targets, placement, seq) + bridged, placement.local

    def _sent_again(self, msg: Message, seq: int) -> UsageError:
        """The error for a message sent again (``forward_local``); its number ``seq``, the last
        given, is given back, so the origin's numbers have no gap."""
        if seq and seq == self.origin_seq:
            self.origin_seq -= 1
        return resent_error(msg)

    def wanted(self, msg: Message) -> bool:
        """True if a link wants ``msg`` (its type, or a group of it), from here: when no link took
        it, they refused it (their queue was full: counted there), not that nobody wanted it."""
        if msg.reply_to:
            return False  # (a reply is for its asker alone: "no responders" does not apply)
        router = self.router
        return bool(self.permitted(msg, router.local_route(msg.type))) or router.has_groups(
            msg.type
        )

    def permitted(self, msg: Message, targets: tuple[PeerLink, ...]) -> tuple[PeerLink, ...]:
        """The links among ``targets`` (the router's, just now) whose identity may receive
        ``msg``: all of them for a reply the router sent back towards its asker, the ones the
        rules allow for anything routed by type (a message that merely claims to be a reply)."""
        if self.authority is None or (msg.reply_to and self.router.knows_asker(msg.reply_to)):
            return targets
        return receivers(msg, targets)

    def _send_to(self, targets: tuple[PeerLink, ...], msg: Message, seq: int) -> int:
        """Enqueue ``msg`` on ``targets``; peers get it with its number ``seq`` (0: none)."""
        n = 0
        for link in targets:
            n += link.enqueue(msg, seq if link.is_peer else 0)
        return n

    def _send_placed(
        self,
        msg: Message,
        targets: tuple[PeerLink, ...],
        placement: Placement[PeerLink],
        seq: int = 0,
    ) -> int:
        """Enqueue ``msg`` on ``targets`` and a marked copy on each link chosen for groups
        (numbered for peers if ``seq``)."""
        chosen = dict(placement.links)
        n = 0
        for link in targets:
            groups = chosen.pop(link, None)
            if link.enqueue(msg if groups is None else marked(msg, groups), _number(link, seq)):
                n += 1
        for link, groups in chosen.items():
            if link.enqueue(marked(msg, groups), _number(link, seq)):
                n += 1
        return n

    def check_sendable(self, msg: Message) -> None:
        """Refuse, before anything is delivered, a message no link could carry, or that this
        app's node does not let it publish (``PermissionDenied``), or a field of which was set to
        what no receiver accepts (``check_message``: it would close the link)."""
        try:  # the usual message passes in a few reads (~0.13 us); any other is checked in full
            ids = "" + msg.uuid + msg.parent_id + msg.reply_to  # (TypeError unless all are str)
            usual = (
                msg.type in VALIDATED_TYPES
                and msg.data.__class__ is bytes
                and msg.timestamp.__class__ is float
                and 0 < len(msg.uuid) <= MAX_ID_LENGTH
                and len(msg.parent_id) <= MAX_ID_LENGTH
                and len(msg.reply_to) <= MAX_ID_LENGTH
                and ids.isascii()  # (so it encodes as UTF-8)
            )
        except TypeError:  # (compiled, a read of a field of the wrong type raises it)
            usual = False
        if not usual:
            check_message(msg)
        if self.grant is not None:
            check_publish(self.grant, msg)
        size = len(msg.data)
        if size > self._max_data:
            raise UsageError(
                f"message data is {size} bytes, over the mesh limit of {self._max_data} bytes"
            )
        # (getattr: compiled, a plain read checks the declared type first, raising TypeError)
        headers: object = getattr(msg, "headers")  # noqa: B009
        if headers:
            if type(headers) is not dict or len(headers) > MAX_HEADERS:
                raise UsageError(
                    f"a message's headers are a dict of at most {MAX_HEADERS} str to str"
                )
            room = self._frame_room
            chars = 0
            for key, value in headers.items():  # (a loop: one header is the usual case)
                if type(key) is not str or type(value) is not str:
                    raise UsageError(f"a header is str to str, got {key!r}: {value!r}")
                chars += len(key) + len(value)
            if size + 4 * chars <= room:  # fits even if every character took 4 bytes
                return
            size += sum(len(k.encode()) + len(v.encode()) for k, v in headers.items())
            if size > room:
                raise UsageError(
                    f"message data and headers are {size} bytes, over the {room} bytes one frame "
                    "carries"
                )

    def fits_plain(self, size: int, header_chars: int) -> bool:
        """True if ``check_sendable`` passes every message of ``size`` data bytes and headers of
        ``header_chars`` characters whose fields are of the usual kinds (a validated type, a
        float time, bytes data, ASCII ids within their length, str headers): what a bridge
        builds for the usual imported message, checked here in a few reads."""
        return (
            self.grant is None
            and size <= self._max_data
            and size + 4 * header_chars <= self._frame_room
        )

    def check_subscribable(self, pattern: str) -> None:
        """Raise ``PermissionDenied`` if this app's node lets it receive no type of ``pattern``."""
        check_subscribe(self.grant, pattern)

    def interests_changed(self) -> None:
        """The types local pods want changed: tell the other nodes."""
        self._changed()

    def cut_off(self) -> str:
        """Words for an app with no open link to its node (it dropped, and is being redialled);
        "" for a peer node, or an app attached."""
        if self.on_peer or any(link.is_open for link in self.router.peers.values()):
            return ""
        return "this app has no open link to its node (redialling): only its own pods can answer"

    def reply_wait_started(self, request_uuid: str, msg_type: str) -> LinkClosedError | None:
        """A local pod waits for replies: track the links that could answer, so the wait fails
        at once if they all close; a leaf also tells its node, which tracks the links it relayed
        the request on (``gravpy.failure``). A leaf with no open link to its node (it dropped,
        and is being redialled) returns the error such a wait ends with, as one running when
        the link dropped did: no reply can reach the app before it reattaches."""
        if msg_type:
            self.router.track(request_uuid, msg_type)
        if self.on_peer:
            return None
        attached = False
        for link in self.router.peers.values():
            if link.is_open:
                attached = True
                link.enqueue(wait_notice(request_uuid))
        if attached:
            return None
        return LinkClosedError(
            f"this app has no open link to its node (redialling): no reply to {request_uuid} "
            "can reach it"
        )

    def replays_from_node(self, pod: Pod) -> bool:
        """On a leaf with an open link: hold ``pod`` and ask the node for its buffer, after the
        interests the pod adds (both are sent next loop turn, INTERESTS first)."""
        if self.on_peer or self._stopping():
            return False
        node = next((link for link in self.router.peers.values() if link.is_open), None)
        if node is None:
            return False
        request = self.replays.start(pod)
        self._changed()
        asyncio.get_running_loop().call_soon(node.enqueue, request)
        return True

    def asked_elsewhere(self, request_uuid: str) -> bool:
        """True if the request came from another node (its replies travel back there)."""
        return self.router.asked_elsewhere(request_uuid)

    def fail_requests_to(self, peer: PeerLink) -> None:
        """Fail waits on replies that only ``peer`` could have sent: local ones at once, and a
        leaf's by telling the leaf (an error reply its node turns into ``LinkClosedError``)."""
        lost = self.router.requests_lost(peer)
        if not lost:
            return
        detail = f"the link to node {peer.uuid} closed: {peer.end_reason}"
        local = [uuid for uuid, asker in lost if asker is None]
        n = self.bus.replies.fail_waits(local, LinkClosedError(detail)) if local else 0
        for uuid, asker in lost:
            if asker is not None and asker.is_open:
                n += asker.enqueue(link_closed_reply(uuid, detail))
        if n:
            self._log.info("requests_failed", peer=peer.uuid, count=n)

    # -- numbering and resume --------------------------------------------------------------------

    def sequence(self) -> int:
        """The next origin number, on a peer node (a leaf's messages are numbered by its node)."""
        if not self.on_peer:
            return 0
        self.origin_seq += 1
        return self.origin_seq

    def continue_numbering(
        self, highest: int, clean: bool, skipped: tuple[range, ...] = ()
    ) -> None:
        """After a restart with the same uuid: number on above ``highest``, the highest number
        this node gave before; after an unclean end, ``RESTART_GAP`` further (the last numbers
        given may not have reached the files), and the numbers jumped over were never given.
        ``skipped``: the jumps of earlier unclean restarts (a receiver may ask from before
        them), kept with this one."""
        high = max(highest, self.origin_seq)
        self.origin_skipped = tuple(skipped)
        if clean or not high:
            self.origin_seq = high
        else:
            self.origin_seq = high + RESTART_GAP
            self.origin_skipped += (range(high + 1, high + RESTART_GAP + 1),)

    def _sequenced(self, peer: PeerLink, msg: Message, seq: int) -> None:
        """A message ``peer`` numbered (``-seq``: resent): held while it resends, else taken."""
        origin = peer.uuid  # only the origin numbers, and only on its own links
        limit = self.config.queue_limit
        if seq > 0 and self.resumption.holds(origin, peer, msg, seq, limit):
            return
        if seq < 0 and not self.resumption.resent_now(origin, peer, msg, -seq, limit):
            return
        self.resumption.seen(origin, abs(seq))
        self._take(peer, msg)

    def _resumed(self, peer: PeerLink, msg: Message, seq: int) -> None:
        """A held message, let through once its origin's resend ended."""
        self.resumption.seen(peer.uuid, seq)
        self._take(peer, msg)  # even if its link has ended since: it arrived

    def _control(self, peer: PeerLink, msg: Message) -> None:
        """A request a node makes of its neighbour, consumed here and never forwarded."""
        if peer.is_leaf and msg.type in (WAITING_TYPE, REPLAY_TYPE):
            self._leaf_request(peer, msg)
        elif peer.is_peer and msg.type == RESUME_TYPE:
            self._resend(peer, msg)
        elif peer.is_peer and msg.type == RESUME_END_TYPE:
            self.resumption.ended(peer.uuid, *resume_end(msg.data))
        else:
            self._take(peer, msg)

    def _resend(self, peer: PeerLink, request: Message) -> None:
        """A peer asks for what it missed of ours: resend it from the buffer, then the end."""
        after = asked_after(request, self.origin_seq)
        held = self.bus.buffer.sequenced_after(after)
        answer, lost = resend_answer(after, self.origin_seq, held, peer.wants, self.origin_skipped)
        for msg, seq in answer:
            peer.enqueue(msg, seq)
        self.resumption.resent += len(answer) - 1
        self._log.info("resent", peer=peer.uuid, after=after, messages=len(answer) - 1, lost=lost)

    def _leaf_request(self, leaf: PeerLink, msg: Message) -> None:
        """A request a leaf makes of its node, consumed here and never forwarded."""
        if msg.type == WAITING_TYPE:
            self.router.waiting(msg.data.decode(errors="replace"), leaf)
            return
        buffered = [m for m, _ in self.bus.buffer.entries()]
        answer = replay_answer(msg, buffered, leaf.wants)
        for each in answer:
            leaf.enqueue(each)
        self._log.debug("replay_answered", peer=leaf.uuid, messages=len(answer) - 1)


def _number(link: PeerLink, seq: int) -> int:
    """The origin number ``link`` gets with a message: peers get it, leaves never do."""
    return seq if link.is_peer else 0
