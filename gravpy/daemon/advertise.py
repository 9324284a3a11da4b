"""``--advertise HOST:PORT``: the address a node states for itself, whatever it binds.

The hub takes the first endpoint of its first transport as the address it states in handshakes
(and peers gossip it on); mDNS advertises every endpoint. For a wildcard bind the transport guesses
(the default-route interface's address), which is wrong behind NAT, in a container or when peers
should use a DNS name. ``AdvertisedTransport`` wraps a transport and puts the advertised URL first
in ``endpoints()``, the bound ones after it (still reachable on a LAN); everything else is the
wrapped transport's. Port 0 in the setting means the port the transport bound.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from gravpy.daemon.parsers import Address
from gravpy.plugins import Link, LinkHandler, Transport

__all__ = ["AdvertisedTransport", "advertised"]


class AdvertisedTransport:
    """A transport whose first endpoint is ``address`` (same scheme and path as its own)."""

    def __init__(self, inner: Transport, address: Address) -> None:
        self.inner = inner
        self.address = address

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def schemes(self) -> tuple[str, ...]:
        return self.inner.schemes

    @property
    def max_frame_bytes(self) -> int:
        return self.inner.max_frame_bytes

    async def start(self, on_link: LinkHandler) -> None:
        await self.inner.start(on_link)

    def endpoints(self) -> list[str]:
        bound = self.inner.endpoints()
        if not bound:
            return bound
        first = urlsplit(bound[0])
        port = self.address.port or first.port
        netloc = str(Address(self.address.host, port or 0))
        advertised = first._replace(netloc=netloc).geturl()
        return [advertised, *(ep for ep in bound if ep != advertised)]

    async def dial(self, url: str, *, timeout: float) -> Link:
        return await self.inner.dial(url, timeout=timeout)

    async def stop(self) -> None:
        await self.inner.stop()


def advertised(transport: Transport, address: Address | None) -> Transport:
    """``transport`` itself, or wrapped to state ``address`` first when one is given."""
    return transport if address is None else AdvertisedTransport(transport, address)
