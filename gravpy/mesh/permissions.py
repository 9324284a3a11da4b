"""Who may link, and which message types each identity may publish and receive.

Theory of operation
-------------------
An ``Authority`` is the parsed auth file (``gravd --auth-file``): identities, each known by an
Ed25519 public key or a token, each with ``publish`` and ``subscribe`` rules, plus the rules of
the anonymous default (no credential), which by default may not link at all once an auth file
is in force. ``admit`` turns what a link proved in its handshake into an ``Identity`` or a
refusal with a reason the remote is told (``unknown_key``, ``not_allowed``).

``TypeRules`` are allow/deny lists of type patterns (``*`` one token, ``>`` the rest); deny wins,
and an empty allow list allows nothing. Everything here is pure: no sockets, no clock, no logging.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gravpy.errors import UsageError
from gravpy.filter import Pattern
from gravpy.identity import parse_public_key
from gravpy.proto.frames import is_valid_pattern
from gravpy.proto.handshake import REASON_NOT_ALLOWED, REASON_UNKNOWN_KEY

__all__ = ["ANONYMOUS", "Authority", "Identity", "Refusal", "TypeRules", "parse_authority"]


@dataclass(frozen=True, slots=True)
class TypeRules:
    """Allow/deny lists of type patterns; deny wins; nothing allowed unless some allow matches."""

    allow: tuple[str, ...] = (">",)
    deny: tuple[str, ...] = ()
    _allow: tuple[Pattern, ...] = field(init=False, repr=False, compare=False)
    _deny: tuple[Pattern, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for pattern in (*self.allow, *self.deny):
            if not isinstance(pattern, str) or not is_valid_pattern(pattern):
                raise UsageError(f"{pattern!r} is not a type pattern")
        object.__setattr__(self, "_allow", tuple(Pattern(p) for p in self.allow))
        object.__setattr__(self, "_deny", tuple(Pattern(p) for p in self.deny))

    @property
    def allows_all(self) -> bool:
        """True if every type is allowed (the default rules)."""
        return ">" in self.allow and not self.deny

    def allows(self, msg_type: str) -> bool:
        """True if ``msg_type`` matches an allow pattern and no deny pattern."""
        if any(p.matches(msg_type) for p in self._deny):
            return False
        return any(p.matches(msg_type) for p in self._allow)

    def narrowed(self, pattern: str) -> tuple[str, ...]:
        """The parts of ``pattern`` these rules allow, as patterns: ``pattern`` met with each
        allow pattern, less the parts a deny pattern covers whole (a deny that covers only part
        of one cannot be taken out of a pattern: that part stays, and is refused where it is
        delivered). ``("sensor.*",)`` for ``>`` under ``allow = ["sensor.*"]``."""
        if self.allows_all:
            return (pattern,)
        tokens = pattern.split(".")
        met = [m for a in self.allow if (m := _meet(a.split("."), tokens)) is not None]
        kept = [m for m in met if not any(_covers(d.split("."), m) for d in self.deny)]
        return tuple(
            sorted(
                {
                    ".".join(m)
                    for m in kept
                    if not any(o != m and _covers(o, m) for o in kept)  # (none inside another)
                }
            )
        )

    def forbids_all_of(self, pattern: str) -> bool:
        """True if no type matching ``pattern`` is allowed: a deny pattern covers all of it, or
        no allow pattern shares a type with it."""
        tokens = pattern.split(".")
        if any(_covers(d.split("."), tokens) for d in self.deny):
            return True
        return not any(_overlaps(a.split("."), tokens) for a in self.allow)


def _covers(general: list[str], specific: list[str]) -> bool:
    """True if every type matching ``specific`` matches ``general`` (patterns as token lists)."""
    if not general:
        return not specific
    if general[0] == ">":
        return bool(specific)
    if not specific or specific[0] == ">":
        return False
    if general[0] != "*" and general[0] != specific[0]:
        return False
    return _covers(general[1:], specific[1:])


def _meet(a: list[str], b: list[str]) -> list[str] | None:
    """The pattern (as tokens) of the types matching both ``a`` and ``b``; None if there are
    none. (``>`` matches one token or more, so it meets a non-empty rest as that rest.)"""
    if not a or not b:
        return [] if not a and not b else None
    if a[0] == ">":
        return b
    if b[0] == ">":
        return a
    if a[0] != "*" and b[0] != "*" and a[0] != b[0]:
        return None
    rest = _meet(a[1:], b[1:])
    return None if rest is None else [b[0] if a[0] == "*" else a[0], *rest]


def _overlaps(a: list[str], b: list[str]) -> bool:
    """True if some type matches both patterns (as token lists)."""
    if not a or not b:
        return not a and not b
    if ">" in (a[0], b[0]):
        return True
    if "*" not in (a[0], b[0]) and a[0] != b[0]:
        return False
    return _overlaps(a[1:], b[1:])


@dataclass(frozen=True, slots=True)
class Identity:
    """A name and what it may publish and receive."""

    name: str
    publish: TypeRules = field(default_factory=TypeRules)
    subscribe: TypeRules = field(default_factory=TypeRules)
    public_key: bytes = b""
    token: str = ""


ANONYMOUS = "anonymous"


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a link is refused: a reason code (sent in REJECT) and a detail for the one refused."""

    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class Authority:
    """The identities a node accepts; ``anonymous`` is the default's rules (None: refused)."""

    identities: tuple[Identity, ...] = ()
    anonymous: Identity | None = None

    def screen(self, public_key: bytes, has_token: bool) -> Refusal | None:
        """Why a HELLO can be refused before anything is proved (an unlisted key; no key or
        token where only listed identities may link), or None: ``admit`` decides after AUTH."""
        if public_key:
            if any(identity.public_key == public_key for identity in self.identities):
                return None
            return Refusal(REASON_UNKNOWN_KEY, "this node does not list the public key presented")
        if has_token or self.anonymous is not None:
            return None
        return Refusal(REASON_NOT_ALLOWED, "this node accepts only listed identities")

    def admit(self, public_key: bytes, token: str) -> Identity | Refusal:
        """The identity a link proved (a verified key, or a token), or why it is refused."""
        if public_key:
            for identity in self.identities:
                if identity.public_key == public_key:
                    return identity
            return Refusal(REASON_UNKNOWN_KEY, "this node does not list the public key presented")
        if token:
            for identity in self.identities:
                # (as bytes: compare_digest refuses a str that is not ASCII)
                if identity.token and hmac.compare_digest(identity.token.encode(), token.encode()):
                    return identity
            return Refusal(REASON_UNKNOWN_KEY, "this node does not accept the token presented")
        if self.anonymous is None:
            return Refusal(REASON_NOT_ALLOWED, "this node accepts only listed identities")
        return self.anonymous


