"""gravd's cross-setting checks: settings that are each valid but wrong together.

Theory of operation
-------------------
A setting's own parser (``gravpy.daemon.parsers``) sees one value; the checks here see them all,
through two lookups: ``value(name)``, a setting's parsed value, and ``source(name)``, where it
came from (``flag --listen``, ``environment GRAVD_MESH``, a TOML file's key, ``default``; plain
``value`` for a ``DaemonConfig`` built in code). So a check can serve both callers in
``gravpy.daemon.config``: the loader, whose error names every place to fix (``invalid peers (from
flag --peer): ... listen_http is off (from default)``), and ``DaemonConfig.__post_init__``, which
validates a config built in code the same way. A check returns None or raises ``ConfigError``.

``check_listeners``: a peer needs the transport that dials it (``http://`` needs ``listen_http``,
``tcp://`` ``listen_tcp``, an unknown scheme none), and two listeners may not take one port.
``check_tls``: a certificate needs its key, verifying clients needs a CA. ``check_liveness``:
``dead_after`` is longer than ``ping_interval``. ``check_mdns_txt``: with mDNS, each setting that
fills a TXT string of 255 bytes (the mesh name, the paths, an advertised host name; see
``discovery.mdns_record``) fits it, since one that does not would fail the discovery task only
after start.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final
from urllib.parse import urlsplit

from discovery.mdns_record import MAX_TXT_ENTRY_BYTES, is_ip, txt_entry_bytes
from gravpy.daemon.parsers import Address
from gravpy.errors import ConfigError

__all__ = ["Source", "Value", "check_listeners", "check_liveness", "check_mdns_txt", "check_tls"]

Value = Callable[[str], Any]
"""A setting's parsed value, by name."""

Source = Callable[[str], str]
"""Where a setting's value came from, by name."""


# what a setting puts in a TXT entry of gravd's mDNS records (discovery.mdns_record): its TXT
# key, and what the value is, for the error
_TXT_ENTRIES: Final = {
    "mesh": ("mesh", "a mesh name"),
    "path": ("path", "the WebSocket path"),
    "http_path": ("path", "the HTTP transport's path"),
    "advertise": ("host", "an advertised host name"),
}


def check_mdns_txt(value: Value, source: Source) -> None:
    """With mDNS each setting in ``_TXT_ENTRIES`` travels as ``key=VALUE`` in one TXT string of
    255 bytes (``discovery.mdns_record.advert_for``): a longer one failed the discovery task
    after start, leaving a node no one finds. Refused here, naming the setting and its source."""
    if value("discovery") != "mdns":
        return
    for name, text in _mdns_txt_values(value):
        key, what = _TXT_ENTRIES[name]
        room = MAX_TXT_ENTRY_BYTES - txt_entry_bytes(key, "")
        size = len(text.encode())
        if size > room:
            raise ConfigError(
                name,
                source(name),
                f"{size} bytes in UTF-8; with discovery mdns (from {source('discovery')}) "
                f"{what} has at most {room}, to fit an mDNS TXT string as {key}={key.upper()}",
            )


def _mdns_txt_values(value: Value) -> list[tuple[str, str]]:
    """(setting, TXT value) for each TXT entry a setting fills, as ``advert_for`` reads it from
    the endpoint URL gravd advertises: the mesh; the WebSocket endpoint's path and, with
    ``advertise`` naming a host, that host; the HTTP endpoint's path when it listens."""
    advertise: Address | None = value("advertise")
    host = advertise.host if advertise is not None else "127.0.0.1"  # (bound: an IP, no host=)
    out = [("mesh", str(value("mesh")))]
    try:
        websocket = urlsplit(f"ws://{Address(host, 1)}{value('path')}")
        named = websocket.hostname
    except ValueError:  # (not a URL: advert_for skips the endpoint, it does not fail)
        return out
    out.append(("path", websocket.path))
    if named and not is_ip(named):
        out.append(("advertise", named))
    if value("listen_http") is not None:
        out.append(("http_path", urlsplit(f"http://127.0.0.1:1{value('http_path')}").path))
    return out


