"""gravd's settings: each one's name, flag, environment variable, help, and the parser of its value.

``SETTINGS`` is the one list of what gravd can be told; ``gravpy.daemon.config`` loads values for
it from the four sources and builds ``DaemonConfig``. A parser takes a raw value (a string from a
flag or the environment, or a TOML value, or an already typed value) and returns the typed value,
or raises ``ValueError`` with a message for the operator; the loader adds the setting's name and
the source of the value. Parsers are idempotent on their own output.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from gravpy.errors import UsageError
from gravpy.plugins import available_discovery, load_discovery

__all__ = [
    "BY_NAME",
    "DEFAULT_HTTP_PATH",
    "DEFAULT_LISTEN",
    "DEFAULT_MONITOR",
    "DISCOVERY_MODES",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "MIN_KEY_BYTES",
    "SETTINGS",
    "Address",
    "Setting",
]

MIN_KEY_BYTES: Final = 16
DISCOVERY_MODES: Final = ("static", "mdns", "none")
LOG_FORMATS: Final = ("auto", "console", "json")
LOG_LEVELS: Final = ("debug", "info", "warning", "error", "critical")
_OFF: Final = frozenset({"", "off", "none", "false", "no"})
_MAX_NAME: Final = 255


@dataclass(frozen=True, slots=True)
class Address:
    """A host and a TCP port to listen on (port 0: any free port, reported once bound)."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


DEFAULT_LISTEN: Final = Address("0.0.0.0", 8080)
DEFAULT_MONITOR: Final = Address("127.0.0.1", 8222)
DEFAULT_HTTP_PATH: Final = "/meta/http"


# -- parsers: a raw value (str from a flag or the environment, or a TOML value) to a typed one ----


def _parse_address(value: object) -> Address:
    if isinstance(value, Address):
        host, port_text = value.host, str(value.port)
    elif isinstance(value, str):
        text = value.strip()
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError(f"{value!r} is not HOST:PORT (for example 0.0.0.0:8080 or :8080)")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        host = host or DEFAULT_LISTEN.host
    else:
        raise ValueError(f"expected a string HOST:PORT, got {value!r}")
    if not host or any(c.isspace() for c in host) or "[" in host or "]" in host:
        raise ValueError(f"bad host {host!r}")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"bad port {port_text!r}: use a number from 0 to 65535")
    return Address(host, int(port_text))


def _parse_address_or_off(value: object) -> Address | None:
    if value is None or value is False or (isinstance(value, str) and value.lower() in _OFF):
        return None
    return _parse_address(value)


def _parse_peers(value: object) -> tuple[str, ...]:
    from discovery.static import normalize_endpoint  # the static plugin owns endpoint syntax

    if isinstance(value, str):
        items: list[object] = list(value.replace(",", " ").split())
    elif isinstance(value, list | tuple):
        items = []
        for item in value:
            items.extend(item.replace(",", " ").split() if isinstance(item, str) else [item])
    else:
        raise ValueError(f"expected a list of endpoint URLs, got {value!r}")
    peers: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"expected endpoint URLs (strings), got {item!r}")
        try:
            peers.append(normalize_endpoint(item))
        except UsageError as exc:
            raise ValueError(str(exc)) from None
    return tuple(dict.fromkeys(peers))


def _choice(name: str, choices: tuple[str, ...]) -> Callable[[object], str]:
    def parse(value: object) -> str:
        if not isinstance(value, str) or value.strip().lower() not in choices:
            raise ValueError(f"{value!r} is not one of {', '.join(choices)}")
        return value.strip().lower()

    parse.__name__ = f"_parse_{name}"
    return parse


def _parse_discovery(value: object) -> str:
    mode = _choice("discovery", DISCOVERY_MODES)(value)
    if mode == "mdns" and "mdns" not in available_discovery():
        raise ValueError(
            "mdns discovery is not available in this version of gravpy (no mdns plugin is "
            "installed); use 'static' with --peer, or 'none'"
        )
    return mode


