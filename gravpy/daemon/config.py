"""gravd's configuration: one frozen, validated ``DaemonConfig`` and the loader that builds it.

Theory of operation
-------------------
Every setting is listed once, in ``SETTINGS``: its name (the ``DaemonConfig`` field and the TOML
key), its flag, its environment variable (``GRAVD_`` + the name in capitals) and its help. The
loader collects a raw value and where it came from for each setting, highest precedence last::

    defaults < TOML file (--config / GRAVD_CONFIG) < environment (GRAVD_*) < flags

then converts each raw value with the setting's parser. A bad value raises ``ConfigError``, whose
message names the setting and the place the value came from (``invalid listen (from environment
GRAVD_LISTEN): ...``), so the operator knows which of the four places to fix.

A name gravd does not know is refused the same way, never ignored: a TOML key that is no setting,
and a ``GRAVD_*`` variable that is neither ``GRAVD_CONFIG`` nor a setting's (with the closest
known name, when one is close: ``GRAVD_PEER`` gets "did you mean GRAVD_PEERS?").

``DaemonConfig`` runs the same parsers on its own fields when constructed, so a config built in
code is validated too, and so are the settings that are only wrong together, by the checks of
``gravpy.daemon.config_checks`` (an ``http://`` peer without ``listen_http``, two listeners on
one port, with mDNS a path too long for its TXT string), which the loader runs too, naming every
source. The mesh key itself is read by the loader (``load_config``) from ``mesh_key_file``; the
dataclass only checks its length and keeps it out of ``repr``.
"""

from __future__ import annotations

import difflib
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from gravpy.bridge.config import shown_url
from gravpy.daemon.config_checks import (
    check_listeners,
    check_liveness,
    check_mdns_txt,
    check_tls,
)
from gravpy.daemon.parsers import (
    AUTO,
    DEFAULT_HTTP_PATH,
    DEFAULT_LISTEN,
    DEFAULT_MDNS_SERVICE,
    DEFAULT_MONITOR,
    MIN_KEY_BYTES,
    Address,
    default_data_dir,
)
from gravpy.daemon.settings import BY_NAME, SETTINGS, Setting
from gravpy.errors import ConfigError, UsageError
from gravpy.proto import ANY_MESH

