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
import os
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
    "DEFAULT_MDNS_SERVICE",
    "DEFAULT_MONITOR",
    "DISCOVERY_MODES",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "LOOPS",
    "MIN_KEY_BYTES",
    "SETTINGS",
    "Address",
    "Setting",
    "default_data_dir",
]

MIN_KEY_BYTES: Final = 16
DISCOVERY_MODES: Final = ("static", "mdns", "none")
LOG_FORMATS: Final = ("auto", "console", "json")
LOG_LEVELS: Final = ("debug", "info", "warning", "error", "critical")
LOOPS: Final = ("auto", "asyncio", "uvloop")
_OFF: Final = frozenset({"", "off", "none", "false", "no"})
_ON: Final = frozenset({"on", "true", "yes", "1"})
_MAX_NAME: Final = 255


def _parse_count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"expected a whole number, got {value!r}")
    try:
        count = int(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a whole number") from None
    if count < 0:
        raise ValueError(f"{value!r} is not a whole number >= 0")
    return count


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
DEFAULT_MDNS_SERVICE: Final = "_grav._tcp.local."


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


def _parse_advertise(value: object) -> Address | None:
    address = _parse_address_or_off(value)
    if address is not None and address.host in ("0.0.0.0", "::"):
        raise ValueError(
            f"{value!r}: advertise a host peers can reach (a name or an address), not a wildcard"
        )
    return address


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


def default_data_dir() -> Path:
    """Where gravd keeps its files by default: ``$XDG_STATE_HOME/gravd``, else
    ``~/.local/state/gravd``."""
    state = os.environ.get("XDG_STATE_HOME", "")
    base = Path(state) if state and Path(state).is_absolute() else Path.home() / ".local" / "state"
    return base / "gravd"


def _parse_data_dir(value: object) -> Path:
    if isinstance(value, Path):
        return value
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a directory path, got {value!r}")
    return Path(value.strip()).expanduser()


def _parse_switch(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = value.strip().lower() if isinstance(value, str) else None
    if text in _ON:
        return True
    if (text in _OFF and text) or text == "0":
        return False
    raise ValueError(f"{value!r} is not on or off (true or false)")


def _parse_url_path(value: object) -> str:
    if not isinstance(value, str) or not value.startswith("/") or any(c.isspace() for c in value):
        raise ValueError(f"{value!r} is not a URL path (it starts with '/', has no spaces)")
    return value


def _parse_http_path(value: object) -> str:
    path = _parse_url_path(value)
    if path.endswith("/") or "?" in path or "#" in path:
        raise ValueError(f"{path!r} is not an HTTP transport path (no trailing '/', '?' or '#')")
    return path


def _parse_loop(value: object) -> str:
    from gravpy.daemon.loop import check_loop  # the loop module owns what is installed

    return check_loop(_choice("loop", LOOPS)(value))


def _parse_positive(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"expected a whole number >= 1, got {value!r}")
    text = str(value).strip()
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{value!r} is not a whole number >= 1")
    return int(text)


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
    switch: bool = False  # a flag without a value (sets "true"); TOML true/false, env 1/0

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
        "advertise",
        "--advertise",
        "HOST:PORT",
        "the address this node tells peers and mDNS to dial it at, for NAT, containers or a "
        "DNS name; port 0 means the port --listen bound (default off: the address of the "
        "interface holding the default route)",
        _parse_advertise,
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
        "listen_tcp",
        "--listen-tcp",
        "HOST:PORT",
        "also listen with the TCP transport here (tcp://, or tls:// with --tls-cert), the "
        "fastest link between nodes, and dial tcp:// and tls:// peers; or 'off' (default off)",
        _parse_address_or_off,
    ),
    Setting(
        "tls_cert",
        "--tls-cert",
        "FILE",
        "a PEM certificate (chain): every listener serves TLS (wss://, https://, tls://) with it, "
        "and it is shown to peers that ask when dialling; needs --tls-key",
        _parse_path_setting,
    ),
    Setting(
        "tls_key",
        "--tls-key",
        "FILE",
        "the PEM private key of --tls-cert",
        _parse_path_setting,
    ),
    Setting(
        "tls_ca",
        "--tls-ca",
        "FILE",
        "PEM CA certificates that the TLS peers this node dials must be signed by (default: the "
        "system's trust store); with --tls-verify-clients, also the clients that connect",
        _parse_path_setting,
    ),
    Setting(
        "tls_verify_clients",
        "--tls-verify-clients",
        "",
        "mTLS: refuse nodes and apps that connect without a certificate signed by --tls-ca",
        _parse_switch,
        switch=True,
    ),
    Setting(
        "peers",
        "--peer",
        "URL",
        "a peer to link to, ws://HOST:PORT/PATH, http://HOST:PORT/PATH (needs --listen-http), "
        "tcp://HOST:PORT (needs --listen-tcp), their TLS forms, or HOST:PORT; repeat the flag for several (environment: comma-separated; TOML: a list)",
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
        "data_dir",
        "--data-dir",
        "PATH",
        "the directory gravd keeps its files in (events.sqlite3, ...) (default "
        "$XDG_STATE_HOME/gravd, else ~/.local/state/gravd)",
        _parse_data_dir,
    ),
    Setting(
        "buffer_size",
        "--buffer-size",
        "COUNT",
        "messages kept in the replay buffer, which apps replay (connect_with_replay) and peers "
        "resume from after a link flap (default 4096)",
        _parse_count,
    ),
    Setting(
        "buffer_bytes",
        "--buffer-bytes",
        "BYTES",
        "at most this much message data in the replay buffer; 0: no bound (default 67108864)",
        _parse_count,
    ),
    Setting(
        "buffer_age",
        "--buffer-age",
        "SECONDS",
        "messages older than this leave the replay buffer; 0: no bound (default 3600)",
        _parse_seconds,
    ),
    Setting(
        "buffer_durable",
        "--buffer-durable",
        "on|off",
        "keep the replay buffer in replay.sqlite3 in the data dir, so a restarted gravd still "
        "replays it (default on)",
        _parse_switch,
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
        "loop",
        "--loop",
        "LOOP",
        "the event loop: uvloop (pip install 'gravpy[speed]'), asyncio, or auto: uvloop when it "
        "is installed (default auto)",
        _parse_loop,
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
    Setting(
        "max_connections",
        "--max-connections",
        "N",
        "accepted connections open at once, per listener; past it one is closed at once and "
        "counted (gravd_connections_refused) (default 1024)",
        _parse_positive,
    ),
    Setting(
        "dashboard",
        "--dashboard",
        "on|off",
        "serve the web dashboard on the monitoring address (default on)",
        _parse_switch,
    ),
    Setting(
        "dashboard_tail",
        "--dashboard-tail",
        "on|off",
        "let the dashboard show the live tail of messages, which shows their data (default on)",
        _parse_switch,
    ),
    Setting(
        "dashboard_token_file",
        "--dashboard-token-file",
        "PATH",
        "a file holding the token the dashboard asks for; needed when the monitor listens "
        "beyond loopback (without one the dashboard refuses there)",
        _parse_path_setting,
    ),
    *_BRIDGE_SETTINGS,
    Setting(
        "identity",
        "--identity",
        "PATH",
        "this node's Ed25519 key (gravctl keygen PATH): it signs every handshake",
        _parse_path_setting,
    ),
    Setting(
        "auth_file",
        "--auth-file",
        "PATH",
        "a TOML file of the identities this node accepts and what each may publish and "
        "receive; SIGHUP re-reads it (default: accept every link)",
        _parse_path_setting,
    ),
)
BY_NAME: Final = {s.name: s for s in SETTINGS}
