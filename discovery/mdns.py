"""mDNS discovery: advertise this node on the LAN, browse for the others, report what is found.

Theory of operation
-------------------

``run()`` opens one :class:`zeroconf.asyncio.AsyncZeroconf` on the configured interfaces (all of
them by default), starts a browser for the service type (``_grav._tcp.local.`` by default), then
registers one DNS-SD service per endpoint of this node (``DiscoveryContext.endpoints``). Everything
goes through zeroconf's asyncio API on the running loop; nothing blocks it.

Each record the browser sees (added, or updated with a new address, port or TXT) is read from
zeroconf's cache, or asked for when the cache does not hold all of it yet, and turned into a
:class:`~gravpy.plugins.PeerReport`. A record is reported when it first resolves and again whenever
what it resolves to changes. It is skipped (logged at debug as ``mdns_record_skipped``) when it is
this node's own, belongs to another mesh, speaks another protocol version, or is malformed (the
rules, and what the TXT record holds, are in ``discovery.mdns_record``). A removed
record (its owner said goodbye, or its TTL ran out) is logged as ``mdns_peer_removed`` and reported
with ``gone=True``, so the hub stops redialling it (an open link stays until it closes; ping/pong
finds a dead one). So is the endpoint a record resolved to before, when the record changes to
another endpoint or to one that is skipped: the hub dials where the record points now, not also
where it pointed once.

When cancelled, ``run()`` withdraws every record it registered (goodbye packets, so the other
nodes' browsers see them go), closes the ``AsyncZeroconf`` and re-raises ``CancelledError``. That
cleanup is bounded and finishes even if the task is cancelled again meanwhile.

Records
-------

Each endpoint of this node is one DNS-SD service, its TXT record written by ``advert_for`` and
others' read back by ``read_record`` (both pure, in ``discovery.mdns_record``). The instance name
is the node uuid (a suffix ``-2``, ``-3``... for further endpoints) unless ``name`` is given; a
uuid-named instance is unique by construction and skips the one-second probe, a chosen name is
probed and renamed on conflict.

Errors: zeroconf and socket errors are translated in one place (:func:`_mdns_errors`) into
:class:`~gravpy.errors.DiscoveryError`, with the original as ``__cause__``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import socket
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, Final

from zeroconf import Error as ZeroconfError
from zeroconf import InterfaceChoice, IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from discovery.mdns_record import (
    MAX_INSTANCE_BYTES,
    Advert,
    Skip,
    advert_for,
    instance_label,
    is_ip,
    read_record,
)
from gravpy import _log as logs
from gravpy.errors import DiscoveryError, UsageError
from gravpy.plugins import DiscoveryContext, PeerReport

__all__ = ["DEFAULT_SERVICE_TYPE", "MdnsDiscovery", "Skip", "advert_for", "read_record"]

_log = logs.get_logger("gravpy.discovery.mdns")

DEFAULT_SERVICE_TYPE: Final = "_grav._tcp.local."
_RESOLVE_TIMEOUT_MS: Final = 3000  # how long to ask for a record the cache does not hold
_CLOSE_TIMEOUT: Final = 2.0  # the goodbyes take ~0.25 s; bound them anyway
# RFC 6335 service names: 1..15 letters, digits and single inner hyphens, at least one letter
_SERVICE_TYPE: Final = re.compile(
    r"_(?=[A-Za-z0-9-]{1,15}\._)(?=[0-9-]*[A-Za-z])[A-Za-z0-9](?:-?[A-Za-z0-9])*\._(?:tcp|udp)\.local\."
)


@contextmanager
def _mdns_errors(action: str) -> Iterator[None]:
    """Turn zeroconf and socket exceptions into DiscoveryError. The one place."""
    try:
        yield
    except (ZeroconfError, OSError) as exc:
        detail = str(exc) or type(exc).__name__
        raise DiscoveryError(f"mDNS cannot {action}: {detail}") from exc


# -- the plugin ----------------------------------------------------------------------------------


class MdnsDiscovery:
    """Advertises this node over mDNS/DNS-SD and reports the other nodes it browses.

    ``interfaces`` lists the IP addresses of the interfaces to use (all interfaces when None;
    ``["127.0.0.1"]`` keeps mDNS on loopback, as tests do). ``ip_version`` is zeroconf's
    :class:`~zeroconf.IPVersion` (by default derived from ``interfaces``, IPv4 for all).
    ``service_type`` is the DNS-SD type; ``name`` the instance name (the node uuid by default).
    Arguments are checked here: a bad one raises UsageError.
    """

    name: Final = "mdns"

    def __init__(
        self,
        *,
        interfaces: list[str] | None = None,
        service_type: str = DEFAULT_SERVICE_TYPE,
        ip_version: IPVersion | None = None,
        name: str | None = None,
    ) -> None:
        if interfaces is not None:
            if isinstance(interfaces, str) or not interfaces:
                raise UsageError("interfaces must be a non-empty list of IP addresses, or None")
            for address in interfaces:
                if not isinstance(address, str) or not is_ip(address):
                    raise UsageError(f"interfaces: {address!r} is not an IP address")
        if not isinstance(service_type, str) or not _SERVICE_TYPE.fullmatch(service_type):
            raise UsageError(
                f"bad mDNS service type {service_type!r}: want '_name._tcp.local.' (name: 1..15 "
                "letters, digits, inner hyphens)"
            )
        if ip_version is not None and not isinstance(ip_version, IPVersion):
            raise UsageError(f"ip_version must be a zeroconf.IPVersion, not {ip_version!r}")
        if name is not None and (
            not isinstance(name, str)
            or not name
            or "." in name
            or len(name.encode()) > MAX_INSTANCE_BYTES
        ):
            raise UsageError(f"bad mDNS instance name {name!r}: 1..59 bytes, no dots")
        self.interfaces = None if interfaces is None else list(interfaces)
        self.service_type = service_type
        self.ip_version = ip_version
        self.instance_name = name

    async def run(self, ctx: DiscoveryContext, report: Callable[[PeerReport], None]) -> None:
        """Advertise, browse and report until cancelled; then withdraw the records and close.

        Raises DiscoveryError (a TransportError) when mDNS cannot start or advertise on the chosen interfaces.
        """
        await _Session(self, ctx, report).run()

    def __repr__(self) -> str:
        return f"MdnsDiscovery(interfaces={self.interfaces!r}, service_type={self.service_type!r})"


class _Session:
    """One ``run()``: the AsyncZeroconf, the browser, our records and what was reported."""

    def __init__(
        self,
        config: MdnsDiscovery,
        ctx: DiscoveryContext,
        report: Callable[[PeerReport], None],
    ) -> None:
        self.config = config
        self.ctx = ctx
        self.report = report
        self.log = _log.bind(node=ctx.node_uuid, discovery=config.name)
        self.aiozc: AsyncZeroconf | None = None
        self.browser: AsyncServiceBrowser | None = None
        self.registered: list[AsyncServiceInfo] = []
        self.announcing: list[asyncio.Future[Any]] = []
        self.resolving: dict[str, asyncio.Task[None]] = {}
        self.reported: dict[str, PeerReport] = {}

    async def run(self) -> None:
        try:
            with _mdns_errors("listen on " + str(self.config.interfaces or "all interfaces")):
                _check_local_addresses(self.config.interfaces or [])
                self.aiozc = AsyncZeroconf(
                    interfaces=self.config.interfaces or InterfaceChoice.All,
                    ip_version=self.config.ip_version,
                )
            with _mdns_errors("browse " + self.config.service_type):
                self.browser = AsyncServiceBrowser(
                    self.aiozc.zeroconf, self.config.service_type, handlers=[self._on_change]
                )
            await self._advertise()
            await asyncio.get_running_loop().create_future()  # only cancellation ends this
        finally:
            await _run_to_end(self._close())

    async def _advertise(self) -> None:
        base = self.config.instance_name or instance_label(self.ctx.node_uuid)
        probe = base != self.ctx.node_uuid  # a uuid is unique by construction: no probe needed
        infos: list[AsyncServiceInfo] = []
        for i, endpoint in enumerate(self.ctx.endpoints):
            advert = advert_for(endpoint, self.ctx, base if i == 0 else f"{base}-{i + 1}")
            if isinstance(advert, Skip):
                self.log.warning("mdns_endpoint_skipped", endpoint=endpoint, detail=advert.detail)
                continue
            infos.append(await self._service_info(advert))
        outcomes = await asyncio.gather(
            *(self._register(info, probe=probe) for info in infos), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        if self.announcing:
            await asyncio.gather(*self.announcing)
        self.announcing.clear()
        self.log.info(
            "mdns_advertised",
            service_type=self.config.service_type,
            instances=[info.name for info in self.registered],
            interfaces=self.config.interfaces or "all",
        )

    async def _service_info(self, advert: Advert) -> AsyncServiceInfo:
        addresses = [advert.address] if advert.address else await self._resolve_host(advert.host)
        service_type = self.config.service_type
        return AsyncServiceInfo(
            service_type,
            f"{advert.instance}.{service_type}",
            port=advert.port,
            properties=dict(advert.properties),
            server=f"{advert.instance}.local.",
            parsed_addresses=addresses,
        )

    async def _resolve_host(self, host: str) -> list[str]:
        """The addresses of ``host`` (an endpoint that names a host), looked up off the loop."""
        loop = asyncio.get_running_loop()
        with _mdns_errors(f"advertise {host!r}: name lookup failed"):
            found = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        return list(dict.fromkeys(str(sockaddr[0]) for *_, sockaddr in found))

    async def _register(self, info: AsyncServiceInfo, *, probe: bool) -> None:
        assert self.aiozc is not None
        with _mdns_errors(f"advertise {info.name}"):
            announced = await self.aiozc.async_register_service(
                info, allow_name_change=probe, cooperating_responders=not probe
            )
        self.registered.append(info)
        self.announcing.append(asyncio.ensure_future(announced))

    # -- browsing --------------------------------------------------------------------------------

    def _on_change(
        self,
        zeroconf: Zeroconf,
        service_type: str,
        name: str,
        state_change: ServiceStateChange,
    ) -> None:
        """Called by the browser, on the loop, for each added, updated or removed record."""
        pending = self.resolving.pop(name, None)
        if pending is not None:
            pending.cancel()  # what it would resolve is stale now
        if state_change is ServiceStateChange.Removed:
            self._removed(name)
            return
        try:
            info = AsyncServiceInfo(service_type, name)
        except ZeroconfError as exc:
            self.log.debug("mdns_record_skipped", record=name, reason="malformed", detail=repr(exc))
            return
        if info.load_from_cache(zeroconf):
            self._resolved(name, info)
        else:
            task = asyncio.ensure_future(self._resolve(zeroconf, name, info))
            self.resolving[name] = task
            task.add_done_callback(lambda t: self._resolve_done(name, t))

    async def _resolve(self, zc: Zeroconf, name: str, info: AsyncServiceInfo) -> None:
        try:
            complete = await info.async_request(zc, _RESOLVE_TIMEOUT_MS)
        except (ZeroconfError, OSError) as exc:  # the instance is closing; nothing to report
            self.log.debug("mdns_resolve_failed", record=name, error=repr(exc))
            return
        if complete:
            self._resolved(name, info)
        else:
            self.log.debug("mdns_resolve_failed", record=name, error="no answer")

    def _resolve_done(self, name: str, task: asyncio.Task[None]) -> None:
        if self.resolving.get(name) is task:
            del self.resolving[name]
        if not task.cancelled() and (exc := task.exception()) is not None:
            self.log.error("mdns_resolve_crashed", record=name, error=repr(exc), exc_info=exc)

    def _resolved(self, name: str, info: AsyncServiceInfo) -> None:
        found = read_record(
            info.decoded_properties,
            info.parsed_scoped_addresses(),
            info.port,
            self.ctx,
            self.config.name,
        )
        if isinstance(found, Skip):
            self.log.debug(
                "mdns_record_skipped", record=name, reason=found.reason, detail=found.detail
            )
            self._removed(name)  # what it pointed to before, if anything, is not dialled now
            return
        before = self.reported.get(name)
        if before == found:
            return
        self.reported[name] = found
        if before is not None and before.endpoint != found.endpoint:
            self._withdraw(before)  # the record moved: stop dialling where it was
        event = "mdns_peer_found" if before is None else "mdns_peer_changed"
        self.log.info(event, peer=found.node_uuid, endpoint=found.endpoint, record=name)
        self.report(found)

    def _removed(self, name: str) -> None:
        gone = self.reported.pop(name, None)
        if gone is not None:
            self.log.info(
                "mdns_peer_removed", peer=gone.node_uuid, endpoint=gone.endpoint, record=name
            )
            self._withdraw(gone)

    def _withdraw(self, gone: PeerReport) -> None:
        """Report ``gone``'s endpoint gone, unless another record still points there."""
        if all(other.endpoint != gone.endpoint for other in self.reported.values()):
            self.report(dataclasses.replace(gone, gone=True))

    # -- shutdown --------------------------------------------------------------------------------

    async def _close(self) -> None:
        """Stop browsing, withdraw our records (goodbyes), close zeroconf. Bounded."""
        aiozc = self.aiozc
        if aiozc is None:
            return
        if self.browser is not None:
            await self.browser.async_cancel()
        tasks = [*self.resolving.values(), *self.announcing]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT):
                goodbyes = [await aiozc.async_unregister_service(i) for i in self.registered]
                await asyncio.gather(*goodbyes)
        except (ZeroconfError, OSError, TimeoutError) as exc:
            self.log.warning("mdns_withdraw_failed", error=repr(exc))
        finally:
            await aiozc.async_close()
        self.log.info("mdns_stopped", withdrawn=[info.name for info in self.registered])


def _check_local_addresses(addresses: list[str]) -> None:
    """Raise OSError unless every address is one of this machine's interfaces (nothing is sent).

    Checked before zeroconf is built, the way it uses them: when zeroconf fails on an interface
    it leaks the listen socket it already opened (python-zeroconf 0.154).
    """
    for address in addresses:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((address, 0))
            if family == socket.AF_INET:
                packed = socket.inet_aton(address)
                probe.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, packed)


async def _run_to_end(cleanup: Coroutine[Any, Any, None]) -> None:
    """Await ``cleanup`` to its end even if this task is cancelled again meanwhile.

    ``cleanup`` must be bounded. A cancellation that arrived while it ran is re-raised after it.
    """
    task = asyncio.ensure_future(cleanup)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = cancelled or not task.done()
    task.result()
    if cancelled:
        raise asyncio.CancelledError
