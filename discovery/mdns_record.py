"""mDNS records: how this node's endpoints are written as DNS-SD records, and how others' are read.

Theory of operation
-------------------
Pure functions, no zeroconf and no I/O, so every rule is testable on its own. ``advert_for`` turns
one endpoint of this node into an ``Advert`` (instance label, host, port, TXT properties) or a
``Skip`` saying why it cannot be advertised (a wildcard address peers cannot dial, say).
``read_record`` turns a resolved record (its TXT properties, A/AAAA addresses and SRV port) into
the ``PeerReport`` the hub dials, or a ``Skip`` with one of four reasons: ``own`` (this node's own
record), ``mesh`` (another mesh, unless either side's mesh is ``"*"``), ``version`` (another
protocol version) or ``malformed``: among others, a ``host`` that is not a host name or an IP
address (it would change what the URL names), or only addresses no peer can be dialled at (the
wildcard ``0.0.0.0``/``::``, which reaches this very machine, multicast, broadcast).

TXT record (one service per endpoint)
-------------------------------------

================  ===========================================================================
``uuid``          the node uuid; the hub refuses a node whose handshake states another one
``transport``     the endpoint's URL scheme: ``ws``, ``wss``, ``http``, ``https``, ``tcp``, ``tls``
``path``          the endpoint's path, e.g. ``/meta/message`` (empty for ``tcp``, ``tls``)
``mesh``          the mesh name (``belongs_to``); ``"*"`` joins any mesh
``version``       the wire protocol version (decimal)
``host``          only when the endpoint names a host rather than an IP address: peers dial
                  that name (so TLS names still match) instead of the advertised address
================  ===========================================================================

The SRV record carries the port, the A/AAAA records the endpoint's address. A peer dials
``<transport>://<host or address>:<port><path>``, preferring an IPv4 address, then a global IPv6
one, then a link-local one. An instance label has no dots and at most ``MAX_INSTANCE_BYTES``
(59) bytes, leaving room in one DNS label (63) for a ``-N`` suffix.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from gravpy.errors import UsageError
from gravpy.plugins import DiscoveryContext, PeerReport
from gravpy.proto import ANY_MESH

__all__ = [
    "MAX_INSTANCE_BYTES",
    "MAX_TXT_ENTRY_BYTES",
    "Advert",
    "Skip",
    "advert_for",
    "instance_label",
    "is_ip",
    "read_record",
    "txt_entry_bytes",
]

_MAX_LABEL_BYTES: Final = 63  # one DNS label (the instance name)
MAX_INSTANCE_BYTES: Final = _MAX_LABEL_BYTES - 4  # room for a "-N" suffix
MAX_TXT_ENTRY_BYTES: Final = 255  # "key=value" in one TXT string
_SCHEME_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789+.-")
# a DNS host name: dot-separated labels of letters, digits, '-' (not at either end) and '_'
_HOST_NAME: Final = re.compile(
    r"(?=.{1,253}\.?\Z)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
    r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?"
)
_LIMITED_BROADCAST: Final = ipaddress.ip_address("255.255.255.255")


@dataclass(frozen=True, slots=True)
class Advert:
    """How one endpoint of this node is advertised."""

    instance: str  # the instance label, without the service type
    host: str  # the endpoint's host: an IP address or a DNS name
    port: int
    properties: Mapping[str, str]  # the TXT record

    @property
    def address(self) -> str | None:
        """The host as an IP address, or None when it is a name."""
        return self.host if is_ip(self.host) else None


@dataclass(frozen=True, slots=True)
class Skip:
    """Why a record is not reported: ``reason`` is one of own, mesh, version, malformed."""

    reason: str
    detail: str = ""


def advert_for(endpoint: str, ctx: DiscoveryContext, instance: str) -> Advert | Skip:
    """The advertisement of ``endpoint``, or why it cannot be advertised.

    Raises UsageError when a TXT entry would not fit in 255 bytes (a very long mesh name or path).
    """
    try:
        parts = urlsplit(endpoint)
        port = parts.port
    except ValueError as exc:
        return Skip("malformed", f"{endpoint!r}: {exc}")
    host = parts.hostname
    if not host or not port or not parts.scheme:
        return Skip("malformed", f"{endpoint!r} has no scheme, host or port")
    if is_ip(host) and ipaddress.ip_address(host).is_unspecified:
        return Skip("malformed", f"{endpoint!r} is a wildcard address, not one peers can dial")
    properties = {
        "uuid": ctx.node_uuid,
        "transport": parts.scheme,
        "path": parts.path,
        "mesh": ctx.belongs_to,
        "version": str(ctx.protocol_version),
    }
    if not is_ip(host):
        properties["host"] = host
    for key, value in properties.items():
        if txt_entry_bytes(key, value) > MAX_TXT_ENTRY_BYTES:
            raise UsageError(
                f"cannot advertise {endpoint!r} over mDNS: TXT {key!r} exceeds 255 bytes"
            )
    return Advert(instance, host, port, properties)


def read_record(
    properties: Mapping[str, str | None],
    addresses: list[str],
    port: int | None,
    ctx: DiscoveryContext,
    source: str = "mdns",
) -> PeerReport | Skip:
    """The peer a resolved record describes, or why it is not reported to the hub.

    ``addresses`` are the record's A/AAAA addresses in the order given (IPv6 ones may carry a
    ``%scope``); IPv4 is preferred, then a global IPv6 address, then a link-local one.
    """
    node_uuid = properties.get("uuid")
    scheme = properties.get("transport")
    version = properties.get("version")
    if not node_uuid or not scheme or not version:
        return Skip("malformed", "TXT lacks uuid, transport or version")
    if node_uuid == ctx.node_uuid:
        return Skip("own")
    mesh = properties.get("mesh") or ANY_MESH
    if not (mesh == ctx.belongs_to or ANY_MESH in (mesh, ctx.belongs_to)):
        return Skip("mesh", f"belongs to {mesh!r}, not {ctx.belongs_to!r}")
    if version != str(ctx.protocol_version):
        return Skip("version", f"speaks version {version}, not {ctx.protocol_version}")
    if not scheme[0].isalpha() or not set(scheme) <= _SCHEME_CHARS:
        return Skip("malformed", f"bad transport {scheme!r}")
    if not port:
        return Skip("malformed", "no port")
    host = properties.get("host") or _pick_address(addresses)
    if not host:
        return Skip("malformed", "no address peers can be dialled at")
    if is_ip(host) and not _dialable(host):
        return Skip("malformed", f"host {host!r} is not an address peers can be dialled at")
    if not is_ip(host) and not _HOST_NAME.fullmatch(host):
        return Skip("malformed", f"host {host!r} is not a host name or an IP address")
    if ":" in host:  # an IPv6 address; a zone id is written %25 in a URL (RFC 6874)
        host = "[" + host.replace("%", "%25") + "]"
    path = properties.get("path") or ""
    if any(not c.isprintable() or c.isspace() or c == "#" for c in path):
        return Skip("malformed", f"bad path {path!r}")
    if path and not path.startswith("/"):
        path = "/" + path
    return PeerReport(f"{scheme}://{host}:{port}{path}", node_uuid, source)


def _pick_address(addresses: list[str]) -> str | None:
    def rank(address: str) -> int:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if ip.version == 4:
            return 0
        return 2 if ip.is_link_local else 1

    usable = [a for a in addresses if is_ip(a.split("%", 1)[0]) and _dialable(a)]
    return min(usable, key=rank) if usable else None


def _dialable(address: str) -> bool:
    """False for an IP address no peer listens at: the wildcard (dialling it reaches this
    machine), multicast, the limited broadcast."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    return not (ip.is_unspecified or ip.is_multicast or ip == _LIMITED_BROADCAST)


def txt_entry_bytes(key: str, value: str) -> int:
    """The bytes ``key=value`` takes in a TXT string (at most ``MAX_TXT_ENTRY_BYTES``)."""
    return len(f"{key}={value}".encode())


def instance_label(text: str) -> str:
    """``text`` as an instance label: no dots, at most 59 bytes (room for a ``-N`` suffix)."""
    return text.replace(".", "-").encode()[:MAX_INSTANCE_BYTES].decode(errors="ignore")


def is_ip(host: str) -> bool:
    """True if ``host`` is an IP address, not a host name."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
