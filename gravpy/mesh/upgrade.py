"""Upgrade: a live link moves to TCP, the fastest transport both nodes speak.

Theory of operation
-------------------
A static peer named by its WebSocket (or HTTP) URL links over that transport, but the other
node's HELLO names its fastest endpoint (``tcp://`` when it listens with TCP). The node that
dialled the link (only that side, so the two never race) dials that endpoint too and moves the
link there; the link it leaves is the *old* one, the one it dials the *new* one. Only TCP is a
target (``upgrade_endpoint``): HTTP links are not moved to WebSocket.

Who may replace a live link. Any app learns every node uuid, so a second link claiming a node's
uuid must not take the place of a live one on its word (``admission.may_replace`` refuses it as a
duplicate). Every HELLO an accepting peer sends carries a fresh random *upgrade token*
(``Hello.upgrade_token``); only the node at the other end of that link hears it. The upgrading
dial presents it in its own HELLO, and the acceptor lets a link claiming a live link's node
uuid take that link's place only if it presents the token issued on that very link (compared in
constant time); a wrong token is refused as a duplicate and counted (``refused``). Old peers read
the first twelve HELLO elements and ignore the token, and never issue one, so a node never tries
to move a link to an old peer. The dialling side trusts the new link as far as it trusts any dial
to an endpoint a node names: the endpoint came from the old link's HELLO and the new link's
HELLO must carry the same node uuid (with a mesh key or identity keys, AUTH proves it).

Make before break. The new link's handshake runs beside the old link, which carries traffic
throughout. Each side *switches* when the new link opens on its side: the new link becomes the
route to the node (the old one's interests and neighbours are carried over until the node says
them again), and a MOVED frame is queued on the old link after every message queued there
(``PeerLink.moved``). From then on this side sends nothing new on the old link
(replies follow the node to its new link: ``Router._reply_route``). Until the remote's MOVED
has arrived on the old link, the hub takes no message from the new link (``draining``: the link
keeps them in its backlog and reads no further, so TCP pushes back; its reader waits until
the hub takes them again: ``PeerLink.take_again``). Everything the remote sent on the old link precedes, in its sending
order, everything it sends on the new one, so messages arrive complete, once and in order, with
no resend. A side ends the old link (CLOSE ``moved``) once it has both sent its MOVED and read
the remote's: neither side has anything left on it. The routing table always holds a link to
the node, so no ``peer_disconnected`` is logged and no wait on a reply fails.

If the old link ends before the remote's marker arrives (it died, or the marker did not come
within ``handshake_timeout``, when this side ends it), the new link asks the remote to resend
what it numbered after the last number heard (``gravpy.mesh.resume``; the old link's HELLO
number is the baseline) before its held messages go through, so what the old link lost is
resent, in order.

If the new link fails before it opens (no route, a refusal), nothing changed: the old link goes
on. A dial that fails (nothing answers at the endpoint yet) is retried with the dialler's
backoff for as long as the old link is the route (``Mover``); a refused handshake is not,
and the next link to that node tries again. If the old link ends first, the new link goes on
as an ordinary link.
"""

from __future__ import annotations

import asyncio
import hmac
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from gravpy import _log as logs
from gravpy.mesh.dialer import dials, rank
from gravpy.plugins import Transport
from gravpy.proto import ROLE_PEER

if TYPE_CHECKING:
    from gravpy.mesh.peer_link import PeerLink

__all__ = [
    "TOKEN_BYTES",
    "Move",
    "UpgradeStatistics",
    "Upgrades",
    "issued_token",
    "upgrade_endpoint",
]

TOKEN_BYTES: Final = 16
REASON_MOVED: Final = "moved"  # the CLOSE reason of an old link (only new peers ever see it)
_SECURE: Final = frozenset({"tls", "wss", "https"})

_log = logs.get_logger("gravpy.mesh.upgrade")


def issued_token(local_role: str, initiator: bool) -> bytes:
    """The token a new link's HELLO carries: fresh random bytes on a link a peer accepts."""
    return os.urandom(TOKEN_BYTES) if local_role == ROLE_PEER and not initiator else b""


def upgrade_endpoint(link: PeerLink, local_role: str, transports: Sequence[Transport]) -> str:
    """The TCP endpoint this side should move ``link`` to, or "" (none, or not this side's to
    move: only the side that dialled moves, only between peers, only to a node that issued a
    token, only to TCP, the fast path, and never from an encrypted transport to a plain one).

    An HTTP link is not moved to WebSocket: an operator names an HTTP peer for a network that
    needs it (a proxy that passes no WebSocket upgrade)."""
    remote = link.remote
    if (
        remote is None
        or local_role != ROLE_PEER
        or not link.is_peer
        or not link.link.initiator
        or not remote.upgrade_token
        or not remote.endpoint
        or not link.dial_endpoint
    ):
        return ""
    target, current = remote.endpoint, link.dial_endpoint
    if rank(target) != 0 or rank(current) == 0:
        return ""
    if _scheme(current) in _SECURE and _scheme(target) not in _SECURE:
        return ""
    return target if dials(transports, target) else ""


def _scheme(endpoint: str) -> str:
    return endpoint.split("://", 1)[0]


@dataclass(eq=False)
class Move:
    """One link moving: ``old`` carries traffic until ``new`` opens and both markers crossed."""

    old: PeerLink
    new: PeerLink
    switched: bool = False  # the new link is the route here; our marker is queued on the old
    marker_in: bool = False  # the remote's marker arrived on the old link
    timer: asyncio.TimerHandle | None = None


