"""``EventBroadcaster``: events pushed live to every subscriber of the user they concern, mesh-wide.

Theory of operation. Each user has a message type of their own, ``grav.events.user.<user uuid>``
(events for no user go on ``grav.events.system``). A subscription is a pod whose filter admits
only that type, so the mesh's interests do the routing: an event crosses once to each node where
that user has a live subscriber, and reaches no other user's. ``publish`` is a plain ``send``: it
never waits on a receiver, so a slow subscriber never slows the publisher.

Each subscription's queue is its pod's inbox, bounded by ``queue_limit`` with the
``drop_newest`` policy: when the reader falls behind, what does not fit is dropped and counted
(``Subscription.statistics().dropped``, and the broadcaster's totals). A message is decoded to an
``Event`` once per node, however many subscribers share it (events are immutable). A message on a
user type that is not a valid event is skipped and counted as ``undecodable``; so is a valid event
that arrived on another user's type than its own (anyone may send on ``grav.events.user.<A>``, so
the event's ``user_id`` must agree with the type: B's event never reaches A's subscribers).

``publish(..., persist=True)`` also stores the event: in the broadcaster's ``store`` if it has one
(gravd), else in the store of the gravd this app is attached to (``EventStore.remote``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

from gravpy.errors import UsageError
from gravpy.events.event import Event, EventError, check_uuid
from gravpy.message import Message
from gravpy.pod import Overflow, Pod
from gravpy.recent import RecentMap

if TYPE_CHECKING:
    from types import TracebackType

    from gravpy.grav import Grav

__all__ = [
    "ALL_PATTERN",
    "SYSTEM_TYPE",
    "USER_PREFIX",
    "EventBroadcastStatistics",
    "EventBroadcaster",
    "Subscription",
    "SubscriptionStatistics",
    "event_type",
]

_log = logging.getLogger("gravpy.events.broadcast")
USER_PREFIX: Final = "grav.events.user."
SYSTEM_TYPE: Final = "grav.events.system"
ALL_PATTERN: Final = "grav.events.>"
_DECODED_LIMIT: Final = 4096


def event_type(user_id: str | None) -> str:
    """The message type that carries the events of ``user_id`` (None: events for no user)."""
    return SYSTEM_TYPE if user_id is None else USER_PREFIX + check_uuid("user_id", user_id)


def _check_queue_limit(queue_limit: object) -> None:
    if isinstance(queue_limit, bool) or not isinstance(queue_limit, int) or queue_limit < 1:
        raise UsageError(f"queue_limit must be an int >= 1, got {queue_limit!r}")


class _Persister(Protocol):
    async def persist(self, event: Event) -> None: ...


@dataclass(frozen=True, slots=True)
class SubscriptionStatistics:
    """One subscription's counters."""

    received: int  # queued for the reader
    delivered: int  # handed to the reader as events
    dropped: int  # did not fit in the queue (the reader fell behind)
    undecodable: int  # not a valid event; skipped
    queued: int
    queue_limit: int


@dataclass(frozen=True, slots=True)
class EventBroadcastStatistics:
    """A broadcaster's totals, closed subscriptions included."""

    published: int
    subscriptions: int  # live now
    delivered: int
    dropped: int
    undecodable: int


class Subscription:
    """The live events of one user: ``async for event in subscription``; ``close()`` to stop.

    Also an async context manager that closes it. Iteration ends when it is closed.
    """

    def __init__(self, owner: EventBroadcaster, pod: Pod, pattern: str) -> None:
        self.pattern = pattern
        self._owner = owner
        self._pod = pod
        self._delivered = 0
        self._undecodable = 0

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        while True:
            msg = await self._pod.__anext__()
            event = self._owner.decode(msg)
            if event is not None:
                self._delivered += 1
                return event
            self._undecodable += 1

    @property
    def closed(self) -> bool:
        return self._pod.closed

    def close(self) -> None:
        """Stop receiving; what is still queued is dropped (counted by the pod as closed)."""
        if not self._pod.closed:
            self._pod.disconnect()
            self._owner.retire(self)

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def statistics(self) -> SubscriptionStatistics:
        s = self._pod.statistics()
        return SubscriptionStatistics(
            received=s.received,
            delivered=self._delivered,
            dropped=s.dropped_overflow,
            undecodable=self._undecodable,
            queued=s.inbox,
            queue_limit=s.inbox_limit,
        )


