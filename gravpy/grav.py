"""Grav: one node of the bus. In-process on its own; a mesh node once a transport is given."""

from __future__ import annotations

import asyncio
import os
import uuid as uuidlib
from collections.abc import Callable, Sequence
from types import TracebackType

from gravpy._mailbox import check_timeout
from gravpy.bridge.port import BridgePort
from gravpy.buffer import MsgBuffer
from gravpy.bus import Bus, BusStatistics
from gravpy.consumer import check_overflow
from gravpy.errors import PodDisconnected, UsageError, WaitTimeout
from gravpy.identity import load_credentials
from gravpy.mesh import Hub, HubConfig, PeerInfo
from gravpy.mesh.permissions import Authority
from gravpy.plugins import Discovery, Transport
from gravpy.pod import Overflow, Pod
from gravpy.proto import ANY_MESH, ROLE_LEAF, ROLE_PEER, NodeInfo
from gravpy.proto.handshake import Credentials, check_app_name, check_mesh_key
from gravpy.timings import Timings
from gravpy.tls import SslOption, apply_tls

__all__ = ["Grav"]


class Grav:
    """A message bus node. ``async with Grav() as g: pod = g.connect()``.

    In-process options: ``buffer_size`` is the replay buffer (what a ``connect_with_replay`` pod
    first receives; ``buffer`` gives one ready-made instead, such as gravd's durable one); ``inbox_limit`` and ``overflow`` bound each pod's inbox and say what a full one
    does; ``failure_limit`` is how many pending handler failures disconnect a pod (Grav's 64).

    Mesh options: ``transport`` (one or several) listens for and dials other nodes; ``discovery``
    plugins report endpoints to dial; ``belongs_to`` names the mesh (``"*"`` joins any);
    ``mesh_key`` (16+ bytes, the same on every node) makes each link prove it holds the key.
    ``role="leaf"`` makes an app that attaches to one node instead of joining the mesh (it does not
    listen); ``attach_to`` is an endpoint that ``start`` links to before it returns (raising if it
    cannot within ``attach_timeout``). ``gravpy.connect(url)`` builds such a leaf. ``ssl`` (an
    ``ssl.SSLContext`` or a :class:`gravpy.tls.TlsContexts`) is given to every transport: a
    server context to listen with TLS, a client context for the TLS endpoints it dials.
    ``bridges`` join this node's mesh to other meshes (``gravpy.bridge.nats.NatsBridge(url)``).

    Credentials: ``identity_file`` (a key written by ``gravctl keygen``) signs each handshake, so
    a node with an auth file knows which identity this is; ``token`` is the simpler shared secret
    an auth file may list instead. ``authority`` (``gravpy.mesh.permissions.parse_authority`` of an
    auth file) makes this node accept only the identities it lists.

    Monitoring: ``name`` is what this application calls itself (printable, at most 64
    characters); it travels in the handshake, so the node it attaches to lists its link under that
    name (``gravctl peers``, ``/v1/node``). ``timings=True`` keeps histograms of request round
    trips and handler times (``timings``, ``gravpy.timings``); off by default, it costs nothing.
    """

    def __init__(
        self,
        *,
        buffer_size: int = 128,
        inbox_limit: int = 10_000,
        overflow: Overflow | str = Overflow.DROP_NEWEST,
        failure_limit: int = 64,
        transport: Transport | Sequence[Transport] | None = None,
        discovery: Sequence[Discovery] = (),
        belongs_to: str = ANY_MESH,
        mesh_key: bytes | None = None,
        role: str = ROLE_PEER,
        hub_config: HubConfig | None = None,
        node_uuid: str | None = None,
        attach_to: str | None = None,
        attach_timeout: float | None = 5.0,
        ssl: SslOption = None,
        buffer: MsgBuffer | None = None,
        bridges: Sequence[BridgePort] = (),
        identity_file: str | os.PathLike[str] | None = None,
        token: str = "",
        authority: Authority | None = None,
        name: str = "",
        timings: bool = False,
    ) -> None:
        attach_seconds = check_timeout(attach_timeout, "attach_timeout")
        self.node_uuid = node_uuid or str(uuidlib.uuid4())
        self.name = check_app_name(name)
        self.bus = Bus(
            buffer_size=buffer_size,
            inbox_limit=inbox_limit,
            overflow=check_overflow(overflow),
            failure_limit=failure_limit,
            buffer=buffer,
            timings=Timings() if timings else None,
        )
        self.timings = self.bus.timings
        transports = [] if transport is None else _as_list(transport)
        for each in transports:
            apply_tls(each, ssl)  # Grav(ssl=...) reaches every transport it is given
        if role not in (ROLE_PEER, ROLE_LEAF):
            raise UsageError(f"role must be {ROLE_PEER!r} or {ROLE_LEAF!r}, not {role!r}")
        _check_mesh_options(mesh_key, hub_config)
        self.role = role
        self.hub: Hub | None = None
        if transports or discovery:
            if not transports:
                raise UsageError("discovery needs a transport to dial what it finds")
            self.hub = Hub(
                self.bus,
                NodeInfo(self.node_uuid, role=role, belongs_to=belongs_to, name=name),
                transports=transports,
                discovery=list(discovery),
                mesh_key=mesh_key,
                config=hub_config or HubConfig(),
                listen=role == ROLE_PEER,
                credentials=_credentials(identity_file, token),
                authority=authority,
            )
        elif mesh_key is not None or belongs_to != ANY_MESH:
            raise UsageError("belongs_to and mesh_key need a transport")
        if bridges and (self.hub is None or role != ROLE_PEER):
            raise UsageError("bridges need a peer node with a transport")
        self.bridges = list(bridges)
        for bridge in self.bridges:
            assert self.hub is not None
            self.hub.attach_bridge(bridge)
        if attach_to is not None and self.hub is None:
            raise UsageError("attach_to needs a transport that can dial it")
        self._attach_to = attach_to
        self._attach_timeout = attach_seconds
        self._started = False
        self._stopped = False  # (``wait_for`` ends once set: the hub wakes it as it stops)

    async def start(self) -> None:
        """Start listening, discovery and dialling (``async with`` calls this)."""
        if self.bus.closed:
            raise UsageError("this Grav was stopped; make a new one")
        if self._started:
            return
        self._started = True
        if self.hub is not None:
            try:
                await self.hub.start()
                for bridge in self.bridges:
                    await bridge.start()
                if self._attach_to is not None:
                    await self._attach(self._attach_to)
            except BaseException:
                await self.stop()
                raise

    async def _attach(self, endpoint: str) -> None:
        assert self.hub is not None
        try:
            async with asyncio.timeout(self._attach_timeout):
                await self.hub.connect_endpoint(endpoint)
        except TimeoutError as exc:
            raise WaitTimeout(
                f"could not attach to {endpoint} within {self._attach_timeout} s"
            ) from exc

    async def stop(self) -> None:
        """Withdraw from the mesh, drain (bounded), close every link, pod and task of the node;
        every ``wait_for`` still waiting ends (``PodDisconnected``)."""
        self._stopped = True
        for bridge in self.bridges:
            await bridge.stop()
        if self.hub is not None:
            await self.hub.stop()  # (its last change wakes every ``wait_for``)
        await self.bus.close()

    async def __aenter__(self) -> Grav:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def connect(
        self, *, inbox_limit: int | None = None, overflow: Overflow | str | None = None
    ) -> Pod:
        """A new pod on this node; ``inbox_limit`` and ``overflow`` (an ``Overflow`` or its value)
        default to the node's."""
        return self.bus.connect(inbox_limit=inbox_limit, overflow=_policy(overflow))

    def connect_with_replay(
        self, *, inbox_limit: int | None = None, overflow: Overflow | str | None = None
    ) -> Pod:
        """A new pod that first receives the buffered messages when it starts receiving."""
        return self.bus.connect(replay=True, inbox_limit=inbox_limit, overflow=_policy(overflow))

    async def connect_endpoint(self, endpoint: str) -> PeerInfo:
        """Link to the node at ``endpoint`` now, and keep the link (redialled if it drops).

        Raises ``HandshakeRejectedError`` (with the reason) if that node refuses the link, or
        ``TransportError`` if it cannot be reached.
        """
        return await self._hub().connect_endpoint(endpoint)

    def peers(self) -> list[PeerInfo]:
        """A snapshot of the linked nodes (and attached leaves)."""
        return [] if self.hub is None else self.hub.peer_infos()

    async def wait_for(
        self, predicate: Callable[[list[PeerInfo]], bool], timeout: float | None = None
    ) -> list[PeerInfo]:
        """Wait until ``predicate(self.peers())`` is true (checked at every link or interest
        change) and return that snapshot. Raises ``WaitTimeout`` after ``timeout`` seconds,
        ``PodDisconnected`` if the node stops first, ``UsageError`` if ``predicate`` is not
        callable.

        ``await g.wait_for(lambda peers: any(p.uuid == other for p in peers))``
        """
        if not callable(predicate):
            raise UsageError(f"predicate must be callable, got {predicate!r}")
        deadline = asyncio.timeout(check_timeout(timeout))
        hub = self._hub()
        try:
            async with deadline:
                while not predicate(peers := self.peers()):
                    if self._stopped:
                        raise PodDisconnected("the node stopped")
                    await hub.wait_changed()
        except TimeoutError:
            if deadline.expired():
                raise WaitTimeout(
                    f"the mesh did not reach the awaited state within {timeout} s"
                ) from None
            raise
        return peers

    def endpoints(self) -> list[str]:
        """The endpoints other nodes can dial to reach this one."""
        return [] if self.hub is None or self.role == ROLE_LEAF else self.hub.endpoints()

    @property
    def buffer(self) -> MsgBuffer:
        """The replay buffer (read-only use)."""
        return self.bus.buffer

    def statistics(self) -> BusStatistics:
        return self.bus.statistics()

    def _hub(self) -> Hub:
        if self.hub is None:
            raise UsageError("this Grav has no transport; pass transport=... to link to others")
        return self.hub


def _credentials(identity_file: str | os.PathLike[str] | None, token: str) -> Credentials | None:
    if identity_file is None:
        return Credentials(token=token) if token else None
    return load_credentials(identity_file, token)


def _policy(overflow: object) -> Overflow | None:
    return None if overflow is None else check_overflow(overflow)


def _as_list(transport: Transport | Sequence[Transport]) -> list[Transport]:
    if isinstance(transport, Sequence):
        return list(transport)
    return [transport]


def _check_mesh_options(mesh_key: object, hub_config: object) -> None:
    """``UsageError`` at construction for what the first link would otherwise refuse (a short
    key) or fail on (a config of another type)."""
    check_mesh_key(mesh_key)
    if hub_config is not None and not isinstance(hub_config, HubConfig):
        raise UsageError(f"hub_config must be a HubConfig, got {type(hub_config).__name__}")