def check_liveness(value: Value, source: Source) -> None:
    """``dead_after`` must be longer than ``ping_interval``: the error names both sources."""
    dead, ping = value("dead_after"), value("ping_interval")
    if dead <= ping:
        raise ConfigError(
            "dead_after",
            source("dead_after"),
            f"{dead:g} s must be longer than ping_interval, {ping:g} s (from "
            f"{source('ping_interval')}); a quiet but live peer would be declared dead",
        )


_HTTP_SCHEMES = ("http", "https")
_WILDCARDS = ("0.0.0.0", "::")


def check_listeners(value: Value, source: Source) -> None:
    """Refuse listener and peer settings that are each valid but wrong together.

    ``value(name)`` is a setting's parsed value, ``source(name)`` where it came from. An
    ``http(s)://`` peer needs ``listen_http`` (gravd dials only with the transports it listens
    on); ``listen_http`` may not take the port ``listen`` binds (the second bind would fail).
    """
    _check_tcp_listener(value, source)
    _check_peer_schemes(value("peers"), source("peers"))
    listen: Address = value("listen")
    http: Address | None = value("listen_http")
    if http is None:
        for peer in value("peers"):
            if peer.partition("://")[0] in _HTTP_SCHEMES:
                raise ConfigError(
                    "peers",
                    source("peers"),
                    f"{peer} is an HTTP peer but listen_http is off (from "
                    f"{source('listen_http')}); gravd dials http:// only with the HTTP transport on",
                )
        return
    same_host = http.host == listen.host or http.host in _WILDCARDS or listen.host in _WILDCARDS
    if http.port != 0 and http.port == listen.port and same_host:
        raise ConfigError(
            "listen_http",
            source("listen_http"),
            f"{http} takes port {http.port}, which listen already binds ({listen}, from "
            f"{source('listen')}); give the HTTP transport a port of its own",
        )


def _check_peer_schemes(peers: tuple[str, ...], source: str) -> None:
    """A peer whose scheme no transport of gravd dials would only be logged, at run time."""
    from transports.http import HttpTransport
    from transports.tcp import TcpTransport
    from transports.websocket import WebSocketTransport

    known = (*WebSocketTransport.schemes, *HttpTransport.schemes, *TcpTransport.schemes)
    for peer in peers:
        scheme = peer.partition("://")[0]
        if scheme not in known:
            raise ConfigError(
                "peers",
                source,
                f"{peer}: no transport dials {scheme}:// (known: {', '.join(known)})",
            )


def check_tls(value: Value, source: Source) -> None:
    """Refuse TLS settings that are each valid but incomplete together."""
    for name, other in (("tls_cert", "tls_key"), ("tls_key", "tls_cert")):
        if value(name) is not None and value(other) is None:
            raise ConfigError(name, source(name), f"{other} must be given too")
    if value("tls_verify_clients") and (value("tls_ca") is None or value("tls_cert") is None):
        raise ConfigError(
            "tls_verify_clients",
            source("tls_verify_clients"),
            "verifying clients needs tls_ca (the CA that signs them) and tls_cert/tls_key "
            "(TLS to listen with)",
        )


def _check_tcp_listener(value: Value, source: Source) -> None:
    """A ``tcp://``/``tls://`` peer needs ``listen_tcp``, which needs a port of its own."""
    tcp: Address | None = value("listen_tcp")
    if tcp is None:
        for peer in value("peers"):
            if peer.partition("://")[0] in ("tcp", "tls"):
                raise ConfigError(
                    "peers",
                    source("peers"),
                    f"{peer} is a TCP peer but listen_tcp is off (from {source('listen_tcp')}); "
                    "gravd dials tcp:// only with the TCP transport on",
                )
        return
    for other in ("listen", "listen_http"):
        address: Address | None = value(other)
        if address is None or tcp.port == 0 or tcp.port != address.port:
            continue
        if tcp.host == address.host or _WILDCARDS.count(tcp.host) + _WILDCARDS.count(address.host):
            raise ConfigError(
                "listen_tcp",
                source("listen_tcp"),
                f"{tcp} takes port {tcp.port}, which {other} already binds ({address}, from "
                f"{source(other)}); give the TCP transport a port of its own",
            )
