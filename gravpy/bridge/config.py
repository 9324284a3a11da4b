"""``NatsBridgeConfig`` (what a bridge is told) and ``NatsBridgeStatistics`` (what it reports)."""

from __future__ import annotations

import math
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gravpy.backoff import BackoffPolicy
from gravpy.errors import UsageError
from gravpy.filter import Pattern

__all__ = [
    "NatsBridgeConfig",
    "NatsBridgeStatistics",
    "auth_options",
    "check_prefix",
    "check_url",
    "export_patterns",
    "read_token",
    "shown_url",
]

_SCHEMES = ("nats://", "tls://", "ws://", "wss://")
# first tokens of subjects a prefix may not take: nats-py's reply subjects (the bridge would take
# other clients' replies for messages) and the bridges' announcements (a type would pose as one)
_RESERVED = {"_INBOX": "nats-py's reply subjects", "_GRAV_BRIDGE": "the bridges' announcements"}
_PREFIX_LENGTH = 255  # (with a pattern's 3 KB of escaped tokens, a SUB line stays under 4 KB)
_BACKOFF = BackoffPolicy(initial=0.2, maximum=10.0)
_JWT_MARK = "-----BEGIN NATS USER JWT-----"
_BASE32 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
_SEED_LENGTH = 58  # an NKEY seed: "S", its type ("U": a user), 56 base32 characters


@dataclass(frozen=True, slots=True)
class NatsBridgeConfig:
    """How to reach NATS and what to carry. ``servers``: seed URLs of one server or cluster
    (``tls://`` for TLS); ``prefix``: the first subject token; ``export``: type patterns published
    whether or not a mesh asked (for plain NATS subscribers); ``creds`` (a ``.creds`` file: user
    JWT and NKEY seed, or a file holding only an NKEY user seed) / ``token`` / ``token_file``:
    credentials; ``ca``: the CA file that signs the NATS servers' certificates (default: the
    system's). Files are read at each connect, so a fixed file is picked up by the next retry.

    ``queue_limit`` bounds the messages waiting to be published (the newest is dropped when full,
    counted ``queue_full``); past ``high_water`` of them ``Pod.publish`` waits, as for a full link; ``pending_bytes`` is nats-py's buffer while it reconnects;
    ``announce_interval`` / ``ttl``: how often bridges announce their mesh's interests and when a
    silent bridge is forgotten; ``shadow_limit``: how many messages a standby bridge holds for a
    takeover (``gravpy.bridge.shadow``; past it the oldest is dropped, counted ``shadow_overflow``).
    """

    servers: tuple[str, ...]
    prefix: str = "gravpy"
    export: tuple[str, ...] = ()
    creds: Path | None = None
    token: str | None = field(default=None, repr=False)
    token_file: Path | None = None
    ca: Path | None = None
    queue_limit: int = 65_536
    high_water: int = 4096
    request_limit: int = 65_536
    pending_bytes: int = 8 * 1024 * 1024
    shadow_limit: int = 131_072
    announce_interval: float = 1.0
    ttl: float = 3.5
    connect_timeout: float = 2.0
    reconnect_wait: float = 0.5
    reconnect_attempts: int = 10
    backoff: BackoffPolicy = _BACKOFF

    def __post_init__(self) -> None:
        if isinstance(self.servers, str):
            raise UsageError("NatsBridgeConfig.servers is a tuple of URLs, not one str")
        if not self.servers:
            raise UsageError("a NATS bridge needs at least one server URL")
        for url in self.servers:
            check_url(url)
        for name in ("creds", "token_file", "ca"):  # (a path given as a str is a path)
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))
        try:
            check_prefix(self.prefix)
        except UsageError as exc:
            raise UsageError(f"NatsBridgeConfig.prefix: {exc}") from None
        if isinstance(self.export, str):
            raise UsageError("NatsBridgeConfig.export is a tuple of patterns, not one str")
        try:
            _check_patterns(self.export)
        except UsageError as exc:
            raise UsageError(f"NatsBridgeConfig.export: {exc}") from None
        if not 1 <= self.high_water <= self.queue_limit or self.request_limit < 2:
            raise UsageError("need 1 <= high_water <= queue_limit and request_limit >= 2")
        if self.shadow_limit < 1:
            raise UsageError("shadow_limit must be at least 1")
        for name in ("announce_interval", "ttl", "connect_timeout", "pending_bytes"):
            value = getattr(self, name)  # (0 would announce in a busy loop, or never connect)
            if not 0 < value < math.inf:
                raise UsageError(f"NatsBridgeConfig.{name} must be above 0, got {value!r}")
        if not 0 <= self.reconnect_wait < math.inf:
            raise UsageError(
                f"NatsBridgeConfig.reconnect_wait must be 0 or more, got {self.reconnect_wait!r}"
            )
        if self.ttl <= self.announce_interval:
            raise UsageError("ttl must be longer than announce_interval")


