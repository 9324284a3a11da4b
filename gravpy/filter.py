"""Type patterns and the allow/deny filter a pod applies to what it receives. Pure.

A pattern is a message type whose tokens may be wildcards: ``*`` matches exactly one token and ``>``,
only as the last token, matches one or more trailing tokens. ``sensor.*.temp`` matches
``sensor.kitchen.temp``; ``sensor.>`` matches ``sensor.kitchen`` and ``sensor.kitchen.temp`` but not
``sensor``.

A ``Filter`` holds allow and deny rules for types (patterns) and for message uuids (exact):

- a message whose type matches a *deny* pattern, or whose uuid is denied, is refused;
- if there are *allow* patterns, the type must match one of them (likewise for allowed uuids);
- with no rules at all, everything is admitted.

Allowing a pattern removes the same pattern from the deny rules and the other way round.
"""

from __future__ import annotations

import re
from typing import Final

from gravpy.errors import UsageError
from gravpy.message import MAX_TYPE_LENGTH

__all__ = ["Filter", "Pattern"]

_TOKEN_RE: Final = re.compile(r"[^.\s*>]+")
_CACHE_LIMIT: Final = 4096


class Pattern:
    """A compiled type pattern. ``Pattern("sensor.*.temp").matches("sensor.hall.temp")``."""

    __slots__ = ("_literal", "_tail", "_tokens", "text")

    def __init__(self, text: object) -> None:
        if not isinstance(text, str) or not text or len(text) > MAX_TYPE_LENGTH:
            raise UsageError(f"invalid type pattern {text!r}")
        try:
            text.encode()  # a pattern travels to peers in INTERESTS, as UTF-8
        except UnicodeEncodeError:
            raise UsageError(f"invalid type pattern {text!r}: not valid Unicode") from None
        tokens = text.split(".")
        for i, tok in enumerate(tokens):
            wildcard = tok == "*" or (tok == ">" and i == len(tokens) - 1)
            if not wildcard and _TOKEN_RE.fullmatch(tok) is None:
                raise UsageError(
                    f"invalid type pattern {text!r}: tokens are non-empty, '*' matches one token, "
                    "'>' may only end a pattern"
                )
        self.text = text
        self._tail = tokens[-1] == ">"
        self._tokens = tuple(tokens[:-1] if self._tail else tokens)
        self._literal = "*" not in tokens and not self._tail

    @property
    def is_literal(self) -> bool:
        """True if the pattern has no wildcard (it matches exactly one type)."""
        return self._literal

    def matches(self, msg_type: str) -> bool:
        """True if ``msg_type`` matches this pattern."""
        if self._literal:
            return msg_type == self.text
        parts = msg_type.split(".")
        n = len(self._tokens)
        if self._tail:
            if len(parts) <= n:
                return False
        elif len(parts) != n:
            return False
        for want, got in zip(self._tokens, parts, strict=False):
            if want != "*" and want != got:
                return False
        return True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pattern) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        return f"Pattern({self.text!r})"


class Filter:
    """Allow/deny rules on message types (patterns) and uuids. See the module docstring."""

    __slots__ = ("_cache", "_type_allow", "_type_deny", "_uuid_allow", "_uuid_deny")

    def __init__(self) -> None:
        self._type_allow: dict[str, Pattern] = {}
        self._type_deny: dict[str, Pattern] = {}
        self._uuid_allow: set[str] = set()
        self._uuid_deny: set[str] = set()
        self._cache: dict[str, bool] = {}

    def filter_type(self, pattern: object, allow: bool) -> None:
        """Allow or deny the types matching ``pattern``."""
        compiled = Pattern(pattern)
        add, remove = (
            (self._type_allow, self._type_deny) if allow else (self._type_deny, self._type_allow)
        )
        remove.pop(compiled.text, None)
        add[compiled.text] = compiled
        self._cache.clear()

    def set_type_allow(self, patterns: list[str]) -> None:
        """Replace the allowed type patterns with exactly ``patterns`` (deny rules stay)."""
        compiled = {p: Pattern(p) for p in patterns}
        self._type_allow = compiled
        for p in compiled:
            self._type_deny.pop(p, None)
        self._cache.clear()

    def filter_uuid(self, uuid: object, allow: bool) -> None:
        """Allow or deny the message with this uuid."""
        if not isinstance(uuid, str) or not uuid:
            raise UsageError(f"invalid message uuid {uuid!r}")
        add, remove = (
            (self._uuid_allow, self._uuid_deny) if allow else (self._uuid_deny, self._uuid_allow)
        )
        remove.discard(uuid)
        add.add(uuid)

    @property
    def has_uuid_rules(self) -> bool:
        """True if any uuid rule is set (the bus checks uuids only for such pods)."""
        return bool(self._uuid_allow or self._uuid_deny)

    def allowed_patterns(self) -> tuple[str, ...] | None:
        """The allow patterns, or None when every type not denied is admitted."""
        return tuple(self._type_allow) if self._type_allow else None

    def admits_type(self, msg_type: str) -> bool:
        """True if a message of this type passes the type rules."""
        cached = self._cache.get(msg_type)
        if cached is not None:
            return cached
        ok = not any(p.matches(msg_type) for p in self._type_deny.values()) and (
            not self._type_allow or any(p.matches(msg_type) for p in self._type_allow.values())
        )
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[msg_type] = ok
        return ok

    def admits_uuid(self, uuid: str) -> bool:
        """True if a message with this uuid passes the uuid rules."""
        if uuid in self._uuid_deny:
            return False
        return not self._uuid_allow or uuid in self._uuid_allow

    def admits(self, msg_type: str, uuid: str) -> bool:
        """True if a message passes every rule."""
        return self.admits_type(msg_type) and self.admits_uuid(uuid)