__all__ = [
    "DEFAULT_LISTEN",
    "DEFAULT_MONITOR",
    "SETTINGS",
    "Address",
    "ConfigError",
    "DaemonConfig",
    "Setting",
    "load_config",
    "load_config_with_sources",
    "tcp_beside",
]


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    """Everything gravd needs to run a node. Validated on construction (``ConfigError``)."""

    listen: Address = DEFAULT_LISTEN
    advertise: Address | None = None
    path: str = "/meta/message"
    listen_http: Address | None = None
    http_path: str = DEFAULT_HTTP_PATH
    listen_tcp: Address | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    tls_verify_clients: bool = False
    peers: tuple[str, ...] = ()
    discovery: str = "static"
    mdns_interfaces: tuple[str, ...] = ()
    mdns_service: str | None = None
    monitor: Address | None = DEFAULT_MONITOR
    mesh: str = ANY_MESH
    mesh_key_file: Path | None = None
    mesh_key: bytes | None = field(default=None, repr=False)
    data_dir: Path = field(default_factory=default_data_dir)
    buffer_size: int = 4096
    buffer_bytes: int = 64 * 1024 * 1024
    buffer_age: float = 3600.0
    buffer_durable: bool = True
    log_format: str = "auto"
    log_level: str = "info"
    loop: str = "auto"
    drain_timeout: float = 2.0
    ping_interval: float = 2.0
    dead_after: float = 6.0
    max_connections: int = 1024
    max_upgrading: int = 128
    dashboard: bool = True
    dashboard_tail: bool = True
    dashboard_token_file: Path | None = None
    nats: tuple[str, ...] = ()
    nats_prefix: str = "gravpy"
    nats_creds: Path | None = None
    nats_token_file: Path | None = None
    nats_ca: Path | None = None
    nats_export: tuple[str, ...] = ()
    nats_shadow: int = 131_072
    identity: Path | None = None
    auth_file: Path | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            setting = BY_NAME.get(f.name)
            if setting is None:
                continue
            try:
                object.__setattr__(self, f.name, setting.parse(getattr(self, f.name)))
            except ValueError as exc:
                raise ConfigError(f.name, "value", str(exc)) from None
        if self.mesh_key_file is not None and self.mesh_key is None:
            raise ConfigError("mesh_key_file", "value", "the key was not read; use load_config")
        if self.mesh_key is not None and len(self.mesh_key) < MIN_KEY_BYTES:
            raise ConfigError("mesh_key", "value", f"a mesh key has at least {MIN_KEY_BYTES} bytes")
        if self.peers and self.discovery == "none":
            raise ConfigError("peers", "value", "peers are listed but discovery is 'none'")
        check_listeners(lambda name: getattr(self, name), lambda name: "value")
        check_tls(lambda name: getattr(self, name), lambda name: "value")
        check_mdns_txt(lambda name: getattr(self, name), lambda name: "value")
        if self.dead_after <= self.ping_interval:
            raise ConfigError("dead_after", "value", "must be longer than ping_interval")

    def public(self) -> dict[str, object]:
        """The settings as JSON-able values (the key itself never appears)."""
        return {
            "listen": str(self.listen),
            "advertise": str(self.advertise) if self.advertise else "off",
            "path": self.path,
            "listen_http": str(self.listen_http) if self.listen_http else "off",
            "http_path": self.http_path,
            "listen_tcp": str(self.listen_tcp) if self.listen_tcp else "off",
            "tls_cert": str(self.tls_cert) if self.tls_cert else "off",
            "tls_key": str(self.tls_key) if self.tls_key else "off",
            "tls_ca": str(self.tls_ca) if self.tls_ca else "system",
            "tls_verify_clients": self.tls_verify_clients,
            "peers": list(self.peers),
            "discovery": self.discovery,
            "mdns_interfaces": list(self.mdns_interfaces),
            "mdns_service": self.mdns_service or DEFAULT_MDNS_SERVICE,
            "monitor": str(self.monitor) if self.monitor else "off",
            "mesh": self.mesh,
            "mesh_key_file": str(self.mesh_key_file) if self.mesh_key_file else "off",
            "data_dir": str(self.data_dir),
            "buffer_size": self.buffer_size,
            "buffer_bytes": self.buffer_bytes,
            "buffer_age": self.buffer_age,
            "buffer_durable": self.buffer_durable,
            "log_format": self.log_format,
            "log_level": self.log_level,
            "loop": self.loop,
            "drain_timeout": self.drain_timeout,
            "ping_interval": self.ping_interval,
            "dead_after": self.dead_after,
            "max_connections": self.max_connections,
            "max_upgrading": self.max_upgrading,
            "dashboard": self.dashboard,
            "dashboard_tail": self.dashboard_tail,
            "dashboard_token_file": (
                str(self.dashboard_token_file) if self.dashboard_token_file else "off"
            ),
            "nats": [shown_url(url) for url in self.nats],  # (no credentials on screen)
            "nats_prefix": self.nats_prefix,
            "nats_creds": str(self.nats_creds) if self.nats_creds else "off",
            "nats_token_file": str(self.nats_token_file) if self.nats_token_file else "off",
            "nats_ca": str(self.nats_ca) if self.nats_ca else "system",
            "nats_export": list(self.nats_export),
            "nats_shadow": self.nats_shadow,
            "identity": str(self.identity) if self.identity else "off",
            "auth_file": str(self.auth_file) if self.auth_file else "off",
        }


# -- loading ---------------------------------------------------------------------------------------


Raw = dict[str, tuple[object, str]]
"""A raw value and where it came from, per setting name."""

CONFIG_ENV = "GRAVD_CONFIG"
"""The one ``GRAVD_*`` variable that is not a setting: the TOML file (as ``--config``)."""


def load_config(flags: Mapping[str, object], environ: Mapping[str, str]) -> DaemonConfig:
    """Build the config from flags (``None`` = not given), the environment and the TOML file.

    ``flags`` maps setting names (and ``"config"``, the TOML file) to what the command line gave.
    Raises ``ConfigError`` naming the setting and where its bad value came from.
    """
    return load_config_with_sources(flags, environ)[0]


