"""Structured events: what happened, to what, for whom, how bad, checked once and then frozen.

Theory of operation. An ``Event`` is made by ``Event.builder()`` (``gravpy.events.builder``) or
read back by ``Event.from_dict``; both end in ``Event.checked``, which applies every rule below and
raises ``EventError`` naming the first field that breaks one. After that an event cannot change: it
is a frozen dataclass and its metadata is held as canonical JSON text (``metadata_json``), so the
``metadata`` property hands out a fresh copy each time. ``to_dict`` gives plain JSON- and
msgpack-safe values; ``Event.from_dict(ev.to_dict()) == ev``.

The rules:

- ``id``, ``operation_id``, ``acted_upon``, ``user_id``, ``system_id`` are UUIDs (stored in their
  canonical lowercase form); ``acted_upon``, ``user_id`` and ``system_id`` may be absent (None).
- ``category`` and ``action`` are snake_case (``^[a-z][a-z0-9]*(_[a-z0-9]+)*$``, at most 64).
- ``severity`` is a ``Severity``; ``error`` or worse needs metadata ``err`` (a non-empty value).
- ``description`` is a non-empty str of at most 4096 characters, valid Unicode (no lone
  surrogate, which neither SQLite nor msgpack can encode); so is every str in ``metadata``.
- ``metadata`` maps str to values that are both JSON- and msgpack-encodable, at most 16 KiB as
  JSON; its ``doc``, when present, is an ``http(s)://`` URL with a host.
- ``status`` is ``unread`` or ``read``; ``created_at`` is a Unix time in seconds, from 1970 to the year 9999.
"""

from __future__ import annotations

import enum
import json
import math
import re
import uuid as uuidlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import msgpack

from gravpy.errors import UsageError

if TYPE_CHECKING:
    from gravpy.events.builder import EventBuilder

__all__ = [
    "DESCRIPTION_LIMIT",
    "METADATA_LIMIT",
    "NAME_LIMIT",
    "Event",
    "EventError",
    "EventStatus",
    "Severity",
]

NAME_LIMIT: Final = 64
DESCRIPTION_LIMIT: Final = 4096
METADATA_LIMIT: Final = 16 * 1024
_TIME_LIMIT: Final = 253_402_300_800  # 10000-01-01T00:00:00Z: a time any clock can print
_SNAKE: Final = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")


class EventError(UsageError):
    """An event breaks a rule. ``field`` names the field, ``problem`` says what is wrong.

    A ``UsageError`` (and so a ``ValueError``): the caller built or sent a bad event, nothing broke.
    """

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"invalid event {field}: {problem}")
        self.field = field
        self.problem = problem


class Severity(enum.Enum):
    """How much attention an event asks for: syslog's eight levels, with ``success`` beside them."""

    EMERGENCY = "emergency"
    ALERT = "alert"
    CRITICAL = "critical"
    ERROR = "error"
    WARNING = "warning"
    INFORMATIONAL = "informational"
    DEBUG = "debug"
    SUCCESS = "success"

    @property
    def is_error(self) -> bool:
        """True for ``error`` and worse (these events must carry metadata ``err``)."""
        return self in _ERRORS

    @classmethod
    def parse(cls, value: object) -> Severity:
        """A ``Severity`` from itself or its name in any case; raises ``EventError``."""
        if isinstance(value, Severity):
            return value
        if isinstance(value, str):
            try:
                return cls(value.strip().lower())
            except ValueError:
                pass
        names = ", ".join(s.value for s in cls)
        raise EventError("severity", f"{value!r} is not one of {names}")


_ERRORS: Final = frozenset({Severity.EMERGENCY, Severity.ALERT, Severity.CRITICAL, Severity.ERROR})


class EventStatus(enum.Enum):
    """Whether the user it concerns has seen the event."""

    UNREAD = "unread"
    READ = "read"

    @classmethod
    def parse(cls, value: object) -> EventStatus:
        if isinstance(value, EventStatus):
            return value
        if isinstance(value, str) and value.strip().lower() in ("unread", "read"):
            return cls(value.strip().lower())
        raise EventError("status", f"{value!r} is not 'unread' or 'read'")


