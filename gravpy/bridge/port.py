"""The port between a node's hub and a bridge: two small Protocols, nothing else.

Theory of operation
-------------------
The hub holds at most one ``BridgePort`` per bridge (``Hub.attach_bridge``) and tells it three
things, all synchronous and cheap (a bridge never blocks the local mesh):

- ``mesh_interests(interests)`` whenever what this node's pods and its peers want changes;
- ``offer(msg)`` for every message new to this node (sent by a local pod or arrived from a peer or
  leaf, never one the bridge injected): the bridge returns True if it will carry it across (so a
  request it carries does not raise ``NoResponders``), or if it cannot and answered it with a
  failure reply (``inject``) saying why (too large for NATS, its queue full, not connected...:
  ``gravpy.bridge.exporter``);
- ``advertised()``: the patterns this node must advertise to its peers on the bridge's behalf
  (what remote meshes want, and what is exported), so the mesh sends those messages here.

The bridge reaches back through ``BridgeHost``: ``inject(msg, groups)`` delivers a message that
came from outside, with its original uuid, to local pods and on to peers (a duplicate is dropped by
the seen-set and returns -1), placing one copy in this mesh for each group named (``None``: for
every group that admits it; ``()``: for none, the copy went to another mesh),
``redeliver(msg)`` passes on a message this node already has, to the links it goes to and not to
local pods again (a bridge taking over delivers what the old one may not have finished sending),
``no_responders(request, type)`` says nothing beyond the bridge answers a request it carried (a
wait on it here fails at once; one on another node gets the failure reply), ``bridge_changed()``
re-advertises after ``advertised()`` changed, ``peer_wants(node, type)``
says whether this node's open link to ``node`` admits ``type`` (a standby checks that its active
bridge got what it was sent), and
``bridge_congested(sink, flag)`` makes ``Pod.publish`` wait while the bridge's queue is past its
high-water mark (as a full link does; the hot path itself never waits).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Protocol

from gravpy.bridge.config import NatsBridgeStatistics
from gravpy.message import Message

__all__ = ["BridgeHost", "BridgePort", "Groups", "MeshInterests"]


Groups = tuple[tuple[str, str, int], ...]  # (group, pattern, members)


@dataclass(frozen=True, slots=True)
class MeshInterests:
    """What this node's pods want (``local``) and what each peer advertised (``peers``, by node
    uuid; leaves included); ``groups``: the group members this node and its peers reach."""

    local: tuple[str, ...] = ()
    peers: dict[str, tuple[str, ...]] = field(default_factory=dict)
    groups: Groups = ()


class BridgeHost(Protocol):
    """What a bridge may ask of its node (``gravpy.mesh.Hub``)."""

    @property
    def node_uuid(self) -> str: ...
    @property
    def mesh_name(self) -> str: ...
    def check_sendable(self, msg: Message) -> None: ...
    def fits_plain(self, size: int, header_chars: int) -> bool: ...
    def inject(self, msg: Message, groups: Collection[str] | None = None) -> int: ...
    def redeliver(self, msg: Message) -> int: ...
    def no_responders(self, request_uuid: str, msg_type: str) -> None: ...
    def bridge_changed(self) -> None: ...
    def peer_wants(self, node: str, msg_type: str) -> bool: ...
    def bridge_congested(self, sink: object, congested: bool) -> None: ...


class BridgePort(Protocol):
    """What the hub tells a bridge (``gravpy.bridge.NatsBridge``)."""

    def bind(self, host: BridgeHost) -> None: ...
    def mesh_interests(self, interests: MeshInterests) -> None: ...
    def offer(self, msg: Message) -> bool: ...
    def advertised(self) -> tuple[str, ...]: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def statistics(self) -> NatsBridgeStatistics: ...