def load_config_with_sources(
    flags: Mapping[str, object], environ: Mapping[str, str]
) -> tuple[DaemonConfig, dict[str, str]]:
    """``load_config``, and where each setting's value came from (``"default"`` if nowhere)."""
    _check_environment(environ)
    config_file, config_source = _pick_config_file(flags, environ)
    raw: Raw = {}
    if config_file is not None:
        for name, value in _read_toml(config_file, config_source).items():
            raw[name] = (value, _toml_source(config_file, name))
    for setting in SETTINGS:
        if setting.env in environ:
            raw[setting.name] = (environ[setting.env], f"environment {setting.env}")
        given = flags.get(setting.name)
        if given is not None:  # (False: a switch's off form, --no-...)
            flag = setting.off_flag if setting.switch and given is False else setting.flag
            raw[setting.name] = (given, f"flag {flag}")
    values = _parse(raw)
    if config_file is not None:
        _relative_to_file(values, raw, config_file)
    defaults = DaemonConfig()
    check_tls(
        lambda name: values.get(name, getattr(defaults, name)),
        lambda name: raw[name][1] if name in raw else "default",
    )
    _read_tls_files(values, raw)
    if values.get("mesh_key_file") is not None:
        values["mesh_key"] = _read_key(values["mesh_key_file"], raw["mesh_key_file"][1])
    _check_credentials(values, raw)
    if values.get("peers") and values.get("discovery") == "none":
        raise ConfigError(
            "peers",
            raw["peers"][1],
            f"peers are listed but discovery is 'none' (from {raw['discovery'][1]}); "
            "use discovery 'static' to dial them",
        )
    sources = {s.name: raw[s.name][1] if s.name in raw else "default" for s in SETTINGS}
    if values.get("listen_tcp", AUTO) == AUTO:
        _resolve_auto_tcp(values, sources, defaults.listen)
    check_listeners(lambda name: values.get(name, getattr(defaults, name)), sources.__getitem__)
    check_liveness(lambda name: values.get(name, getattr(defaults, name)), sources.__getitem__)
    check_mdns_txt(lambda name: values.get(name, getattr(defaults, name)), sources.__getitem__)
    return DaemonConfig(**values), sources


def _check_credentials(values: dict[str, Any], raw: Raw) -> None:
    """Read the identity key and the auth file once now, so a bad one stops gravd at start
    (and ``--check-config``) with the setting and its source named."""
    from gravpy.daemon.auth import read_auth_file
    from gravpy.identity import load_credentials

    if values.get("identity") is not None:
        try:
            load_credentials(values["identity"])
        except UsageError as exc:
            raise ConfigError("identity", raw["identity"][1], str(exc)) from exc
    if values.get("auth_file") is not None:
        read_auth_file(values["auth_file"], raw["auth_file"][1])
    if values.get("dashboard_token_file") is not None:
        from gravpy.daemon.dashboard.access import read_token

        try:
            read_token(values["dashboard_token_file"])
        except UsageError as exc:
            raise ConfigError(
                "dashboard_token_file", raw["dashboard_token_file"][1], str(exc)
            ) from exc


def _relative_to_file(values: dict[str, Any], raw: Raw, config_file: Path) -> None:
    """A relative path given in the TOML file is relative to that file's directory (every path
    setting alike); one from a flag or the environment, to the working directory."""
    for name, value in values.items():
        from_file = raw[name][1] == _toml_source(config_file, name)
        if from_file and isinstance(value, Path) and not value.is_absolute():
            values[name] = config_file.parent / value


def _read_tls_files(values: dict[str, Any], raw: Raw) -> None:
    """Read and check every TLS file."""
    from gravpy.tls import TlsFileError, check_tls_files

    try:
        check_tls_files(values.get("tls_cert"), values.get("tls_key"), values.get("tls_ca"))
    except TlsFileError as exc:
        raise ConfigError(exc.setting, raw[exc.setting][1], str(exc)) from None


def _resolve_auto_tcp(values: dict[str, Any], sources: dict[str, str], listen: Address) -> None:
    """``listen_tcp = auto``: beside ``listen`` (``tcp_beside``), but off under ``advertise``,
    which names the one address peers can reach (a TCP port beside it may not be)."""
    listen = values.get("listen", listen)
    if values.get("advertise") is not None:
        values["listen_tcp"] = None
        sources["listen_tcp"] += " (auto: off, since advertise is set)"
        return
    values["listen_tcp"] = tcp_beside(listen, values.get("listen_http"))
    if values["listen_tcp"] is None:
        sources["listen_tcp"] += f" (auto: off, port {listen.port + 2} is taken)"


