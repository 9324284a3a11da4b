"""Parsers of gravd's setting values: a raw value to a typed one, or a message for the operator.

A raw value is a string from a flag or the environment, a TOML value, or an already typed value;
each parser returns the typed value or raises ``ValueError`` saying what is wrong (the loader,
``gravpy.daemon.config``, adds the setting's name and the source). Parsers are idempotent on their
own output, so a value can pass through twice. ``gravpy.daemon.settings`` names which parser
reads which setting.
"""

from __future__ import annotations

import ipaddress
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from gravpy.errors import UsageError
from gravpy.plugins import available_discovery, load_discovery
from gravpy.transport_kit import check_url_path

__all__ = [
    "AUTO",
    "DEFAULT_HTTP_PATH",
    "DEFAULT_LISTEN",
    "DEFAULT_MDNS_SERVICE",
    "DEFAULT_MONITOR",
    "DISCOVERY_MODES",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "LOOPS",
    "MIN_KEY_BYTES",
    "Address",
    "choice",
    "default_data_dir",
    "parse_address",
    "parse_address_or_off",
    "parse_advertise",
    "parse_count",
    "parse_data_dir",
    "parse_discovery",
    "parse_http_path",
    "parse_interfaces",
    "parse_interval",
    "parse_list",
    "parse_loop",
    "parse_name",
    "parse_nats_urls",
    "parse_path_setting",
    "parse_patterns",
    "parse_peers",
    "parse_positive",
    "parse_prefix",
    "parse_seconds",
    "parse_service",
    "parse_switch",
    "parse_tcp_listener",
    "parse_url_path",
]

MIN_KEY_BYTES: Final = 16
MAX_COUNT: Final = 2**63 - 1  # what msgpack, SQLite and gravd's event metadata can hold
DISCOVERY_MODES: Final = ("static", "mdns", "none")
LOG_FORMATS: Final = ("auto", "console", "json")
LOG_LEVELS: Final = ("debug", "info", "warning", "error", "critical")
LOOPS: Final = ("auto", "asyncio", "uvloop")
_OFF: Final = frozenset({"", "off", "none", "false", "no"})
_ON: Final = frozenset({"on", "true", "yes", "1"})
_MAX_NAME: Final = 255


