"""gravd's settings: each one's name, flag, environment variable, help, and the parser of its value.

``SETTINGS`` is the one list of what gravd can be told; ``gravpy.daemon.config`` loads values for
it from the four sources and builds ``DaemonConfig``. A parser takes a raw value (a string from a
flag or the environment, or a TOML value, or an already typed value) and returns the typed value,
or raises ``ValueError`` with a message for the operator; the loader adds the setting's name and
the source of the value. Parsers are idempotent on their own output; they live in
``gravpy.daemon.parsers``. ``add_flags`` gives an argparse parser every setting's flag, the same
for gravd and for the health check that reads gravd's command line.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from gravpy.daemon.parsers import (
    DEFAULT_HTTP_PATH,
    LOG_FORMATS,
    LOG_LEVELS,
    MIN_KEY_BYTES,
    choice,
    parse_address,
    parse_address_or_off,
    parse_advertise,
    parse_count,
    parse_data_dir,
    parse_discovery,
    parse_http_path,
    parse_interfaces,
    parse_interval,
    parse_loop,
    parse_name,
    parse_nats_urls,
    parse_path_setting,
    parse_patterns,
    parse_peers,
    parse_positive,
    parse_prefix,
    parse_seconds,
    parse_service,
    parse_switch,
    parse_tcp_listener,
    parse_url_path,
)

__all__ = ["BY_NAME", "SETTINGS", "Setting", "add_flags"]


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting of gravd: where it can be given and how its raw value is read."""

    name: str
    flag: str
    metavar: str
    help: str
    parse: Callable[[object], Any]
    repeatable: bool = False
    switch: bool = False  # flags without a value, --X on and --no-X off; TOML true/false, env 1/0

    @property
    def env(self) -> str:
        return "GRAVD_" + self.name.upper()

    @property
    def off_flag(self) -> str:
        """A switch's flag that turns it off (``--no-tls-verify-clients``)."""
        return "--no-" + self.flag.removeprefix("--")


_BRIDGE_SETTINGS: Final = (
    Setting(
        "nats",
        "--nats",
        "URL",
        "bridge this node's mesh to NATS: a server URL, nats://HOST:PORT or tls://HOST:PORT; "
        "repeat for a cluster's seed URLs (environment: comma-separated; TOML: a list) "
        "(default: no bridge)",
        parse_nats_urls,
        repeatable=True,
    ),
    Setting(
        "nats_prefix",
        "--nats-prefix",
        "PREFIX",
        "with nats: the first subject token(s) of every bridged message (default gravpy)",
        parse_prefix,
    ),
    Setting(
        "nats_creds",
        "--nats-creds",
        "FILE",
        "with nats: a NATS credentials file (.creds: user JWT and NKEY seed) or an NKEY user "
        "seed file",
        parse_path_setting,
    ),
    Setting(
        "nats_token_file",
        "--nats-token-file",
        "FILE",
        "with nats: a file holding the NATS authentication token",
        parse_path_setting,
    ),
    Setting(
        "nats_ca",
        "--nats-ca",
        "FILE",
        "with nats: the CA certificate(s) that sign the NATS servers' TLS certificates, for "
        "tls:// URLs (default: the system's CAs)",
        parse_path_setting,
    ),
    Setting(
        "nats_export",
        "--nats-export",
        "PATTERN",
        "with nats: publish types matching PATTERN to NATS even if no mesh asked (for plain "
        "NATS subscribers); repeat for several",
        parse_patterns,
        repeatable=True,
    ),
    Setting(
        "nats_shadow",
        "--nats-shadow",
        "COUNT",
        "with nats: messages a standby bridge holds for a takeover in each direction, at least "
        "what crosses for the mesh in a takeover's time (about 4 s); past it the oldest are "
        "dropped and counted shadow_overflow / export_overflow (default 131072)",
        parse_positive,
    ),
)