def tcp_beside(listen: Address, http: Address | None = None) -> Address | None:
    """The TCP listener ``auto`` means: ``listen``'s host and its port + 2 (port 0: any free
    port), or None when that port is ``http``'s or cannot be bound now, so that a LAN of gravd
    links over TCP with no configuration and a taken port never stops gravd from starting."""
    if listen.port == 0:
        return Address(listen.host, 0)
    port = listen.port + 2
    if port > 65535 or (http is not None and http.port == port) or not _bindable(listen.host, port):
        return None
    return Address(listen.host, port)


def _bindable(host: str, port: int) -> bool:
    """True if a TCP socket can bind ``host:port`` right now (it is closed again at once)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError:
        return False
    return True


def _parse(raw: Raw) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, (value, source) in raw.items():
        try:
            values[name] = BY_NAME[name].parse(value)
        except ValueError as exc:
            raise ConfigError(name, source, str(exc)) from None
    return values


def _pick_config_file(
    flags: Mapping[str, object], environ: Mapping[str, str]
) -> tuple[Path | None, str]:
    """The TOML file and where its name came from; ``--config ''`` (or an empty
    ``GRAVD_CONFIG``) is no file, as an empty flag or variable turns any optional file off."""
    flag = flags.get("config")
    if isinstance(flag, str):
        return (Path(flag).expanduser() if flag.strip() else None), "flag --config"
    env = environ.get(CONFIG_ENV, "")
    if env.strip():
        return Path(env).expanduser(), f"environment {CONFIG_ENV}"
    return None, ""


def _read_toml(path: Path, source: str) -> dict[str, object]:
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError("config", source, f"cannot read {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:  # (TOML is UTF-8)
        raise ConfigError("config", source, f"{path} is not valid TOML: {exc}") from None
    table: object = data.get("gravd", data)  # keys at the top level or under [gravd]
    if not isinstance(table, dict):
        raise ConfigError("config", source, f"{path}: [gravd] must be a table")
    if "gravd" in data and len(data) > 1:
        others = ", ".join(k for k in data if k != "gravd")
        raise ConfigError("config", source, f"{path}: put every key under [gravd] ({others})")
    for key in table:
        if key not in BY_NAME:
            known = [s.name for s in SETTINGS]
            close = _closest(key.lower(), known)
            hint = f"; did you mean {close}?" if close else ""
            raise ConfigError(key, f"{path}", f"unknown setting{hint} (known: {', '.join(known)})")
    return dict(table)


def _check_environment(environ: Mapping[str, str]) -> None:
    """A ``GRAVD_*`` variable gravd does not read is refused, as an unknown TOML key is: a typo
    (``GRAVD_PEER`` for ``GRAVD_PEERS``) would otherwise be silently ignored."""
    known = {CONFIG_ENV, *(s.env for s in SETTINGS)}
    for name in sorted(environ):
        if name.startswith("GRAVD_") and name not in known:
            close = _closest(name[len("GRAVD_") :].lower(), [s.name for s in SETTINGS])
            hint = f"; did you mean {BY_NAME[close].env}?" if close else ""
            raise ConfigError(
                name,
                "environment",
                f"not a variable gravd reads{hint} (it reads {CONFIG_ENV} and GRAVD_ + "
                "a setting's name in capitals: gravd --help lists them)",
            )


def _closest(name: str, known: list[str]) -> str | None:
    """The known setting name closest to ``name`` (dashes read as underscores), if one is close."""
    close = difflib.get_close_matches(name.replace("-", "_"), known, n=1, cutoff=0.8)
    return close[0] if close else None


def _read_key(path: Path, source: str) -> bytes:
    try:
        key = path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(
            "mesh_key_file", source, f"cannot read {path}: {exc.strerror or exc}"
        ) from None
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(
            "mesh_key_file",
            source,
            f"{path} holds {len(key)} bytes; a mesh key has at least {MIN_KEY_BYTES} "
            f"(make one with: head -c 32 /dev/urandom | base64 > {path.name})",
        )
    return key


def _toml_source(path: Path, name: str) -> str:
    return f"{path} key '{name}'"
