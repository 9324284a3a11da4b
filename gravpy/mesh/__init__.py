"""The mesh: a node's links to other nodes and the routing between them and the local bus.

- ``hub``: ``Hub``, the node's side of the mesh: lifecycle and the wiring of the pieces below.
- ``peering``: ``Peering``, what the node makes of its links' events (HELLO, open, INTERESTS,
  PEERS, WITHDRAW, MOVED, the end of a link).
- ``roster``: ``Roster``, the set of links, the cap on accepted ones, their totals, the leaving.
- ``advertiser``: ``Advertiser``, what each link is told this node wants, once per loop turn.
- ``mover``: ``Mover``, moving a link to a faster transport both sides speak.
- ``traffic``: ``Traffic``, the path of every message through the node (deliver, forward,
  number, resume, requests of neighbours).
- ``routing``: ``Router``, pure routing decisions (seen-set, route caches, relays, lost requests,
  group placement).
- ``admission``: ``Admission``, who may link at HELLO (auth file, the duplicate rule).
- ``gossip``: ``Gossip``, the endpoints peers tell each other, and dialling what is heard.
- ``interests``: ``InterestTable`` (what each link is told, kept incrementally), ``AbsentPeers``.
- ``bridge_host``: ``Bridges``, the node's side of its bridges to other meshes.
- ``dialer``: ``Dialer``, wanted endpoints and their dial loops with backoff.
- ``resume``, ``permissions``, ``enforcement``: resume after a flap; per-type permissions.
- ``peer_link``: ``PeerLink``, one link driven by asyncio around the sans-I/O ``PeerProtocol``;
  ``link_reader`` (``LinkReader``) receives for it and ``link_writer`` (``LinkWriter``) sends.
- ``config``: ``HubConfig`` and ``HubStatistics``.

docs/architecture.md follows one message through these files.
"""

from gravpy.mesh.config import HubConfig, HubStatistics
from gravpy.mesh.hub import Hub
from gravpy.mesh.peer_link import PeerInfo, PeerLink
from gravpy.mesh.routing import Router

__all__ = ["Hub", "HubConfig", "HubStatistics", "PeerInfo", "PeerLink", "Router"]
