"""The hub's configuration and its statistics: frozen, validated values."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from gravpy.backoff import BackoffPolicy
from gravpy.errors import UsageError
from gravpy.mesh.link_stats import LinkTotals, RoleTraffic
from gravpy.plugins import Transport
from gravpy.proto import ProtocolConfig
from gravpy.proto.config import MESSAGE_OVERHEAD

__all__ = ["HubConfig", "HubStatistics", "LinkTotals", "fit_to_transports"]


@dataclass(frozen=True, slots=True)
class HubStatistics:
    """Totals since the node started, closed links included (monotonic counters)."""

    links_opened: int
    links_closed: int
    handshakes_rejected: dict[str, int]  # by reason code
    messages_in: int  # received from links
    messages_out: int  # written to links
    dropped_link: int  # could not be sent on a link: queue full, link closed, peer withdrawn
    dropped_duplicate: int  # arrived twice (seen-set)
    dropped_no_route: int  # a reply whose asker's link was gone
    dropped_no_member: int = 0  # a group a message was for had no live member behind this node
    lost_by_origin: dict[str, int] = field(default_factory=dict)  # fell out of an origin's buffer
    resent: int = 0  # messages this node resent to peers that missed them across a flap
    connections_refused: int = 0  # accepted links closed at once: max_connections were open
    connections_timed_out: int = 0  # accepted, dropped at the transport's handshake deadline
    tls_handshakes_failed: int = 0  # on this node's TLS listeners: failed or timed out (logged)
    protocol_violations: dict[str, int] = field(default_factory=dict)  # links closed, by reason
    gossip_ignored: int = 0  # gossiped endpoints over the per-frame or dial-target bounds
    publish_denied: int = 0  # messages a link's identity may not publish, dropped here
    # links moved to a faster transport (gravpy.mesh.upgrade): "moved", "failed" (attempts whose
    # new link never opened; a failed dial is retried), "refused" (a wrong upgrade token)
    link_moves: dict[str, int] = field(default_factory=dict)
    # exact totals per link role ("peer", "leaf"; "unknown" before a HELLO), closed links included
    by_role: dict[str, RoleTraffic] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HubConfig:
    """How a node links to others. Validated on construction."""

    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    dial_timeout: float = 5.0
    queue_limit: int = 65_536  # messages waiting per link
    queue_bytes: int = 64 << 20  # bytes of message data waiting per link (past it: dropped)
    max_connections: int = 1024  # accepted links open at once (past it: closed at once)
    drain_timeout: float = 2.0  # how long stop() waits for withdraw acks and queues to empty
    # how long a peer whose link dropped (not withdrew) is still advertised to leaves, so what they
    # send for it is numbered and buffered here, and resent when it relinks (gravpy.mesh.resume)
    resume_window: float = 30.0
    gossip_pairs: int = 64  # endpoints taken from one PEERS frame; the rest are ignored (counted)
    gossip_targets: int = 256  # gossiped endpoints kept as dial targets at once

    def __post_init__(self) -> None:
        if not self.dial_timeout > 0 or not self.drain_timeout >= 0:
            raise UsageError("dial_timeout must be > 0 and drain_timeout >= 0")
        if not self.resume_window >= 0:
            raise UsageError("resume_window must be >= 0")
        if not isinstance(self.queue_limit, int) or self.queue_limit < 16:
            raise UsageError("queue_limit must be an int >= 16")
        if self.queue_bytes < 1 or self.max_connections < 1:
            raise UsageError("queue_bytes and max_connections must be >= 1")
        if not self.gossip_pairs >= 1 or not self.gossip_targets >= 0:
            raise UsageError("gossip_pairs must be >= 1 and gossip_targets >= 0")


def fit_to_transports(config: HubConfig, transports: list[Transport]) -> HubConfig:
    """Frames no larger than every transport carries, messages that fit in such a frame."""
    limits = config.protocol.limits
    frame = min([limits.max_frame_bytes, *(t.max_frame_bytes for t in transports)])
    if frame == limits.max_frame_bytes:
        return config
    message = min(limits.max_message_bytes, frame - MESSAGE_OVERHEAD)
    if message < 1:
        raise UsageError(f"a transport's max_frame_bytes ({frame}) leaves no room for a message")
    fitted = dataclasses.replace(limits, max_frame_bytes=frame, max_message_bytes=message)
    protocol = dataclasses.replace(config.protocol, limits=fitted)
    return dataclasses.replace(config, protocol=protocol)
