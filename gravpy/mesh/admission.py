"""Admission: which link may join this node at HELLO, and which of two links to one node stays.

Theory of operation
-------------------
At HELLO a link is checked twice. First against the auth file in force (``Authority``): an
unknown key, a bad signature or a refused token ends the link with that reason, told to the one
refused and counted. Second against the links already up: the mesh keeps one link per node, so a
second link claiming a node uuid that is linked already either replaces the old one or is refused
as a duplicate, by ``may_replace``, the same decision on both sides; a link that moves a live one
to a faster transport (``gravpy.mesh.upgrade``) replaces it only with the token issued on it, and
a wrong token is refused as a duplicate and counted. A new auth file (SIGHUP) is
applied to the open links too: a link whose identity is no longer admitted is closed, the others
run on under their identity's new rules (an app hears its new grant).

Every refusal is counted by reason; the lines logged about them are rate-limited per reason
(``RefusalLog``) before any is built, so a flood of bad attempts writes a few lines, not one each.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gravpy import _log as logs
from gravpy.mesh.permissions import GRANT_TYPE, Authority, Refusal, grant_data
from gravpy.mesh.refusal_log import RefusalLog
from gravpy.message import Message
from gravpy.proto import REASON_DUPLICATE, REASON_NOT_ALLOWED, Hello, Rejected
from gravpy.proto.handshake import REJECT_REASONS

if TYPE_CHECKING:
    from gravpy.mesh.peer_link import PeerLink
    from gravpy.mesh.upgrade import Upgrades

__all__ = ["OTHER_REASON", "Admission", "may_replace"]

OTHER_REASON = "other"
"""Where refusals are counted whose reason is not one of this version's (``REJECT_REASONS``)."""

_log = logs.get_logger("gravpy.mesh.admission")


class Admission:
    """The auth rules in force and the duplicate rule; refusals counted by reason."""

    def __init__(
        self,
        node_uuid: str,
        peers: dict[str, PeerLink],
        authority: Authority | None,
        upgrades: Upgrades | None = None,
    ):
        self.authority = authority  # None: every link is accepted
        self._peers = peers  # the router's chosen link per node (the same dict, kept current)
        self._upgrades = upgrades  # links moving to a faster transport (None: none move)
        self.rejected: dict[str, int] = {}  # handshakes refused here or by the remote, by reason
        self.log_limit = RefusalLog()  # lines about refusals: a few per reason, not one each
        self._log = _log.bind(node=node_uuid)

    def admit(self, peer: PeerLink) -> bool:
        """At HELLO: True if ``peer`` may link here; otherwise it is refused (told why, counted)."""
        if self.authority is not None:
            verdict = self.authority.admit(peer.identity_key, peer.proto.remote_token)
            if isinstance(verdict, Refusal):
                self.refuse(peer, verdict.reason, verdict.detail)
                return False
            peer.authorized(verdict)
        existing = self._peers.get(peer.uuid)
        if existing is None or existing is peer or existing.ended.is_set():
            return True
        upgrades = self._upgrades
        moving = upgrades.check(peer, existing) if upgrades is not None else None
        if moving is None and not may_replace(peer, existing):
            self.refuse(peer, REASON_DUPLICATE, "a link to this node already exists")
            return False
        if moving is False and upgrades is not None:
            upgrades.refused += 1
            self.refuse(peer, REASON_DUPLICATE, "the upgrade token is not the live link's")
            return False
        return True

    def screen(self, hello: Hello) -> tuple[str, str] | None:
        """A remote's HELLO, before its AUTH: ``(reason, detail)`` if the auth file refuses it
        whatever it proves (an unlisted key), so the handshake ends before any signature work."""
        if self.authority is None:
            return None
        refusal = self.authority.screen(hello.public_key, hello.has_token)
        if refusal is None:
            return None
        return refusal.reason, refusal.detail

    def refuse(self, peer: PeerLink, reason: str, detail: str) -> None:
        """Refuse ``peer`` at HELLO, tell it why, count the reason and log it."""
        self.count(reason)
        extra = self.log_limit.admit("handshake_refused", reason)
        if extra is not None:
            self._log.info(
                "handshake_refused",
                peer=peer.uuid,
                address=peer.link.remote_address,
                reason=reason,
                detail=detail,
                **extra,
            )
        peer.reject(reason, detail)

    def ended(self, peer: PeerLink, event: Rejected, log: Any) -> None:
        """The handshake of ``peer`` was refused by the protocol, here or by the remote (a bad
        signature, an unlisted key, a failed check): count it, log it on ``log`` (rate-limited)."""
        self.count(event.reason)
        peer.rejected(event.reason, event.detail)
        extra = self.log_limit.admit("handshake_rejected", event.reason)
        if extra is not None:
            log.info(
                "handshake_rejected",
                peer=peer.uuid or peer.link.remote_address,
                reason=event.reason,
                detail=event.detail,
                by_remote=event.by_remote,
                **extra,
            )

    def count(self, reason: str) -> None:
        """Count a refusal under ``reason``, or ``other`` if this version does not know it: a
        remote may send any reason in its REJECT, even before it says who it is, and a new one
        per connection would otherwise grow this and the metric's labels without end."""
        key = reason if reason in REJECT_REASONS else OTHER_REASON
        self.rejected[key] = self.rejected.get(key, 0) + 1

    def reauthorize(self, authority: Authority | None, links: list[PeerLink]) -> int:
        """Install new auth rules and apply them to ``links``; return how many were closed."""
        self.authority = authority
        closed = 0
        for link in links:
            if authority is None:
                link.authorized(None)
                continue
            verdict = authority.admit(link.identity_key, link.proto.remote_token)
            if isinstance(verdict, Refusal):
                self._log.info("link_no_longer_allowed", peer=link.uuid, detail=verdict.detail)
                link.end(REASON_NOT_ALLOWED)
                closed += 1
            else:
                link.authorized(verdict)
                if link.is_leaf and link.is_open:
                    link.send_now(Message.new(GRANT_TYPE, grant_data(verdict)))
        return closed


def may_replace(new: PeerLink, old: PeerLink) -> bool:
    """True if ``new`` takes the place of ``old``, a live link that claims the same node uuid.

    A link whose remote proved an identity key is replaced only by one proving the same key. An
    open link is not replaced by a claim alone from the same dialler (any app learns every uuid
    from ``gravd.info``): the new one is refused as a duplicate until the old one ends (a node
    that restarted waits for its old link to be found dead). Links dialled by different nodes
    (two nodes dialled each other at once) are settled by ``_preferred``, the same on both sides.
    """
    if old.identity_key and new.identity_key != old.identity_key:
        return False
    if old.is_open and not old.identity_key and new.initiator_uuid == old.initiator_uuid:
        return False
    return _preferred(new, old)


def _preferred(new: PeerLink, old: PeerLink) -> bool:
    """Of two links between the same nodes, both sides keep the same one.

    Links dialled by different nodes: the one dialled by the smaller uuid wins. Dialled by the same
    node: the newer wins (that node has given up on the old one).
    """
    if new.initiator_uuid != old.initiator_uuid:
        return new.initiator_uuid < old.initiator_uuid
    return True