def _parse_interfaces(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        items: list[object] = list(value.replace(",", " ").split())
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise ValueError(f"expected a list of IP addresses, got {value!r}")
    for item in items:
        try:
            ipaddress.ip_address(item if isinstance(item, str) else "-")
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address") from None
    return tuple(str(item) for item in items)


def _parse_service(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"expected an mDNS service type like '_grav._tcp.local.', got {value!r}")
    if not value.strip():
        return None
    if "mdns" in available_discovery():
        try:
            load_discovery("mdns")(service_type=value.strip())  # it checks the syntax
        except UsageError as exc:
            raise ValueError(str(exc)) from None
    return value.strip()


def _parse_name(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a non-empty mesh name, got {value!r}")
    text = value.strip()
    if len(text) > _MAX_NAME or any(c.isspace() for c in text):
        raise ValueError(f"{text!r}: a mesh name has at most {_MAX_NAME} characters, no spaces")
    return text


def _parse_path_setting(value: object) -> Path | None:
    if value is None or isinstance(value, Path):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a file path, got {value!r}")
    return Path(value).expanduser() if value.strip() else None


def _parse_url_path(value: object) -> str:
    if not isinstance(value, str) or not value.startswith("/") or any(c.isspace() for c in value):
        raise ValueError(f"{value!r} is not a URL path (it starts with '/', has no spaces)")
    return value


def _parse_http_path(value: object) -> str:
    path = _parse_url_path(value)
    if path.endswith("/") or "?" in path or "#" in path:
        raise ValueError(f"{path!r} is not an HTTP transport path (no trailing '/', '?' or '#')")
    return path


def _parse_seconds(value: object) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected a number of seconds, got {value!r}")
    try:
        seconds = float(value) if isinstance(value, str | int | float) else math.nan
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{value!r} is not a number of seconds >= 0")
    return seconds


def _parse_list(value: object) -> list[object]:
    if isinstance(value, str):
        return list(value.replace(",", " ").split())
    if isinstance(value, list | tuple):
        items: list[object] = []
        for item in value:
            items.extend(item.replace(",", " ").split() if isinstance(item, str) else [item])
        return items
    raise ValueError(f"expected a list, got {value!r}")


def _parse_nats_urls(value: object) -> tuple[str, ...]:
    urls = _parse_list(value)
    for url in urls:
        if not isinstance(url, str) or not url.startswith(("nats://", "tls://", "ws://", "wss://")):
            raise ValueError(f"{url!r} is not a NATS URL (nats://HOST:PORT or tls://HOST:PORT)")
    return tuple(dict.fromkeys(str(u) for u in urls))


def _parse_patterns(value: object) -> tuple[str, ...]:
    from gravpy.filter import Pattern

    patterns = _parse_list(value)
    for pattern in patterns:
        try:
            Pattern(pattern if isinstance(pattern, str) else "")
        except UsageError as exc:
            raise ValueError(str(exc)) from None
    return tuple(dict.fromkeys(str(p) for p in patterns))


def _parse_prefix(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a NATS subject prefix like 'gravpy', got {value!r}")
    text = value.strip()
    tokens = text.split(".")
    if any(not t or any(c.isspace() or c in "*>" for c in t) for t in tokens):
        raise ValueError(
            f"{text!r} is not a NATS subject prefix (dot-separated tokens, no wildcards)"
        )
    return text


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting of gravd: where it can be given and how its raw value is read."""

    name: str
    flag: str
    metavar: str
    help: str
    parse: Callable[[object], Any]
    repeatable: bool = False

    @property
    def env(self) -> str:
        return "GRAVD_" + self.name.upper()


_BRIDGE_SETTINGS: Final = (
    Setting(
        "nats",
        "--nats",
        "URL",
        "bridge this node's mesh to NATS: a server URL, nats://HOST:PORT or tls://HOST:PORT; "
        "repeat for a cluster's seed URLs (environment: comma-separated; TOML: a list) "
        "(default: no bridge)",
        _parse_nats_urls,
        repeatable=True,
    ),
    Setting(
        "nats_prefix",
        "--nats-prefix",
        "PREFIX",
        "with nats: the first subject token(s) of every bridged message (default gravpy)",
        _parse_prefix,
    ),
    Setting(
        "nats_creds",
        "--nats-creds",
        "FILE",
        "with nats: a NATS credentials file (JWT and NKey seed)",
        _parse_path_setting,
    ),
    Setting(
        "nats_token_file",
        "--nats-token-file",
        "FILE",
        "with nats: a file holding the NATS authentication token",
        _parse_path_setting,
    ),
    Setting(
        "nats_export",
        "--nats-export",
        "PATTERN",
        "with nats: publish types matching PATTERN to NATS even if no mesh asked (for plain "
        "NATS subscribers); repeat for several",
        _parse_patterns,
        repeatable=True,
    ),
)

SETTINGS: Final[tuple[Setting, ...]] = (
    Setting(
        "listen",
        "--listen",
        "HOST:PORT",
        "where peers and apps connect (default 0.0.0.0:8080, every interface)",
        _parse_address,
    ),
    Setting(
        "path",
        "--path",
        "PATH",
        "the WebSocket URL path (default /meta/message)",
        _parse_url_path,
    ),
    Setting(
        "listen_http",
        "--listen-http",
        "HOST:PORT",
        "also listen with the HTTP transport here, for peers and apps that can only use plain "
        "HTTP, and dial http:// peers; or 'off' (default off)",
        _parse_address_or_off,
    ),
    Setting(
        "http_path",
        "--http-path",
        "PATH",
        f"the HTTP transport's URL path (default {DEFAULT_HTTP_PATH})",
        _parse_http_path,
    ),
    Setting(
        "peers",
        "--peer",
        "URL",
        "a peer to link to, ws://HOST:PORT/PATH, http://HOST:PORT/PATH (needs --listen-http) "
        "or HOST:PORT; repeat the flag for several (environment: comma-separated; TOML: a list)",
        _parse_peers,
        repeatable=True,
    ),
    Setting(
        "discovery",
        "--discovery",
        "MODE",
        "how peers are found: static (only the --peer list), mdns (mDNS on the LAN, plus the "
        "--peer list) or none (only accept links) (default static)",
        _parse_discovery,
    ),
    Setting(
        "mdns_interfaces",
        "--mdns-interface",
        "IP",
        "with mdns: an interface address to advertise and browse on; repeat for several "
        "(default: every interface)",
        _parse_interfaces,
        repeatable=True,
    ),
    Setting(
        "mdns_service",
        "--mdns-service",
        "TYPE",
        "with mdns: the DNS-SD service type (default _grav._tcp.local.)",
        _parse_service,
    ),
    Setting(
        "monitor",
        "--monitor",
        "HOST:PORT",
        "the monitoring HTTP address, or 'off' (default 127.0.0.1:8222)",
        _parse_address_or_off,
    ),
    Setting(
        "mesh",
        "--mesh",
        "NAME",
        "the mesh this node belongs to; '*' links with any mesh (default '*')",
        _parse_name,
    ),
    Setting(
        "mesh_key_file",
        "--mesh-key-file",
        "PATH",
        f"a file holding the mesh key (at least {MIN_KEY_BYTES} bytes, the same on every node)",
        _parse_path_setting,
    ),
    Setting(
        "log_format",
        "--log-format",
        "FORMAT",
        "console, json, or auto: console on a terminal, JSON lines otherwise (default auto)",
        _choice("log_format", LOG_FORMATS),
    ),
    Setting(
        "log_level",
        "--log-level",
        "LEVEL",
        "debug, info, warning, error or critical (default info)",
        _choice("log_level", LOG_LEVELS),
    ),
    Setting(
        "drain_timeout",
        "--drain-timeout",
        "SECONDS",
        "how long shutdown waits for peers to acknowledge and queues to drain (default 2)",
        _parse_seconds,
    ),
    Setting(
        "ping_interval",
        "--ping-interval",
        "SECONDS",
        "how often a quiet link is pinged (default 2; the same on every node)",
        _parse_seconds,
    ),
    Setting(
        "dead_after",
        "--dead-after",
        "SECONDS",
        "silence after which a peer is declared dead, longer than the ping interval (default 6)",
        _parse_seconds,
    ),
    *_BRIDGE_SETTINGS,
)
BY_NAME: Final = {s.name: s for s in SETTINGS}
