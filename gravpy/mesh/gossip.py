"""Gossip: peers tell each other the endpoints they know, so a partial list becomes a full mesh.

Theory of operation
-------------------
Whenever a peer link opens or ends, this node tells every peer (PEERS) each endpoint of its own
and of the other peers it is linked to. A node that hears of a node it is not linked to dials it,
at the fastest endpoint one of its transports dials (tcp, then websocket, then http), and at the
next fastest if that one stays unreachable (a firewall may pass one port and not the other). Anyone can
name endpoints, so what is heard is bounded: at most ``gossip_pairs`` pairs are read from one
frame, and at most ``gossip_targets`` gossiped endpoints are dialled at once; the rest is counted
as ignored. Only a peer node dials what it hears; an app (leaf) just keeps its node's endpoints.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from gravpy import _log as logs
from gravpy.mesh.config import HubConfig
from gravpy.mesh.dialer import Dialer, dials, fastest
from gravpy.plugins import Transport

if TYPE_CHECKING:
    from gravpy.mesh.peer_link import PeerLink

__all__ = ["Gossip"]

_log = logs.get_logger("gravpy.mesh.gossip")


class Gossip:
    """What this node tells its peers of the mesh, and what it dials of what they tell it."""

    def __init__(
        self,
        node_uuid: str,
        peers: dict[str, PeerLink],
        dialer: Dialer,
        transports: Sequence[Transport],
        config: HubConfig,
    ) -> None:
        self._node_uuid = node_uuid
        self._peers = peers  # the router's chosen link per node (the same dict, kept current)
        self._dialer = dialer
        self._transports = transports
        self._pairs_limit = config.gossip_pairs
        self._targets_limit = config.gossip_targets
        self.ignored = 0  # pairs beyond a frame's limit, and endpoints beyond the dial limit
        self._log = _log.bind(node=node_uuid)

    def tell(self, own_endpoints: list[str]) -> None:
        """Tell every peer every endpoint of ours and of the other peers we know."""
        open_peers = [link for link in self._peers.values() if link.is_open and link.is_peer]
        pairs = [(link.uuid, ep) for link in open_peers for ep in link.known_endpoints()]
        pairs.extend((self._node_uuid, ep) for ep in own_endpoints)
        for link in open_peers:
            link.send_peers([p for p in pairs if p[0] != link.uuid])

    def heard(self, sender: PeerLink, pairs: tuple[tuple[str, str], ...], *, dial: bool) -> None:
        """A peer told us the endpoints it knows: its own (kept, to pass on) and, if ``dial``,
        its peers' (each node we are not linked to is dialled at its fastest endpoint)."""
        if len(pairs) > self._pairs_limit:
            self.ignored += len(pairs) - self._pairs_limit
            self._log.warning(
                "gossip_truncated", peer=sender.uuid, pairs=len(pairs), kept=self._pairs_limit
            )
            pairs = pairs[: self._pairs_limit]
        sender.set_endpoints(ep for uuid, ep in pairs if uuid == sender.uuid and ep)
        if dial:
            self._dial_unknown(pairs)

    def _dial_unknown(self, pairs: tuple[tuple[str, str], ...]) -> None:
        known: dict[str, list[str]] = {}
        for uuid, endpoint in pairs:
            if uuid == self._node_uuid or uuid in self._peers or not endpoint:
                continue
            if dials(self._transports, endpoint):
                known.setdefault(uuid, []).append(endpoint)
        dialer = self._dialer
        room = self._targets_limit - dialer.count("gossip")
        for uuid, endpoints in known.items():
            new = all(dialer.get(endpoint) is None for endpoint in endpoints)
            if new and room <= 0:
                self.ignored += 1
                continue
            room -= new
            if new:
                dialer.want_fastest(uuid, endpoints)
            else:  # already dialled: it may be a new node at a known address
                dialer.want(fastest([e for e in endpoints if dialer.get(e)]), uuid, "gossip")