class EventBroadcaster:
    """Publish events to a user's live subscribers anywhere on the mesh; see the module docstring."""

    def __init__(
        self, grav: Grav, *, queue_limit: int = 1024, store: _Persister | None = None
    ) -> None:
        from gravpy.grav import Grav  # (gravpy.grav imports what imports this module)

        if not isinstance(grav, Grav):
            raise UsageError(f"an EventBroadcaster needs a Grav node, got {type(grav).__name__}")
        _check_queue_limit(queue_limit)
        if store is not None and not callable(getattr(store, "persist", None)):
            raise UsageError(
                f"store must be an event store (an EventStore, or anything with an async "
                f"persist(event)) or None, got {type(store).__name__}"
            )
        self.grav = grav
        self.queue_limit = queue_limit
        self._store = store
        self._sender: Pod | None = None
        self._live: set[Subscription] = set()
        self._decoded: RecentMap[str, Event | None] = RecentMap(_DECODED_LIMIT)
        self._published = 0
        self._retired = [0, 0, 0]  # delivered, dropped, undecodable

    async def publish(self, user_id: str | None, event: Event, persist: bool = False) -> None:
        """Send ``event`` to every live subscriber of ``user_id``; never waits on them.

        The event is stamped with ``user_id`` and this node as its system when it names neither;
        an event for another user raises ``EventError``. With ``persist`` it is stored first (a
        store failure raises ``EventStoreError`` and nothing is sent).
        """
        if not isinstance(event, Event):
            raise EventError("event", f"expected an Event, got {type(event).__name__}")
        if persist is not True and persist is not False:
            raise UsageError(f"persist must be True or False, got {persist!r}")
        user = None if user_id is None else check_uuid("user_id", user_id)
        if event.user_id is not None and event.user_id != user:
            raise EventError("user_id", f"the event is for user {event.user_id}, not {user}")
        if user is not None and event.user_id is None:
            event = Event.from_dict({**event.to_dict(), "user_id": user})
        event = event.with_system(self.grav.node_uuid)
        if persist:
            await self._persister().persist(event)
        if self._sender is None or self._sender.closed:
            self._sender = self.grav.connect()
        self._sender.send(Message.new(event_type(user), event.to_dict()))
        self._published += 1

    def subscribe(self, user_id: str | None, *, queue_limit: int | None = None) -> Subscription:
        """The live events of ``user_id`` from now on (queued from this call, not from iteration);
        None: the events for no user (what ``publish(None, ...)`` sends). A ``user_id`` that is
        not a UUID raises ``EventError``, a bad ``queue_limit`` ``UsageError``, both naming it."""
        return self._subscribe(event_type(user_id), queue_limit)

    def subscribe_all(self, *, queue_limit: int | None = None) -> Subscription:
        """Every user's events and those for no user (an operator's tail, not a user's inbox)."""
        return self._subscribe(ALL_PATTERN, queue_limit)

    def _subscribe(self, pattern: str, queue_limit: int | None) -> Subscription:
        if queue_limit is not None:
            _check_queue_limit(queue_limit)
        limit = self.queue_limit if queue_limit is None else queue_limit
        pod = self.grav.connect(inbox_limit=limit, overflow=Overflow.DROP_NEWEST)
        try:
            pod.filter_type(pattern)  # (PermissionDenied: this app may not receive them)
        except BaseException:
            pod.disconnect()
            raise
        pod.__aiter__()  # a receiver from now on: the mesh learns this user's type is wanted
        subscription = Subscription(self, pod, pattern)
        self._live.add(subscription)
        return subscription

    def decode(self, msg: Message) -> Event | None:
        """The event ``msg`` carries, decoded once per message (None if it is not one, or if it
        is the event of another user than the one whose type carried it)."""
        if msg.uuid in self._decoded:
            return self._decoded.get(msg.uuid)
        try:
            event: Event | None = Event.from_dict(msg.unmarshal_data())
        except Exception as exc:  # (anyone may publish on a user's type: nothing here may end
            # a subscriber's stream, whatever the message holds)
            _log.debug("undecodable event message %s on %s: %r", msg.uuid, msg.type, exc)
            event = None
        if event is not None and event_type(event.user_id) != msg.type:
            _log.debug("event %s of user %s came on %s", event.id, event.user_id, msg.type)
            event = None
        self._decoded[msg.uuid] = event
        return event

    def retire(self, subscription: Subscription) -> None:
        """Keep a closed subscription's counters in the totals (``Subscription.close`` calls it)."""
        if subscription in self._live:
            self._live.discard(subscription)
            s = subscription.statistics()
            self._retired[0] += s.delivered
            self._retired[1] += s.dropped
            self._retired[2] += s.undecodable

    def close(self) -> None:
        """Close every subscription and the sending pod."""
        for subscription in list(self._live):
            subscription.close()
        if self._sender is not None:
            self._sender.disconnect()
            self._sender = None
        close_store = getattr(self._store, "close_pod", None)
        if close_store is not None:
            close_store()

    def statistics(self) -> EventBroadcastStatistics:
        live = [s.statistics() for s in self._live]
        return EventBroadcastStatistics(
            published=self._published,
            subscriptions=len(live),
            delivered=self._retired[0] + sum(s.delivered for s in live),
            dropped=self._retired[1] + sum(s.dropped for s in live),
            undecodable=self._retired[2] + sum(s.undecodable for s in live),
        )

    def _persister(self) -> _Persister:
        if self._store is None:
            from gravpy.events.remote import RemoteEventStore

            self._store = RemoteEventStore(self.grav)
        return self._store
