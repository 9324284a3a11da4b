"""Structured events: a validated builder, a durable store, and a per-user broadcast on the mesh.

::

    ev = (Event.builder().from_user(uid).with_category("connection").with_action("ping")
          .with_severity(Severity.SUCCESS).with_description("reached the cluster").build())
    await EventBroadcaster(grav).publish(uid, ev, persist=True)

See ``docs/events.md``.
"""

from gravpy.events.broadcast import (
    EventBroadcaster,
    EventBroadcastStatistics,
    Subscription,
    SubscriptionStatistics,
    event_type,
)
from gravpy.events.builder import EventBuilder
from gravpy.events.event import Event, EventError, EventStatus, Severity
from gravpy.events.query import EventQuery, Page
from gravpy.events.remote import RemoteEventStore
from gravpy.events.store import EventStore, EventStoreError, EventStoreStatistics

__all__ = [
    "Event",
    "EventBroadcastStatistics",
    "EventBroadcaster",
    "EventBuilder",
    "EventError",
    "EventQuery",
    "EventStatus",
    "EventStore",
    "EventStoreError",
    "EventStoreStatistics",
    "Page",
    "RemoteEventStore",
    "Severity",
    "Subscription",
    "SubscriptionStatistics",
    "event_type",
]