class Upgrades:
    """The moves in progress on one node, by old and new link; what they came to, counted."""

    def __init__(
        self, node_uuid: str, marker_timeout: float, undrained: Callable[[PeerLink], None]
    ) -> None:
        self.moving: dict[PeerLink, Move] = {}  # by old link (the hub checks it per batch)
        self._by_new: dict[PeerLink, Move] = {}
        # new links whose messages wait for the old link's marker (the hub takes none of them)
        self.draining: set[PeerLink] = set()
        self._undrained = undrained  # the old link ended before its marker: resume on the new
        self._timeout = marker_timeout
        self.moved = 0  # links moved to a faster transport
        self.failed = 0  # attempts whose new link never opened (a failed dial is retried)
        self.refused = 0  # links refused here for a wrong upgrade token
        self._log = _log.bind(node=node_uuid)

    def begin(self, old: PeerLink, new: PeerLink) -> Move:
        """``new`` will take ``old``'s place once it opens."""
        move = Move(old, new)
        self.moving[old] = move
        self._by_new[new] = move
        return move

    def of_new(self, new: PeerLink) -> Move | None:
        """The move ``new`` makes, if it is the new link of one that has not switched yet."""
        move = self._by_new.get(new)
        return move if move is not None and not move.switched else None

    def check(self, new: PeerLink, old: PeerLink) -> bool | None:
        """At HELLO, ``new`` claims the node of the live link ``old``: True if it is a move of
        ``old`` (this side's own dial, or one presenting the token issued on ``old``, which then
        begins here), False if it presents a wrong token, None if it presents none."""
        same_key = new.identity_key == old.identity_key  # a proven key is never traded
        move = self._by_new.get(new)
        if move is not None:
            return move.old is old and same_key
        remote = new.remote
        if remote is None or not remote.upgrade_token or new.link.initiator:
            return None
        issued = old.proto.upgrade_token
        if old.link.initiator or not issued or not new.is_peer or not same_key:
            return False
        if not hmac.compare_digest(remote.upgrade_token, issued):
            return False
        self.begin(old, new)
        return True

    def switched(self, move: Move) -> None:
        """The new link opened here and is the route now: queue our marker on the old link, and
        end it if the remote's marker is in (else when it comes, or at the timeout)."""
        move.switched = True
        self.moved += 1
        old, new = move.old, move.new
        self._log.info("link_moved", peer=new.uuid, old=old.link.transport, new=new.link.transport)
        self.mark(old)
        if move.marker_in:
            old.end(REASON_MOVED)
        else:
            self.draining.add(new)
            loop = asyncio.get_running_loop()
            move.timer = loop.call_later(self._timeout, self._overdue, move)

    def mark(self, old: PeerLink) -> None:
        """Queue our MOVED on ``old``, after everything queued there."""
        old.moved()

    def _overdue(self, move: Move) -> None:
        move.timer = None
        self._log.info("move_marker_missing", peer=move.old.uuid, after=self._timeout)
        move.old.end(REASON_MOVED)

    def marker_in(self, old: PeerLink) -> None:
        """The remote's MOVED arrived on ``old``: the new link's messages may go through."""
        move = self.moving.get(old)
        if move is None:
            return
        move.marker_in = True
        self._release(move.new)
        if move.switched:
            old.end(REASON_MOVED)

    def ended(self, link: PeerLink) -> bool:
        """``link`` ended: forget the move it was the old link of (True), or the new link of (a
        move whose new link ended before it opened has failed; the old link goes on)."""
        move = self.moving.get(link)
        if move is not None:
            self._forget(move)
            if not move.switched:
                self._log.info("move_abandoned", peer=link.uuid, reason="the old link ended")
            elif not (move.marker_in or move.new.ended.is_set()):  # asked for on the new link
                self._log.info("move_undrained", peer=link.uuid, reason=link.end_reason)
                self._undrained(move.new)
            return True
        move = self._by_new.get(link)
        if move is not None and not move.switched:
            self._forget(move)
            self.failed += 1
            self._log.info("move_failed", peer=link.uuid or move.old.uuid, reason=link.end_reason)
        return False

    def _forget(self, move: Move) -> None:
        if move.timer is not None:
            move.timer.cancel()
            move.timer = None
        self.moving.pop(move.old, None)
        self._by_new.pop(move.new, None)
        self._release(move.new)

    def _release(self, new: PeerLink) -> None:
        """The hub takes ``new``'s messages again: its reader, waiting for that, goes on."""
        if new in self.draining:
            self.draining.discard(new)
            new.take_again()

    def close(self) -> None:
        for move in list(self.moving.values()):
            self._forget(move)

    def statistics(self) -> UpgradeStatistics:
        """Moves since start, as a frozen snapshot."""
        return UpgradeStatistics(self.moved, self.failed, self.refused, len(self.moving))


@dataclass(frozen=True, slots=True)
class UpgradeStatistics:
    """Links moved to a faster transport, attempts whose new link never opened, links refused
    for a wrong token, and moves in progress now."""

    moved: int
    failed: int
    refused: int
    in_progress: int

    def outcomes(self) -> dict[str, int]:
        """The moves by outcome, every outcome present."""
        return {"moved": self.moved, "failed": self.failed, "refused": self.refused}
