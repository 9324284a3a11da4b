"""Bridges: a mesh joined to another messaging system, so meshes on different networks meet.

- ``port``: ``BridgePort`` / ``BridgeHost``, the hub's side and the bridge's side of the port.
- ``subjects``: how messages look on NATS (subjects, escaping, headers), pure.
- ``interest``: ``InterestTable``, what other bridges announced and who exports, pure.
- ``nats``: ``NatsBridge`` (nats-py; install the ``nats`` extra): its connection, subscriptions
  and announcements; ``crossing`` (``Crossing``) keeps what its mesh wants and what the other
  bridges announced, and who is active; ``exporter`` (``Exporter``, mesh to NATS) and
  ``importer`` (``Importer``, NATS to mesh) carry the messages.
- ``config``: ``NatsBridgeConfig``, ``NatsBridgeStatistics``.

docs/scaling.md says when to bridge and what is guaranteed across a bridge.
"""

from gravpy.bridge.config import NatsBridgeConfig, NatsBridgeStatistics
from gravpy.bridge.port import BridgeHost, BridgePort, MeshInterests

__all__ = ["BridgeHost", "BridgePort", "MeshInterests", "NatsBridgeConfig", "NatsBridgeStatistics"]