SETTINGS: Final[tuple[Setting, ...]] = (
    Setting(
        "listen",
        "--listen",
        "HOST:PORT",
        "where peers and apps connect (default 0.0.0.0:8080, every interface)",
        parse_address,
    ),
    Setting(
        "advertise",
        "--advertise",
        "HOST:PORT",
        "the address this node tells peers and mDNS to dial it at, for NAT, containers or a "
        "DNS name (with mdns, at most 250 bytes); port 0 means the port --listen bound "
        "(default off: the address of the interface holding the default route)",
        parse_advertise,
    ),
    Setting(
        "path",
        "--path",
        "PATH",
        "the WebSocket URL path: it starts with '/' and holds no '?', '#', spaces or control "
        "characters (default /meta/message; with mdns, at most 250 bytes in UTF-8)",
        parse_url_path,
    ),
    Setting(
        "listen_http",
        "--listen-http",
        "HOST:PORT",
        "also listen with the HTTP transport here, for peers and apps that can only use plain "
        "HTTP, and dial http:// peers; or 'off' (default off)",
        parse_address_or_off,
    ),
    Setting(
        "http_path",
        "--http-path",
        "PATH",
        f"the HTTP transport's URL path: as --path, and no trailing '/', '%', braces or '.' "
        f"segments (default {DEFAULT_HTTP_PATH}; with mdns, at most 250 bytes in UTF-8)",
        parse_http_path,
    ),
    Setting(
        "listen_tcp",
        "--listen-tcp",
        "HOST:PORT",
        "also listen with the TCP transport here (tcp://, or tls:// with --tls-cert), the "
        "fastest link between nodes, and dial tcp:// and tls:// peers; 'auto' (the default): "
        "on listen's host, port + 2 (8082 beside 8080; any free port beside port 0), off if "
        "that port is taken; or 'off'",
        parse_tcp_listener,
    ),
    Setting(
        "tls_cert",
        "--tls-cert",
        "FILE",
        "a PEM certificate (chain): every listener serves TLS (wss://, https://, tls://) with it, "
        "and it is shown to peers that ask when dialling; needs --tls-key",
        parse_path_setting,
    ),
    Setting(
        "tls_key",
        "--tls-key",
        "FILE",
        "the PEM private key of --tls-cert",
        parse_path_setting,
    ),
    Setting(
        "tls_ca",
        "--tls-ca",
        "FILE",
        "PEM CA certificates that the TLS peers this node dials must be signed by (default: the "
        "system's trust store); with --tls-verify-clients, also the clients that connect",
        parse_path_setting,
    ),
    Setting(
        "tls_verify_clients",
        "--tls-verify-clients",
        "",
        "mTLS: refuse nodes and apps that connect without a certificate signed by --tls-ca "
        "(default off; the second flag turns it off over the environment and the file)",
        parse_switch,
        switch=True,
    ),
    Setting(
        "peers",
        "--peer",
        "URL",
        "a peer to link to, ws://HOST:PORT/PATH, http://HOST:PORT/PATH (needs --listen-http), "
        "tcp://HOST:PORT (needs --listen-tcp), their TLS forms, or HOST:PORT; repeat the flag for several (environment: comma-separated; TOML: a list)",
        parse_peers,
        repeatable=True,
    ),
    Setting(
        "discovery",
        "--discovery",
        "MODE",
        "how peers are found: static (only the --peer list), mdns (mDNS on the LAN, plus the "
        "--peer list) or none (only accept links) (default static)",
        parse_discovery,
    ),
    Setting(
        "mdns_interfaces",
        "--mdns-interface",
        "IP",
        "with mdns: an interface address to advertise and browse on; repeat for several "
        "(default: every interface)",
        parse_interfaces,
        repeatable=True,
    ),
    Setting(
        "mdns_service",
        "--mdns-service",
        "TYPE",
        "with mdns: the DNS-SD service type (default _grav._tcp.local.)",
        parse_service,
    ),
    Setting(
        "monitor",
        "--monitor",
        "HOST:PORT",
        "the monitoring HTTP address, or 'off' (default 127.0.0.1:8222)",
        parse_address_or_off,
    ),
    Setting(
        "mesh",
        "--mesh",
        "NAME",
        "the mesh this node belongs to: printable text without spaces or control characters, "
        "at most 255 characters (with mdns, 250 bytes in UTF-8); '*' links with any mesh "
        "(default '*')",
        parse_name,
    ),
    Setting(
        "mesh_key_file",
        "--mesh-key-file",
        "PATH",
        f"a file holding the mesh key (at least {MIN_KEY_BYTES} bytes, the same on every node)",
        parse_path_setting,
    ),
    Setting(
        "data_dir",
        "--data-dir",
        "PATH",
        "the directory gravd keeps its files in (events.sqlite3, ...) (default "
        "$XDG_STATE_HOME/gravd, else ~/.local/state/gravd)",
        parse_data_dir,
    ),
    Setting(
        "buffer_size",
        "--buffer-size",
        "COUNT",
        "messages kept in the replay buffer, which apps replay (connect_with_replay) and peers "
        "resume from after a link flap (default 4096)",
        parse_count,
    ),
    Setting(
        "buffer_bytes",
        "--buffer-bytes",
        "BYTES",
        "at most this much message data in the replay buffer; 0: no bound (default 67108864)",
        parse_count,
    ),
    Setting(
        "buffer_age",
        "--buffer-age",
        "SECONDS",
        "messages older than this leave the replay buffer; 0: no bound (default 3600)",
        parse_seconds,
    ),
    Setting(
        "buffer_durable",
        "--buffer-durable",
        "on|off",
        "keep the replay buffer in replay.sqlite3 in the data dir, so a restarted gravd still "
        "replays it (default on; off moves an old replay.sqlite3 aside, so it never replays)",
        parse_switch,
    ),
    Setting(
        "log_format",
        "--log-format",
        "FORMAT",
        "console, json, or auto: console on a terminal, JSON lines otherwise (default auto)",
        choice("log_format", LOG_FORMATS),
    ),
    Setting(
        "log_level",
        "--log-level",
        "LEVEL",
        "debug, info, warning, error or critical (default info)",
        choice("log_level", LOG_LEVELS),
    ),
    Setting(
        "loop",
        "--loop",
        "LOOP",
        "the event loop: uvloop (pip install 'gravpy[speed]'), asyncio, or auto: uvloop when it "
        "is installed (default auto)",
        parse_loop,
    ),
    Setting(
        "drain_timeout",
        "--drain-timeout",
        "SECONDS",
        "how long shutdown waits for peers to acknowledge and queues to drain (default 2)",
        parse_seconds,
    ),
    Setting(
        "ping_interval",
        "--ping-interval",
        "SECONDS",
        "how often a quiet link is pinged, above 0 (default 2; the same on every node)",
        parse_interval,
    ),
    Setting(
        "dead_after",
        "--dead-after",
        "SECONDS",
        "silence after which a peer is declared dead, longer than the ping interval (default 6)",
        parse_seconds,
    ),
    Setting(
        "max_connections",
        "--max-connections",
        "N",
        "connections open at once: the node's accepted links over all listeners together, and "
        "each WebSocket or HTTP listener's sockets; past it one is closed at once and counted "
        "(gravd_connections_refused) (default 1024)",
        parse_positive,
    ),
    Setting(
        "max_upgrading",
        "--max-upgrading",
        "N",
        "WebSocket sockets accepted but not yet upgraded, and TCP connections not yet greeted "
        "(TLS handshake included), at once; past "
        "it a newcomer replaces the oldest one silent for a second, else is refused and counted "
        "(gravd_connections_refused) (default 128)",
        parse_positive,
    ),
    Setting(
        "dashboard",
        "--dashboard",
        "on|off",
        "serve the web dashboard on the monitoring address (default on)",
        parse_switch,
    ),
    Setting(
        "dashboard_tail",
        "--dashboard-tail",
        "on|off",
        "let the dashboard show the live tail of messages, which shows their data (default on)",
        parse_switch,
    ),
    Setting(
        "dashboard_token_file",
        "--dashboard-token-file",
        "PATH",
        "a file holding the token the dashboard asks for; needed when the monitor listens "
        "beyond loopback (without one the dashboard refuses there)",
        parse_path_setting,
    ),
    *_BRIDGE_SETTINGS,
    Setting(
        "identity",
        "--identity",
        "PATH",
        "this node's Ed25519 key (gravctl keygen PATH): it signs every handshake",
        parse_path_setting,
    ),
    Setting(
        "auth_file",
        "--auth-file",
        "PATH",
        "a TOML file of the identities this node accepts and what each may publish and "
        "receive; SIGHUP re-reads it (default: accept every link)",
        parse_path_setting,
    ),
)
BY_NAME: Final = {s.name: s for s in SETTINGS}


def add_flags(parser: argparse.ArgumentParser) -> None:
    """Give ``parser`` every setting's flag, each storing under the setting's name (None when not
    given): a switch takes no value and has an off form (True or False), a repeatable setting
    appends, any other stores its text."""
    for setting in SETTINGS:
        help_text = f"{setting.help}; env {setting.env}"
        if setting.switch:
            parser.add_argument(  # (the action adds the off form, ``off_flag``)
                setting.flag,
                dest=setting.name,
                action=argparse.BooleanOptionalAction,
                help=help_text,
            )
            continue
        action = "append" if setting.repeatable else "store"
        parser.add_argument(
            setting.flag, dest=setting.name, metavar=setting.metavar, action=action, help=help_text
        )
