"""The mesh: a node's links to other nodes and the routing between them and the local bus.

- ``hub``: ``Hub``, the node's side of the mesh: lifecycle, link events, handshake decisions,
  gossip and interests.
- ``routing``: ``Router``, pure routing decisions (seen-set, route caches, relays, lost requests).
- ``dialer``: ``Dialer``, wanted endpoints and their dial loops with backoff.
- ``peer_link``: ``PeerLink``, one link driven by asyncio around the sans-I/O ``PeerProtocol``.
- ``config``: ``HubConfig`` and ``HubStatistics``.

docs/architecture.md follows one message through these files.
"""

from gravpy.mesh.config import HubConfig, HubStatistics
from gravpy.mesh.hub import Hub
from gravpy.mesh.peer_link import PeerInfo, PeerLink
from gravpy.mesh.routing import Router

__all__ = ["Hub", "HubConfig", "HubStatistics", "PeerInfo", "PeerLink", "Router"]