@dataclass(frozen=True, slots=True)
class Event:
    """One structured event; immutable. Build it with ``Event.builder()``."""

    id: str
    operation_id: str
    acted_upon: str | None
    user_id: str | None
    system_id: str | None
    category: str
    action: str
    severity: Severity
    description: str
    metadata_json: str
    status: EventStatus
    created_at: float

    @staticmethod
    def builder() -> EventBuilder:
        """A fresh ``EventBuilder`` (see ``gravpy.events.builder``)."""
        from gravpy.events.builder import EventBuilder  # it imports this module

        return EventBuilder()

    @property
    def metadata(self) -> dict[str, Any]:
        """A copy of the metadata (the event itself never changes)."""
        value: dict[str, Any] = json.loads(self.metadata_json)
        return value

    def with_status(self, status: EventStatus | str) -> Event:
        """This event with another status (a new event; this one is unchanged)."""
        return replace(self, status=EventStatus.parse(status))

    def with_system(self, system_id: str) -> Event:
        """This event stamped with ``system_id`` if it names none yet."""
        if self.system_id is not None:
            return self
        return replace(self, system_id=check_uuid("system_id", system_id))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON- and msgpack-safe values; ``Event.from_dict`` reads them back."""
        return {
            "id": self.id,
            "operation_id": self.operation_id,
            "acted_upon": self.acted_upon,
            "user_id": self.user_id,
            "system_id": self.system_id,
            "category": self.category,
            "action": self.action,
            "severity": self.severity.value,
            "description": self.description,
            "metadata": self.metadata,
            "status": self.status.value,
            "created_at": self.created_at,
        }

    @classmethod
    def from_dict(cls, data: object) -> Event:
        """The event ``to_dict`` produced, checked by every rule; raises ``EventError``.

        Unknown keys are ignored (a newer node may send more); ``status`` defaults to unread.
        """
        if not isinstance(data, dict):
            raise EventError("event", f"expected a mapping, got {type(data).__name__}")
        for key in ("id", "operation_id", "category", "action", "severity", "created_at"):
            if key not in data:
                raise EventError(key, "missing")
        return cls.checked(
            id=data["id"],
            operation_id=data["operation_id"],
            acted_upon=data.get("acted_upon"),
            user_id=data.get("user_id"),
            system_id=data.get("system_id"),
            category=data["category"],
            action=data["action"],
            severity=data["severity"],
            description=data.get("description"),
            metadata=_or_empty(data.get("metadata")),
            status=data.get("status", "unread"),
            created_at=data["created_at"],
        )

    @classmethod
    def checked(
        cls,
        *,
        id: object,
        operation_id: object,
        acted_upon: object,
        user_id: object,
        system_id: object,
        category: object,
        action: object,
        severity: object,
        description: object,
        metadata: object,
        status: object,
        created_at: object,
    ) -> Event:
        """An event from raw values after every rule of the module docstring; ``EventError``."""
        sev = Severity.parse(severity)
        return cls(
            id=check_uuid("id", id),
            operation_id=check_uuid("operation_id", operation_id),
            acted_upon=_optional_uuid("acted_upon", acted_upon),
            user_id=_optional_uuid("user_id", user_id),
            system_id=_optional_uuid("system_id", system_id),
            category=check_name("category", category),
            action=check_name("action", action),
            severity=sev,
            description=_check_description(description),
            metadata_json=_check_metadata(metadata, sev),
            status=EventStatus.parse(status),
            created_at=_check_time(created_at),
        )


# -- the rules, one function each -----------------------------------------------------------------


def check_uuid(field: str, value: object) -> str:
    """``value`` (a ``uuid.UUID`` or a UUID string) in canonical form; raises ``EventError``."""
    if isinstance(value, uuidlib.UUID):
        return str(value)
    if isinstance(value, str) and len(value) <= 64:
        try:
            return str(uuidlib.UUID(value))
        except ValueError:
            pass
    raise EventError(field, f"{value!r} is not a UUID")


def _optional_uuid(field: str, value: object) -> str | None:
    return None if value is None else check_uuid(field, value)


def check_name(field: str, value: object) -> str:
    """``value`` if it is a snake_case name (category, action); raises ``EventError``."""
    if not isinstance(value, str) or not value:
        raise EventError(field, f"expected a snake_case name, got {value!r}")
    if len(value) > NAME_LIMIT or _SNAKE.fullmatch(value) is None:
        raise EventError(
            field, f"{value!r} is not snake_case (a-z, 0-9, '_'; at most {NAME_LIMIT})"
        )
    return value


def _check_description(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise EventError("description", "expected a non-empty string saying what happened")
    if len(value) > DESCRIPTION_LIMIT:
        raise EventError("description", f"{len(value)} characters, over {DESCRIPTION_LIMIT}")
    return check_unicode("description", value)


def check_unicode(field: str, value: str) -> str:
    """``value`` if UTF-8 encodes it (no lone surrogate, such as an undecodable file name from
    ``os.listdir``); raises ``EventError`` saying where the first one is."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        char = value[exc.start]
        raise EventError(
            field, f"a lone surrogate U+{ord(char):04X} at {exc.start} is not valid Unicode text"
        ) from None
    return value


def _or_empty(metadata: object) -> object:
    """Metadata from the wire: none (absent or null) is empty; anything else is checked as it
    is (an empty list is not a mapping)."""
    return {} if metadata is None else metadata


def _check_metadata(value: object, severity: Severity) -> str:
    """The metadata as canonical JSON, after the encoding, size, ``err`` and ``doc`` rules."""
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise EventError("metadata", f"expected a mapping with str keys, got {_kind(value)}")
    try:
        text = json.dumps(value, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
        msgpack.packb(value, use_bin_type=True)
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:  # (nested too deep)
        raise EventError("metadata", f"not JSON- and msgpack-encodable: {exc}") from None
    if len(text.encode()) > METADATA_LIMIT:
        raise EventError("metadata", f"{len(text.encode())} bytes as JSON, over {METADATA_LIMIT}")
    if severity.is_error and value.get("err") in (None, "", {}, []):
        raise EventError("metadata", f"a {severity.value} event needs metadata 'err'")
    if "doc" in value:
        _check_doc(value["doc"])
    return text


def _kind(value: object) -> str:
    """What ``value`` is, for an error: its type's name, or the first key that is not a str."""
    if isinstance(value, Mapping):
        key = next((k for k in value if not isinstance(k, str)), None)
        if key is not None:
            return f"the key {key!r}"
    return type(value).__name__


def _check_doc(doc: object) -> None:
    parts = urlsplit(doc) if isinstance(doc, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise EventError("metadata", f"'doc' must be an http(s) URL, got {doc!r}")


def _check_time(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise EventError("created_at", f"expected a Unix time in seconds, got {value!r}")
    if value < 0:
        raise EventError("created_at", f"{value!r} is before 1970")
    if value >= _TIME_LIMIT:
        raise EventError("created_at", f"{value!r} is after the year 9999")
    return float(value)