def parse_count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"expected a whole number, got {value!r}")
    try:
        count = int(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a whole number") from None
    if count < 0:
        raise ValueError(f"{value!r} is not a whole number >= 0")
    return _bounded(count)


def _bounded(count: int) -> int:
    if count > MAX_COUNT:
        raise ValueError(f"{count} is more than the largest count gravd takes, {MAX_COUNT}")
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


def parse_address(value: object) -> Address:
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


def parse_address_or_off(value: object) -> Address | None:
    if value is None or value is False or (isinstance(value, str) and value.lower() in _OFF):
        return None
    return parse_address(value)


AUTO: Final = "auto"


def parse_tcp_listener(value: object) -> Address | str | None:
    """``listen_tcp``: ``auto`` (beside ``listen``, see ``config.tcp_beside``), off, or HOST:PORT."""
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return AUTO
    return parse_address_or_off(value)


def parse_advertise(value: object) -> Address | None:
    address = parse_address_or_off(value)
    if address is not None and address.host in ("0.0.0.0", "::"):
        raise ValueError(
            f"{value!r}: advertise a host peers can reach (a name or an address), not a wildcard"
        )
    return address


def parse_peers(value: object) -> tuple[str, ...]:
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


def choice(name: str, choices: tuple[str, ...]) -> Callable[[object], str]:
    def parse(value: object) -> str:
        if not isinstance(value, str) or value.strip().lower() not in choices:
            raise ValueError(f"{value!r} is not one of {', '.join(choices)}")
        return value.strip().lower()

    parse.__name__ = f"parse_{name}"
    return parse


def parse_discovery(value: object) -> str:
    mode = choice("discovery", DISCOVERY_MODES)(value)
    if mode == "mdns" and "mdns" not in available_discovery():
        raise ValueError(
            "mdns discovery is not available in this version of gravpy (no mdns plugin is "
            "installed); use 'static' with --peer, or 'none'"
        )
    return mode


def parse_interfaces(value: object) -> tuple[str, ...]:
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


def parse_service(value: object) -> str | None:
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


def parse_name(value: object) -> str:
    """A mesh name: at most 255 characters of printable text without spaces. A control character
    (NUL, ESC, ...) or an invisible one (a bidirectional override, a zero-width space) would make
    logs and mDNS records show one name for another; a lone surrogate (undecodable bytes in the
    environment or argv) could not be encoded in a handshake at all."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a non-empty mesh name, got {value!r}")
    text = value.strip()
    if len(text) > _MAX_NAME or any(c.isspace() for c in text):
        raise ValueError(f"{text!r}: a mesh name has at most {_MAX_NAME} characters, no spaces")
    bad = next((c for c in text if not c.isprintable()), None)
    if bad is not None:
        raise ValueError(
            f"{text!r} holds U+{ord(bad):04X}: a mesh name is printable text, without control "
            "or invisible characters"
        )
    return text


def parse_path_setting(value: object) -> Path | None:
    if value is None or isinstance(value, Path):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a file path, got {value!r}")
    return _path(value) if value.strip() else None


def _path(text: str) -> Path:
    if "\x00" in text:  # (a TOML string may hold one; no file name can)
        raise ValueError(f"{text!r}: a path cannot hold a NUL character")
    return Path(text).expanduser()


def default_data_dir() -> Path:
    """Where gravd keeps its files by default: ``$XDG_STATE_HOME/gravd``, else
    ``~/.local/state/gravd``."""
    state = os.environ.get("XDG_STATE_HOME", "")
    base = Path(state) if state and Path(state).is_absolute() else Path.home() / ".local" / "state"
    return base / "gravd"


def parse_data_dir(value: object) -> Path:
    if isinstance(value, Path):
        return value
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a directory path, got {value!r}")
    return _path(value.strip())


def parse_switch(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = value.strip().lower() if isinstance(value, str) else None
    if text in _ON:
        return True
    if (text in _OFF and text) or text == "0":
        return False
    raise ValueError(f"{value!r} is not on or off (true or false)")


def parse_url_path(value: object) -> str:
    """The WebSocket path: one the transport takes, so no peer dials it only to get 404
    (``gravpy.transport_kit.check_url_path``)."""
    return check_url_path(value)


def parse_http_path(value: object) -> str:
    """The HTTP transport's path: as ``parse_url_path``, and not ending with '/'."""
    return check_url_path(value, http=True)


def parse_loop(value: object) -> str:
    from gravpy.daemon.loop import check_loop  # the loop module owns what is installed

    return check_loop(choice("loop", LOOPS)(value))


def parse_positive(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"expected a whole number >= 1, got {value!r}")
    text = str(value).strip()
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{value!r} is not a whole number >= 1")
    return _bounded(int(text))


def parse_seconds(value: object) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected a number of seconds, got {value!r}")
    try:
        seconds = float(value) if isinstance(value, str | int | float) else math.nan
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{value!r} is not a number of seconds >= 0")
    return seconds


def parse_interval(value: object) -> float:
    """Seconds above 0: an interval something is done every (0 would be a busy loop)."""
    seconds = parse_seconds(value)
    if seconds == 0:
        raise ValueError(f"{value!r} is not a number of seconds above 0")
    return seconds


def parse_list(value: object) -> list[object]:
    if isinstance(value, str):
        return list(value.replace(",", " ").split())
    if isinstance(value, list | tuple):
        items: list[object] = []
        for item in value:
            items.extend(item.replace(",", " ").split() if isinstance(item, str) else [item])
        return items
    raise ValueError(f"expected a list, got {value!r}")


def parse_nats_urls(value: object) -> tuple[str, ...]:
    """NATS URLs (``gravpy.bridge.config.check_url``: a password is never shown in the error)."""
    from gravpy.bridge.config import check_url

    urls = parse_list(value)
    try:
        return tuple(dict.fromkeys(check_url(url) for url in urls))
    except UsageError as exc:
        raise ValueError(str(exc)) from None


def parse_patterns(value: object) -> tuple[str, ...]:
    """Export patterns, comma-separated: one with a space or an empty one is refused, not split
    or dropped (``gravpy.bridge.config.export_patterns``)."""
    from gravpy.bridge.config import export_patterns

    try:
        return export_patterns(value)
    except UsageError as exc:
        raise ValueError(str(exc)) from None


def parse_prefix(value: object) -> str:
    from gravpy.bridge.config import check_prefix

    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a NATS subject prefix like 'gravpy', got {value!r}")
    try:
        return check_prefix(value.strip())
    except UsageError as exc:
        raise ValueError(str(exc)) from None
