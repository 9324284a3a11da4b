"""The typed ports between the layers of one node: what a pod needs of its bus, what the bus
needs of the mesh.

Each layer reaches the one below only through these Protocols, never by setting attributes on it:
a ``Pod`` holds a ``PodHost`` (``gravpy.bus.Bus`` is the one host), the bus holds a ``MeshPort``
(``gravpy.mesh.traffic.Traffic`` implements it), a ``PeerLink`` tells its ``LinkOwner`` (the hub)
what arrived, asks its ``Backpressure`` (the bus's ``Congestion``) whether local pods have room, and settles its
``DialWaiter`` (the wanted endpoint it was dialled for). docs/architecture.md draws the layers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from gravpy._mailbox import Mailbox
from gravpy.buffer import MsgBuffer
from gravpy.message import Message
from gravpy.receipt import MsgReceipt
from gravpy.timings import Timings

if TYPE_CHECKING:
    from gravpy.congestion import Congestion, PodHold
    from gravpy.mesh.peer_link import PeerLink
    from gravpy.pod import Pod
    from gravpy.proto import Event

__all__ = ["Backpressure", "DialWaiter", "LinkOwner", "MeshPort", "PodHost"]


class PodHost(Protocol):
    """What a pod needs from the bus it hangs from (``gravpy.bus.Bus`` is the one host)."""

    buffer: MsgBuffer
    failure_limit: int
    max_attempts: int
    timings: Timings | None  # the node's request and handler histograms, if it keeps them
    congestion: Congestion  # which sinks are congested; publishers wait through it

    def send(self, msg: Message, sender: Pod) -> MsgReceipt: ...
    def routes_changed(self) -> None: ...
    def replay_into(self, pod: Pod) -> None: ...
    def check_subscribable(self, pattern: str) -> None: ...
    def detach(self, pod: Pod) -> None: ...
    def call_soon(self, callback: Callable[[], None]) -> None: ...
    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]: ...
    def register_reply_waiter(self, uuid: str, pod: Pod, msg_type: str = "") -> Mailbox: ...
    def unregister_reply_waiter(self, uuid: str, mailbox: Mailbox) -> None: ...


class MeshPort(Protocol):
    """How the bus speaks to the mesh (``gravpy.mesh.Hub``): the one connection between them."""

    def check_sendable(self, msg: Message) -> None:
        """Raise ``UsageError`` for a message no link could carry (before any delivery)."""

    def sequence(self) -> int:
        """The next origin sequence number for a message entering the mesh here (0: none)."""

    def forward_local(
        self, msg: Message, local: Mapping[str, int], seq: int = 0
    ) -> tuple[int, tuple[str, ...]]:
        """A local pod sent ``msg`` (numbered ``seq``): forward it; return how many links took
        it, and which groups it places here (``local``: the members each local group has for it)."""

    def wanted(self, msg: Message) -> bool:
        """True if a link wants ``msg``: asked when no link took it (each refused it, counted)."""

    def asked_elsewhere(self, request_uuid: str) -> bool:
        """True if the request came from another node (its replies travel back there)."""

    def replays_from_node(self, pod: Pod) -> bool:
        """True if the node this leaf is attached to will replay into ``pod`` (gravpy.replay)."""

    def interests_changed(self) -> None:
        """The types local pods want changed: tell the other nodes."""

    def check_subscribable(self, pattern: str) -> None:
        """Raise ``PermissionDenied`` if this node may receive no type matching ``pattern``."""

    def cut_off(self) -> str:
        """Why no other node can be reached now (an app whose link to its node is down), or
        "": the words a ``NoResponders`` adds, so it does not send its reader to look for a
        missing service."""

    def reply_wait_started(self, request_uuid: str, msg_type: str) -> Exception | None:
        """A local pod started waiting for replies to ``request_uuid`` (of type ``msg_type``);
        returns why no link can carry a reply now (an app with no open link to its node), or
        None."""


class LinkOwner(Protocol):
    """What a link tells the one who runs it (the hub)."""

    def link_messages(self, link: PeerLink, messages: list[Message], seqs: list[int]) -> int:
        """Messages arrived (``seqs``: their origin numbers, 0 for none): deliver and forward
        them; return how many were taken (in order)."""

    def link_events(self, link: PeerLink, events: list[Event]) -> None:
        """Anything else the protocol reported: handshake steps, interests, peers, withdraw, end."""

    def link_ended(self, link: PeerLink) -> None:
        """The link is over (called once, before its transport closes)."""


class Backpressure(Protocol):
    """The bus's congestion signals, as a link sees them (``gravpy.congestion.Congestion``)."""

    @property
    def pods_congested(self) -> bool: ...
    def mark_congested(self, sink: object) -> None: ...
    def relieve(self, sink: object) -> None: ...
    async def wait_pods(self, hold: PodHold) -> None: ...


class DialWaiter(Protocol):
    """Whoever dialled this link and waits for its handshake (``gravpy.mesh.dialer``)."""

    def opened(self, link: PeerLink) -> None: ...
    def failed(self, link: PeerLink) -> None: ...