def _rules(doc: Mapping[str, Any], key: str, where: str) -> TypeRules:
    section = doc.get(key, {})
    if not isinstance(section, Mapping) or set(section) - {"allow", "deny"}:
        raise UsageError(f"{where}.{key} must be a table with allow and deny lists")
    allow, deny = section.get("allow", [">"]), section.get("deny", [])
    if not isinstance(allow, list) or not isinstance(deny, list):
        raise UsageError(f"{where}.{key}.allow and .deny must be lists of type patterns")
    return TypeRules(tuple(allow), tuple(deny))


_IDENTITY_KEYS = frozenset(("name", "public_key", "token", "publish", "subscribe"))


def _identity(doc: Mapping[str, Any], where: str) -> Identity:
    if not isinstance(doc, Mapping):
        raise UsageError(f"{where} must be a table")
    unknown = set(doc) - _IDENTITY_KEYS
    if unknown:  # a misspelt "publsh" must not leave publishing open to everything
        raise UsageError(
            f"{where}: unknown keys {sorted(unknown)} (known: {sorted(_IDENTITY_KEYS)})"
        )
    name = doc.get("name", where)
    key, token = doc.get("public_key", ""), doc.get("token", "")
    if not isinstance(name, str) or not isinstance(key, str) or not isinstance(token, str):
        raise UsageError(f"{where}: name, public_key and token are strings")
    return Identity(
        name,
        _rules(doc, "publish", where),
        _rules(doc, "subscribe", where),
        parse_public_key(key) if key else b"",
        token,
    )


def parse_authority(doc: Mapping[str, Any]) -> Authority:
    """An ``Authority`` from a parsed auth file (``UsageError`` naming what is wrong).

    ``[[identities]]`` each with ``name``, ``public_key`` or ``token``, ``publish`` and
    ``subscribe`` (``{allow = [...], deny = [...]}``); an optional ``[anonymous]`` table gives
    the rules of links without credentials (without it, they are refused)."""
    unknown = set(doc) - {"identities", "anonymous"}
    if unknown:
        raise UsageError(f"unknown auth file sections: {sorted(unknown)}")
    raw = doc.get("identities", [])
    if not isinstance(raw, list):
        raise UsageError("identities must be an array of tables ([[identities]])")
    identities = tuple(_identity(item, f"identities[{i}]") for i, item in enumerate(raw))
    for i, identity in enumerate(identities):
        if not identity.public_key and not identity.token:
            raise UsageError(f"identities[{i}] ({identity.name}) needs a public_key or a token")
    anonymous = _identity(doc["anonymous"], ANONYMOUS) if "anonymous" in doc else None
    return Authority(identities, anonymous)


GRANT_TYPE = "gravpy.permissions"  # the node tells an attached app what it may do (JSON)


def grant_data(identity: Identity) -> bytes:
    """The data of a grant notice: the identity's rules as JSON."""
    rules = {
        "name": identity.name,
        "publish": {"allow": list(identity.publish.allow), "deny": list(identity.publish.deny)},
        "subscribe": {
            "allow": list(identity.subscribe.allow),
            "deny": list(identity.subscribe.deny),
        },
    }
    return json.dumps(rules).encode()


def read_grant(data: bytes) -> Identity | None:
    """The identity in a grant notice, or None if it does not parse (ignored, never raised)."""
    try:
        doc = json.loads(data)
        return _identity(doc, "grant")
    except (ValueError, UsageError, TypeError):
        return None