def check_url(url: object) -> str:
    """``url`` if nats-py can connect to what it names, else ``UsageError`` saying why (the URL
    shown without its credentials): a scheme it speaks, a host, and a port, if given, from 1 to
    65535. (nats-py would say only "invalid connect url option", at every attempt.)"""
    if not isinstance(url, str) or not url.startswith(_SCHEMES):
        shown = shown_url(url) if isinstance(url, str) else url
        raise UsageError(f"{shown!r} is not a NATS URL (nats://, tls://, ws://, wss://)")
    shown = shown_url(url)
    if any(c.isspace() for c in url):
        raise UsageError(f"the NATS URL {shown!r} has whitespace in it")
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = 0
    if not parts.hostname:
        raise UsageError(f"the NATS URL {shown!r} names no host: give scheme://HOST:PORT")
    if port == 0:
        raise UsageError(f"the NATS URL {shown!r} has a port that is not one (1 to 65535)")
    return url


def check_prefix(prefix: object) -> str:
    """``prefix`` if a bridge may put its subjects under it, else ``UsageError`` saying why:
    dot-separated tokens of printable characters without whitespace or wildcards, at most
    255 characters, not starting with ``_INBOX`` (nats-py's reply subjects), ``_GRAV_BRIDGE``
    (the bridges' announcements) or ``$`` (NATS's own subjects: ``$SYS``, JetStream's
    ``$JS``)."""
    if not isinstance(prefix, str) or not prefix:
        raise UsageError(f"{prefix!r} is not a NATS subject prefix like 'gravpy'")
    tokens = prefix.split(".")
    if any(not t or not t.isprintable() or " " in t or "*" in t or ">" in t for t in tokens):
        raise UsageError(
            f"{prefix!r} is not a NATS subject prefix (dot-separated tokens of printable "
            "characters, no whitespace or wildcards)"
        )
    taken = "NATS's own subjects ($SYS, $JS...)" if prefix[0] == "$" else _RESERVED.get(tokens[0])
    if taken is not None:
        raise UsageError(f"{prefix!r}: {taken} are there; choose another prefix")
    if len(prefix) > _PREFIX_LENGTH:
        raise UsageError(f"a NATS subject prefix has at most {_PREFIX_LENGTH} characters")
    return prefix


def export_patterns(value: object) -> tuple[str, ...]:
    """The export patterns a setting's raw ``value`` gives (a str, or a list of them, each
    comma-separated), each checked: ``UsageError`` for an empty one, or one with whitespace
    (never split into two or dropped), or any other pattern that is not one."""
    items = value if isinstance(value, list | tuple) else [value]
    patterns: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise UsageError(f"{item!r} is not a type pattern")
        patterns.extend(p.strip() for p in item.split(","))
    _check_patterns(patterns)
    return tuple(dict.fromkeys(patterns))


def _check_patterns(patterns: Iterable[object]) -> None:
    for pattern in patterns:
        if pattern == "":
            raise UsageError("an empty pattern: give each --nats-export a type pattern")
        if isinstance(pattern, str) and any(c.isspace() for c in pattern):
            raise UsageError(
                f"{pattern!r} is not one type pattern (it has whitespace): give each pattern "
                "its own --nats-export, or separate them with commas"
            )
        Pattern(pattern)  # raises UsageError


