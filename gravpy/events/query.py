"""``EventQuery``: which stored events to list, in what order, which page; and the ``Page`` answer.

Theory of operation. One frozen, validated value carries the filters from wherever they come from:
Python keywords (``EventStore.query(user=..., severity=...)``), HTTP query strings and gravctl
flags (``EventQuery.from_params``), or the mesh (``to_params``/``from_params``). A bad filter
raises ``EventError`` naming the parameter, so gravd answers 400 with that reason. ``where()``
turns the filters into one SQL condition with bound parameters; the store adds order and paging.

Filters combine with AND: ``user`` (a UUID), ``severity`` (one or several, any of them),
``category``, ``action``, ``status``, ``since`` (created at or after) and ``until`` (before), both
Unix seconds or ISO-8601, and ``search`` (a case-insensitive substring of the description, ASCII
case folding as SQLite's ``LIKE``). ``order`` is ``newest`` (default) or ``oldest``; ties keep the
order of storing. ``page`` counts from 1; ``page_size`` is 1 to ``MAX_PAGE_SIZE``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from gravpy.errors import UsageError
from gravpy.events.event import (
    Event,
    EventError,
    EventStatus,
    Severity,
    check_name,
    check_unicode,
    check_uuid,
)

__all__ = ["DEFAULT_PAGE_SIZE", "MAX_PAGE_SIZE", "ORDERS", "EventQuery", "Page"]

DEFAULT_PAGE_SIZE: Final = 50
MAX_PAGE_SIZE: Final = 1000
MAX_PAGE: Final = 1_000_000
ORDERS: Final = ("newest", "oldest")
_SEARCH_LIMIT: Final = 256
_PARAMS: Final = (
    "user",
    "severity",
    "category",
    "action",
    "status",
    "since",
    "until",
    "search",
    "order",
    "page",
    "page_size",
)


@dataclass(frozen=True, slots=True)
class EventQuery:
    """Filters, order and page of a store query; validated (``EventError``) on construction."""

    user: str | None = None
    severity: tuple[Severity, ...] = ()
    category: str | None = None
    action: str | None = None
    status: EventStatus | None = None
    since: float | None = None
    until: float | None = None
    search: str | None = None
    order: str = "newest"
    page: int = 1
    page_size: int = DEFAULT_PAGE_SIZE

    def __post_init__(self) -> None:
        put = object.__setattr__
        put(self, "user", None if self.user is None else check_uuid("user", self.user))
        put(self, "severity", _severities(self.severity))
        for name in ("category", "action"):
            value = getattr(self, name)
            put(self, name, None if value is None else check_name(name, value))
        put(self, "status", None if self.status is None else EventStatus.parse(self.status))
        put(self, "since", _time("since", self.since))
        put(self, "until", _time("until", self.until))
        put(self, "search", _search(self.search))
        if self.order not in ORDERS:
            raise EventError("order", f"{self.order!r} is not one of {', '.join(ORDERS)}")
        put(self, "page", _count("page", self.page, MAX_PAGE))
        put(self, "page_size", _count("page_size", self.page_size, MAX_PAGE_SIZE))

    @classmethod
    def from_arguments(cls, query: object, filters: Mapping[str, Any]) -> EventQuery:
        """The query a store's ``query(query=None, **filters)`` was given: ``query`` itself, or
        one made of ``filters`` (an unknown name raises ``EventError`` naming it); ``UsageError``
        for anything else, or for both."""
        if query is None:
            _check_names(filters)
            return cls(**filters)
        if not isinstance(query, EventQuery):
            raise UsageError(
                f"query must be an EventQuery (or give filter keywords), got {query!r}"
            )
        if filters:
            raise UsageError("pass an EventQuery or filter keywords, not both")
        return query

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> EventQuery:
        """A query from text or plain values (HTTP, CLI, the mesh); unknown names are refused."""
        if not isinstance(params, Mapping):
            raise EventError("query", f"expected a mapping of filters, got {type(params).__name__}")
        _check_names(params)
        values: dict[str, Any] = {k: v for k, v in params.items() if v not in (None, "")}
        for name in ("page", "page_size"):
            if isinstance(values.get(name), str):
                values[name] = _int_text(name, values[name])
        return cls(**values)

    def to_params(self) -> dict[str, Any]:
        """Plain values (msgpack- and JSON-safe) that ``from_params`` reads back."""
        return {
            "user": self.user,
            "severity": [s.value for s in self.severity],
            "category": self.category,
            "action": self.action,
            "status": None if self.status is None else self.status.value,
            "since": self.since,
            "until": self.until,
            "search": self.search,
            "order": self.order,
            "page": self.page,
            "page_size": self.page_size,
        }

    def matches(self, event: Event) -> bool:
        """True if ``event`` passes the filters, as ``where()`` has SQLite decide (a live event,
        checked without the store): ``search`` with SQLite ``LIKE``'s ASCII case folding."""
        return (
            self.user in (None, event.user_id)
            and (not self.severity or event.severity in self.severity)
            and self.category in (None, event.category)
            and self.action in (None, event.action)
            and self.status in (None, event.status)
            and (self.since is None or event.created_at >= self.since)
            and (self.until is None or event.created_at < self.until)
            and (
                self.search is None or _ascii_lower(self.search) in _ascii_lower(event.description)
            )
        )

    def where(self) -> tuple[str, list[Any]]:
        """The filters as one SQL condition (``"1"`` for none) and its bound parameters."""
        terms: list[str] = []
        args: list[Any] = []
        for column, value in (
            ("user_id", self.user),
            ("category", self.category),
            ("action", self.action),
            ("status", None if self.status is None else self.status.value),
        ):
            if value is not None:
                terms.append(f"{column} = ?")
                args.append(value)
        if self.severity:
            terms.append(f"severity IN ({', '.join('?' * len(self.severity))})")
            args.extend(s.value for s in self.severity)
        if self.since is not None:
            terms.append("created_at >= ?")
            args.append(self.since)
        if self.until is not None:
            terms.append("created_at < ?")
            args.append(self.until)
        if self.search is not None:
            terms.append("description LIKE ? ESCAPE '\\'")
            args.append("%" + _like_escape(self.search) + "%")
        return (" AND ".join(terms) or "1"), args


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a query's answer and the total number of events that match it."""

    events: list[Event]
    total: int
    page: int
    page_size: int

    def to_dict(self) -> dict[str, Any]:
        """``{"events": [...], "total": N, "page": P, "page_size": S}`` (the HTTP answer)."""
        return {
            "events": [e.to_dict() for e in self.events],
            "total": self.total,
            "page": self.page,
            "page_size": self.page_size,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Page:
        """Read ``to_dict`` output back (checking every event); raises ``EventError``."""
        events = data.get("events")
        if not isinstance(events, list):
            raise EventError("events", "expected a list")
        return cls(
            events=[Event.from_dict(e) for e in events],
            total=_count("total", data.get("total"), None, minimum=0),
            page=_count("page", data.get("page"), MAX_PAGE),
            page_size=_count("page_size", data.get("page_size"), MAX_PAGE_SIZE),
        )


def _check_names(params: Mapping[Any, Any]) -> None:
    unknown = sorted(str(name) for name in params if name not in _PARAMS)
    if unknown:
        raise EventError(unknown[0], f"unknown filter (known: {', '.join(_PARAMS)})")


def _severities(value: object) -> tuple[Severity, ...]:
    if value is None:
        return ()
    if isinstance(value, Severity):
        return (value,)
    if isinstance(value, str):
        items: Iterable[object] = [v for v in value.split(",") if v.strip()]
    elif isinstance(value, Iterable):
        items = value
    else:
        raise EventError("severity", f"expected severities, got {value!r}")
    return tuple(dict.fromkeys(Severity.parse(v) for v in items))


def _time(name: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return _iso(name, str(value))
    try:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise OverflowError
        seconds = float(value)
    except OverflowError:  # (an int past any float)
        seconds = math.nan
    if not math.isfinite(seconds):
        raise EventError(name, f"expected Unix seconds or an ISO-8601 time, got {value!r:.80}")
    return seconds


def _iso(name: str, text: str) -> float:
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise EventError(name, f"{text!r} is neither Unix seconds nor an ISO-8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _search(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > _SEARCH_LIMIT:
        raise EventError("search", f"expected text of at most {_SEARCH_LIMIT} characters")
    return check_unicode("search", value)


def _count(name: str, value: object, limit: int | None, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise EventError(name, f"expected a whole number >= {minimum}, got {value!r}")
    if limit is not None and value > limit:
        raise EventError(name, f"{value} is over the limit of {limit}")
    return value


def _int_text(name: str, text: str) -> int:
    digits = text.strip()  # (ASCII only: "²" is a digit to isdigit, and not to int)
    if not (digits.isascii() and digits.isdigit()) or len(text) > 12:
        raise EventError(name, f"expected a whole number, got {text!r}")
    return int(text)


_ASCII_LOWER: Final = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _ascii_lower(text: str) -> str:
    return text.translate(_ASCII_LOWER)


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
