"""What a link carried and lost: per-link counters, the ``PeerInfo`` snapshot, totals by role.

Theory of operation
-------------------
Each ``PeerLink`` counts the messages it could not carry in a ``LinkDrops``, one named counter per
reason, at the place the drop happens: ``enqueue`` refuses a message when the send queue is full
by count (``queue_full``) or by bytes (``queue_bytes``), or when the link is closing
(``link_closed``); what is still queued when the link ends is ``link_closed`` too, what is queued
when the remote withdraws (or handed to the protocol after it did) is ``remote_withdrew``, a
message over the frame limits is ``too_large``. Those are messages *to* the remote. A message
*from* the remote that its identity may not publish here is ``permission_denied``
(``gravpy.mesh.enforcement``). Bytes are the protocol's own counts (``PeerProtocol``): every frame
as encoded, sealed and handed to the transport, and every frame as received, before any
transport framing.

``PeerInfo`` is the frozen snapshot of one link that ``Grav.peers()`` returns. ``LinkTotals``
keeps, per role, what links carried once they end, so the hub's totals by role
(``HubStatistics.by_role``: closed links plus the live ones) are exact and only ever grow: a
leaf that sends N messages and disconnects still shows N under ``leaf``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from gravpy.mesh.peer_link import PeerLink

__all__ = [
    "DROP_REASONS",
    "ROLE_UNKNOWN",
    "DropCounts",
    "LinkDrops",
    "LinkTotals",
    "PeerInfo",
    "RoleTraffic",
    "link_info",
]

ROLE_UNKNOWN: Final = "unknown"  # a link that ended before the remote's HELLO said its role


@dataclass(frozen=True, slots=True)
class DropCounts:
    """Messages a link lost, by reason (see the module docstring)."""

    queue_full: int = 0  # to the remote: the send queue held queue_limit messages
    queue_bytes: int = 0  # to the remote: the send queue held queue_bytes of data
    link_closed: int = 0  # to the remote: refused while closing, or still queued at the end
    remote_withdrew: int = 0  # to the remote: queued or sent after it withdrew
    too_large: int = 0  # to the remote: over the frame or message limits
    permission_denied: int = 0  # from the remote: its identity may not publish the type here
    arrived_closed: int = 0  # from the remote: arrived after this side had closed the link

    @property
    def sent_side(self) -> int:
        """Messages that could not be sent to the remote (every reason but the two ``from``)."""
        return (
            self.queue_full
            + self.queue_bytes
            + self.link_closed
            + self.remote_withdrew
            + self.too_large
        )

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    def __add__(self, other: DropCounts) -> DropCounts:
        if other == _NO_DROPS:  # most links lose nothing (every refused handshake)
            return self
        return DropCounts(*(a + b for a, b in zip(_values(self), _values(other), strict=True)))


def _values(drops: DropCounts) -> tuple[int, ...]:
    # not dataclasses.astuple: it deep-copies each field, and the hub adds a link's drops to its
    # totals as every link ends (a third of a refused handshake's cost in link_ended, profiled)
    return tuple(getattr(drops, name) for name in DROP_REASONS)


DROP_REASONS: Final = tuple(f.name for f in dataclasses.fields(DropCounts))
_NO_DROPS: Final = DropCounts()


class LinkDrops:
    """A link's live drop counters; ``snapshot`` freezes them (adding the protocol's own)."""

    __slots__ = DROP_REASONS

    def __init__(self) -> None:
        for reason in DROP_REASONS:
            setattr(self, reason, 0)

    queue_full: int
    queue_bytes: int
    link_closed: int
    remote_withdrew: int
    too_large: int
    permission_denied: int
    arrived_closed: int

    def refuse(self, *, closing: bool, full: bool) -> None:
        """``enqueue`` refused a message: the link is closing, its queue is full by count, or
        (neither) by bytes."""
        if closing:
            self.link_closed += 1
        elif full:
            self.queue_full += 1
        else:
            self.queue_bytes += 1

    @property
    def sent_side(self) -> int:
        """What the link itself could not send (the protocol's drops are not in it)."""
        return (
            self.queue_full
            + self.queue_bytes
            + self.link_closed
            + self.remote_withdrew
            + self.too_large
        )

    def snapshot(self, withdrawn_in_protocol: int = 0, ignored_in_protocol: int = 0) -> DropCounts:
        return DropCounts(
            self.queue_full,
            self.queue_bytes,
            self.link_closed,
            self.remote_withdrew + withdrawn_in_protocol,
            self.too_large,
            self.permission_denied,
            self.arrived_closed + ignored_in_protocol,
        )


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """A snapshot of one link, as ``Grav.peers()`` returns it."""

    uuid: str
    endpoint: str
    role: str
    state: str
    transport: str
    remote_address: str
    initiator: bool
    withdrawn: bool
    messages_in: int
    messages_out: int
    dropped: int  # could not be sent: queue full, closed before sent, remote withdrawn, too large
    queued: int
    interests: tuple[str, ...]
    rtt: float | None  # seconds, the last answered ping
    connected_since: float | None  # time.time() when the handshake completed
    groups: tuple[tuple[str, str, int], ...] = ()  # (group, pattern, members) the remote reaches
    name: str = ""  # the application's name in its HELLO (``gravpy.connect(url, name=...)``)
    bytes_in: int = 0  # frames received, as encoded
    bytes_out: int = 0  # frames sent, as encoded
    drops: DropCounts = field(default_factory=DropCounts)  # ``dropped`` by reason, and more


def link_info(link: PeerLink) -> PeerInfo:
    """The snapshot of ``link`` (``PeerLink.info``)."""
    remote = link.proto.remote
    stats = link.proto.statistics()
    drops = link.drops.snapshot(stats.messages_dropped, stats.messages_ignored)
    return PeerInfo(
        uuid=link.uuid,
        endpoint=(remote.endpoint if remote else "") or link.dial_endpoint,
        role=remote.role if remote else "",
        state=link.proto.state.name.lower(),
        transport=link.link.transport,
        remote_address=link.link.remote_address,
        initiator=link.link.initiator,
        withdrawn=link.proto.remote_withdrawn,
        messages_in=stats.messages_in,
        messages_out=stats.messages_out,
        dropped=drops.sent_side,
        queued=link.queued,
        interests=link.interests,
        rtt=stats.rtt,
        connected_since=link.opened_at,
        groups=link.group_interests,
        name=remote.name if remote else "",
        bytes_in=stats.bytes_in,
        bytes_out=stats.bytes_out,
        drops=drops,
    )


@dataclass(frozen=True, slots=True)
class RoleTraffic:
    """What some links carried: messages and bytes each way, and what they lost by reason."""

    messages_in: int = 0
    messages_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    drops: DropCounts = field(default_factory=DropCounts)

    @classmethod
    def of(cls, info: PeerInfo) -> RoleTraffic:
        return cls(info.messages_in, info.messages_out, info.bytes_in, info.bytes_out, info.drops)

    @property
    def dropped(self) -> int:
        """Messages that could not be sent on these links (``PeerInfo.dropped`` summed)."""
        return self.drops.sent_side

    def __add__(self, other: RoleTraffic) -> RoleTraffic:
        return RoleTraffic(
            self.messages_in + other.messages_in,
            self.messages_out + other.messages_out,
            self.bytes_in + other.bytes_in,
            self.bytes_out + other.bytes_out,
            self.drops + other.drops,
        )

    def as_json(self) -> dict[str, object]:
        return {
            "received": self.messages_in,
            "sent": self.messages_out,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "dropped": self.dropped,
            "drops": self.drops.as_dict(),
        }


@dataclass(slots=True)
class LinkTotals:
    """What links that have ended carried, kept in the hub's totals (in all and by role)."""

    links: int = 0
    messages_in: int = 0
    messages_out: int = 0
    dropped: int = 0
    roles: dict[str, RoleTraffic] = field(default_factory=dict)

    def add(self, link: PeerLink) -> None:
        """``link`` ended: count it (if it was open) and what it carried, under its role."""
        remote = link.proto.remote
        stats = link.proto.statistics()
        traffic = RoleTraffic(
            stats.messages_in,
            stats.messages_out,
            stats.bytes_in,
            stats.bytes_out,
            link.drops.snapshot(stats.messages_dropped, stats.messages_ignored),
        )
        self.links += 1 if link.was_open else 0
        self.messages_in += traffic.messages_in
        self.messages_out += traffic.messages_out
        self.dropped += traffic.dropped
        role = (remote.role if remote else "") or ROLE_UNKNOWN
        self.roles[role] = self.roles.get(role, RoleTraffic()) + traffic

    def by_role(self, live: list[PeerInfo]) -> dict[str, RoleTraffic]:
        """Exact totals per role since start: the ended links' plus those of ``live``."""
        totals = dict(self.roles)
        for info in live:
            role = info.role or ROLE_UNKNOWN
            totals[role] = totals.get(role, RoleTraffic()) + RoleTraffic.of(info)
        return totals