@dataclass(frozen=True, slots=True)
class NatsBridgeStatistics:
    """A snapshot of one bridge: ``state`` is idle, connecting, connected (the server has the
    subscriptions for what the mesh wants), reconnecting, closing or closed; ``lost`` counts
    messages that could not cross, by reason.

    ``last_error`` is the bridge's latest error (a failed connection attempt, a dropped
    connection, a bug that ended one) and ``last_error_at`` when it happened (Unix time; None
    if there was none). Both are kept after the bridge connects again, so they say why it last
    failed; ``connected_since`` (Unix time; None while not connected) says since when it is
    connected, so an error from before then is a past one."""

    state: str
    servers: tuple[str, ...]
    exporter: bool
    connects: int
    exported: int
    imported: int
    queued: int
    lost: dict[str, int]
    mesh_wants: tuple[str, ...]
    remote_wants: tuple[str, ...]
    remote_meshes: tuple[str, ...]
    last_error: str
    failed_connects: int = 0  # connection attempts that failed (unreachable, TLS, auth)
    ready: bool = False  # heard the other bridges: may be elected its mesh's active bridge
    mesh_groups: tuple[str, ...] = ()  # "<group> <pattern>" this mesh has members of
    remote_groups: tuple[str, ...] = ()  # "<group> <pattern>" other meshes have members of
    held: int = 0  # messages a standby holds in its shadow now
    recovered: int = 0  # delivered from the shadow on taking over
    struck: int = 0  # held, then seen delivered by the active bridge
    shadow_expired: int = 0  # held past the shadow's age, never seen delivered
    standby_exported: int = 0  # exported while standing by: the active bridge could not take them
    remote_expired: int = 0  # other bridges forgotten for falling silent past the ttl
    errors: int = 0  # connections the bridge ended on an unexpected error, then reconnected
    export_held: int = 0  # messages a standby holds now until NATS echoes their export
    export_recovered: int = 0  # held exports a standby published (the active did not, it seemed)
    export_expired: int = 0  # held exports never echoed within the shadow's age
    export_struck: int = 0  # held exports heard back from NATS: the active bridge published them
    failures_unsent: int = 0  # failure replies for losses under load over the budget: not sent
    last_error_at: float | None = None  # when ``last_error`` happened (Unix time)
    connected_since: float | None = None  # when it last became connected (None: it is not)

    def as_json(self) -> dict[str, object]:
        return {
            "state": self.state,
            "servers": list(self.servers),
            "exporter": self.exporter,
            "connects": self.connects,
            "exported": self.exported,
            "imported": self.imported,
            "queued": self.queued,
            "lost": dict(self.lost),
            "mesh_wants": list(self.mesh_wants),
            "remote_wants": list(self.remote_wants),
            "remote_meshes": list(self.remote_meshes),
            "last_error": self.last_error,
            "last_error_at": _iso(self.last_error_at),
            "connected_since": _iso(self.connected_since),
            "failed_connects": self.failed_connects,
            "ready": self.ready,
            "mesh_groups": list(self.mesh_groups),
            "remote_groups": list(self.remote_groups),
            "held": self.held,
            "recovered": self.recovered,
            "struck": self.struck,
            "shadow_expired": self.shadow_expired,
            "standby_exported": self.standby_exported,
            "remote_expired": self.remote_expired,
            "errors": self.errors,
            "export_held": self.export_held,
            "export_recovered": self.export_recovered,
            "export_expired": self.export_expired,
            "export_struck": self.export_struck,
            "failures_unsent": self.failures_unsent,
        }


def _iso(at: float | None) -> str | None:
    """``at`` (Unix time) as ``/v1/node`` shows times: ISO 8601 in UTC."""
    return None if at is None else datetime.fromtimestamp(at, UTC).isoformat()


def auth_options(config: NatsBridgeConfig) -> dict[str, Any]:
    """nats-py's connect options for ``config``'s credentials and TLS. Reads the files: raises
    ``OSError`` (``ssl.SSLError`` is one) when one is missing or not what it should be."""
    options: dict[str, Any] = {}
    if config.creds is not None:
        text = _read_text(config.creds, "credentials")
        if _JWT_MARK in text:
            options["user_credentials"] = str(config.creds)
        elif _is_seed(text.strip()):
            options["nkeys_seed"] = str(config.creds)
        else:
            raise OSError(
                f"the NATS credentials file {config.creds} is neither a .creds file nor an NKEY "
                f"user seed (SU and 56 base32 characters)"
            )
    if config.token is not None:
        options["token"] = config.token
    elif config.token_file is not None:
        options["token"] = read_token(config.token_file)
    if config.ca is not None or any(u.startswith(("tls://", "wss://")) for u in config.servers):
        options["tls"] = ssl.create_default_context(
            cafile=str(config.ca) if config.ca is not None else None
        )
    return options


def read_token(path: Path) -> str:
    """The NATS token in ``path``, without surrounding whitespace; raises ``OSError``."""
    token = _read_text(path, "token").strip()
    if not token:
        raise OSError(f"the NATS token file {path} is empty")
    return token


def _read_text(path: Path, what: str) -> str:
    """The text of the NATS ``what`` file ``path``; raises ``OSError`` naming the file, also
    for one that is not UTF-8 text (a ``ValueError``, which the bridge would not retry)."""
    try:
        return path.read_text()
    except UnicodeDecodeError as exc:
        raise OSError(f"the NATS {what} file {path} is not UTF-8 text: {exc.reason}") from None


def _is_seed(text: str) -> bool:
    """True if ``text`` has the shape of an NKEY user seed (nats-py checks the rest)."""
    return len(text) == _SEED_LENGTH and text.startswith("SU") and _BASE32.issuperset(text)


def shown_url(url: str) -> str:
    """``url`` as logs, documents and metric labels show it: its credentials (``user:password@``
    or ``token@``) replaced by ``***``."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]).geturl()
