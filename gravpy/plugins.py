"""The plugin interfaces (links, transports, discovery) and the entry-point registry.

Theory of operation
-------------------

A **transport** moves opaque frames between nodes and nothing else: the handshake, auth, liveness
and routing happen once, in the core, for every transport. It listens (``start``), tells what
addresses peers can dial (``endpoints``), dials (``dial``) and stops (``stop``). Each connection it
makes or accepts is a **link**: one full-duplex channel of whole frames.

A link accepted by a transport is handed to the ``on_link`` coroutine given to ``start``. The link
lives exactly as long as that coroutine runs; the transport closes it when the coroutine returns,
and ``stop()`` closes every accepted link, so ``on_link`` must return soon after ``recv()`` raises
:class:`~gravpy.errors.LinkClosedError`. A dialled link belongs to whoever called ``dial``, who
closes it.

A **discovery** plugin reports endpoints of other nodes; the hub decides whether and when to dial
them (and redials with :mod:`gravpy.backoff`).

A transport may state a ``preference`` (an int, lower is preferred; the built-ins: tcp 10,
websocket 20, http 30) so that a node which can reach another over several endpoints dials the
fastest transport both speak; without one a transport ranks after the built-ins (100).
:func:`transport_preference` reads it.

Plugins register under the entry-point groups ``gravpy.transports`` and ``gravpy.discovery``; the
built-ins are also found by module path, so they work before the package is installed.

Errors: a link raises :class:`~gravpy.errors.LinkClosedError` once it is closed (the message says
who closed it and why); a transport raises :class:`~gravpy.errors.TransportError`, with the
library's exception as ``__cause__``, when it cannot listen or dial. Nothing foreign leaks out.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Final, Protocol

from gravpy.errors import UsageError

__all__ = [
    "DISCOVERY_GROUP",
    "TRANSPORT_GROUP",
    "Discovery",
    "DiscoveryContext",
    "DiscoveryFactory",
    "Link",
    "LinkHandler",
    "PeerReport",
    "Transport",
    "TransportFactory",
    "available_discovery",
    "available_transports",
    "load_discovery",
    "load_transport",
    "transport_preference",
]

TRANSPORT_GROUP: Final = "gravpy.transports"
DISCOVERY_GROUP: Final = "gravpy.discovery"

_BUILTIN_TRANSPORTS: Final[Mapping[str, str]] = {
    "websocket": "transports.websocket:WebSocketTransport",
    "http": "transports.http:HttpTransport",
    "tcp": "transports.tcp:TcpTransport",
}
_BUILTIN_DISCOVERY: Final[Mapping[str, str]] = {
    "static": "discovery.static:StaticDiscovery",
    "mdns": "discovery.mdns:MdnsDiscovery",
}


class Link(Protocol):
    """One connected, message-oriented, full-duplex channel of opaque frames.

    ``send`` may be called from several tasks at once; ``recv`` from one task at a time.

    A link may also offer ``write_now(frame: bytes) -> bool``: write one frame at once, without
    waiting, or return False and write nothing (closed, or its write buffer is full). The core then
    sends a lone message without a hop through its writer task (``gravpy.mesh.peer_link``).

    And ``take_frames(sink: Callable[[bytes], bool] | None) -> None``: while ``recv`` waits with
    nothing queued, hand each frame that arrives to ``sink`` from the transport's own callback
    instead; when ``sink`` returns False, make the waiting ``recv`` return ``b""`` once, ahead of
    any frame, and queue frames for ``recv`` until it waits again (None: stop). The core then
    takes a frame without waking its reader task.
    """

    @property
    def transport(self) -> str:
        """The name of the transport that made the link, e.g. ``"websocket"``."""
        ...

    @property
    def remote_address(self) -> str:
        """The other end, for logs, e.g. ``"127.0.0.1:53122"``."""
        ...

    @property
    def initiator(self) -> bool:
        """True if this side dialled."""
        ...

    async def send(self, frame: bytes) -> None:
        """Send one whole frame.

        Waits while the transport's write buffer is full (backpressure). Raises
        :class:`~gravpy.errors.LinkClosedError` once the link is closed.
        """
        ...

    async def recv(self) -> bytes:
        """Return the next whole frame.

        Frames the peer sent before closing are returned first; then this raises
        :class:`~gravpy.errors.LinkClosedError`, whose message says who closed the link and why.
        """
        ...

    async def close(self, reason: str = "") -> None:
        """Close the link, telling the peer ``reason``; idempotent."""
        ...


LinkHandler = Callable[[Link], Awaitable[None]]
"""Called once per accepted link; the link lives while it runs and is closed when it returns."""


class Transport(Protocol):
    """Listens for and dials links. Construct it with its configuration, then ``start`` it."""

    @property
    def name(self) -> str:
        """The plugin name, e.g. ``"websocket"``."""
        ...

    @property
    def schemes(self) -> tuple[str, ...]:
        """The URL schemes ``dial`` accepts, e.g. ``("ws", "wss")``."""
        ...

    @property
    def max_frame_bytes(self) -> int:
        """The largest frame this transport accepts from a peer; larger ones close the link.

        The core keeps the frames it sends at or below this size (batching messages up to it).
        """
        ...

    async def start(self, on_link: LinkHandler) -> None:
        """Bind and listen; return once listening. Raises TransportError if it cannot."""
        ...

    def endpoints(self) -> list[str]:
        """URLs peers can dial, with the real bound port; only valid after ``start``."""
        ...

    async def dial(self, url: str, *, timeout: float) -> Link:
        """Connect to ``url`` within ``timeout`` seconds; raises TransportError on failure."""
        ...

    async def stop(self) -> None:
        """Stop listening, close every accepted link, return once their handlers returned."""
        ...


@dataclass(frozen=True, slots=True)
class PeerReport:
    """What discovery saw: an endpoint to dial and, when known, the node there."""

    endpoint: str
    node_uuid: str | None = None
    source: str = ""
    gone: bool = False
    """True when the node left (its record was withdrawn): the hub stops redialling it."""


@dataclass(frozen=True, slots=True)
class DiscoveryContext:
    """What a discovery plugin may advertise about this node."""

    node_uuid: str
    belongs_to: str
    endpoints: tuple[str, ...]
    protocol_version: int


class Discovery(Protocol):
    """Finds other nodes and reports their endpoints."""

    @property
    def name(self) -> str:
        """The plugin name, e.g. ``"static"``."""
        ...

    async def run(self, ctx: DiscoveryContext, report: Callable[[PeerReport], None]) -> None:
        """Run until cancelled, calling ``report`` for each endpoint found (again on change).

        Withdraws any advertisement of this node on exit. ``report`` must not block.
        """
        ...


TransportFactory = Callable[..., Transport]
DiscoveryFactory = Callable[..., Discovery]


DEFAULT_PREFERENCE: Final = 100


def transport_preference(transport: object) -> int:
    """``transport.preference`` (lower is preferred), or 100 when it states none."""
    value = getattr(transport, "preference", DEFAULT_PREFERENCE)
    return value if isinstance(value, int) else DEFAULT_PREFERENCE


def load_transport(name: str) -> TransportFactory:
    """Return the transport class registered as ``name``; raises UsageError if there is none."""
    factory: TransportFactory = _load("transport", TRANSPORT_GROUP, _BUILTIN_TRANSPORTS, name)
    return factory


def load_discovery(name: str) -> DiscoveryFactory:
    """Return the discovery class registered as ``name``; raises UsageError if there is none."""
    factory: DiscoveryFactory = _load("discovery", DISCOVERY_GROUP, _BUILTIN_DISCOVERY, name)
    return factory


def available_transports() -> list[str]:
    """The names of every known transport plugin, sorted."""
    return _known(TRANSPORT_GROUP, _BUILTIN_TRANSPORTS)


def available_discovery() -> list[str]:
    """The names of every known discovery plugin, sorted."""
    return _known(DISCOVERY_GROUP, _BUILTIN_DISCOVERY)


def _known(group: str, builtins: Mapping[str, str]) -> list[str]:
    return sorted({ep.name for ep in entry_points(group=group)} | set(builtins))


def _load(kind: str, group: str, builtins: Mapping[str, str], name: str) -> Any:
    """Load ``name`` from the entry points of ``group``, else from the built-in module paths."""
    found = [ep for ep in entry_points(group=group) if ep.name == name]
    target = found[0].value if found else builtins.get(name)
    if target is None:
        known = ", ".join(_known(group, builtins)) or "none"
        raise UsageError(f"unknown {kind} plugin {name!r}; known {kind} plugins: {known}")
    try:
        obj = found[0].load() if found else _load_by_path(target)
    except (ImportError, AttributeError) as exc:
        raise UsageError(f"{kind} plugin {name!r} ({target}) failed to load: {exc}") from exc
    if not callable(obj):
        raise UsageError(f"{kind} plugin {name!r} ({target}) is not a class or factory")
    return obj


def _load_by_path(target: str) -> Any:
    """Import ``"package.module:attr"``."""
    module_name, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj
