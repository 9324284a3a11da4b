"""``EventBuilder``: the fluent way to make an ``Event`` (Meshery's ``events.NewEvent()...Build()``).

Each ``with_*``/``from_*`` call records one field and returns the builder; ``build()`` applies
every rule of ``gravpy.events.event`` and raises ``EventError`` naming the first field that breaks
one. ``with_metadata``, which copies its mapping, refuses anything else at the call. A builder
keeps one ``operation_id`` (new, unless given), so the events built from it tell one story; each
``build()`` makes a new ``id`` and ``created_at``.
"""

from __future__ import annotations

import time
import uuid as uuidlib
from collections.abc import Mapping
from typing import Any

from gravpy.events.event import Event, EventError, EventStatus, Severity

__all__ = ["EventBuilder"]


class EventBuilder:
    """Collects an event's fields; ``build()`` checks them and returns the frozen ``Event``."""

    __slots__ = (
        "_acted_upon",
        "_action",
        "_category",
        "_description",
        "_metadata",
        "_operation_id",
        "_severity",
        "_system_id",
        "_user_id",
    )

    def __init__(self) -> None:
        self._operation_id: object = uuidlib.uuid4()
        self._acted_upon: object = None
        self._user_id: object = None
        self._system_id: object = None
        self._category: object = None
        self._action: object = None
        self._severity: object = Severity.INFORMATIONAL
        self._description: object = None
        self._metadata: object = {}

    def acted_upon(self, resource_id: uuidlib.UUID | str) -> EventBuilder:
        """The UUID of the resource the event is about."""
        self._acted_upon = resource_id
        return self

    def from_user(self, user_id: uuidlib.UUID | str) -> EventBuilder:
        """The UUID of the user the event concerns (whose subscribers receive it)."""
        self._user_id = user_id
        return self

    def from_system(self, system_id: uuidlib.UUID | str) -> EventBuilder:
        """The UUID of the system that reports it (else the node that publishes or stores it)."""
        self._system_id = system_id
        return self

    def with_operation_id(self, operation_id: uuidlib.UUID | str) -> EventBuilder:
        """Tie the event to an operation other builders report on too."""
        self._operation_id = operation_id
        return self

    def with_category(self, category: str) -> EventBuilder:
        """What kind of thing it is about, in snake_case (``"connection"``)."""
        self._category = category
        return self

    def with_action(self, action: str) -> EventBuilder:
        """What was done, in snake_case (``"ping"``, ``"add_to_organization"``)."""
        self._action = action
        return self

    def with_severity(self, severity: Severity | str) -> EventBuilder:
        """How bad (default informational); ``error`` or worse needs metadata ``err``."""
        self._severity = severity
        return self

    def with_description(self, description: str) -> EventBuilder:
        """What happened, for a person to read."""
        self._description = description
        return self

    def with_metadata(self, metadata: Mapping[str, Any]) -> EventBuilder:
        """Anything else worth knowing: ``err`` for errors, ``doc`` for a link to the docs.

        Copied here; anything but a mapping (a list, None) is an ``EventError`` (``metadata``)
        at this call. Its keys and values are checked by ``build()``."""
        if not isinstance(metadata, Mapping):
            kind = type(metadata).__name__
            raise EventError("metadata", f"expected a mapping with str keys, got {kind}")
        self._metadata = dict(metadata)
        return self

    def build(self) -> Event:
        """The checked, frozen event; raises ``EventError`` naming the field at fault."""
        return Event.checked(
            id=uuidlib.uuid4(),
            operation_id=self._operation_id,
            acted_upon=self._acted_upon,
            user_id=self._user_id,
            system_id=self._system_id,
            category=self._category,
            action=self._action,
            severity=self._severity,
            description=self._description,
            metadata=self._metadata,
            status=EventStatus.UNREAD,
            created_at=time.time(),
        )
